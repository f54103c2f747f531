"""ConfigEntry: the credentials for one registry, a pure value.

Its own module because three layers share it and none of them should import
another for it: the configuration sources (:mod:`aociauth.config`, which
names it in its API), the credential-helper processes
(:mod:`aociauth.helpers`, whose runners answer one) and the I/O-free core.
``aociauth.ConfigEntry`` and ``aociauth.config.ConfigEntry`` are this class.
"""

from __future__ import annotations

from dataclasses import dataclass

from aociauth._redact import mask

__all__ = ["ConfigEntry"]


@dataclass(frozen=True, repr=False)
class ConfigEntry:
    """The credentials for one registry (Go: ``ConfigEntry``).

    Any field may be empty; all empty means no credentials. ``refresh_token``
    is an OAuth2 refresh token (``identitytoken`` in ``config.json``, or a
    helper's answer for user ``<token>``); ``access_token`` is a bearer token
    sent to the registry as is (``registrytoken``); ``username`` and
    ``password`` are for Basic authentication and token requests.

    Entries are hashable and compare by value, so they can name a credential
    identity. ``repr`` (and ``str``) show the username and which secret fields
    are set, never a secret.
    """

    refresh_token: str = ""
    access_token: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:
        shown = [f"username={self.username!r}"] if self.username else []
        shown += [
            f"{name}={mask(secret)}"
            for name, secret in (
                ("password", self.password),
                ("refresh_token", self.refresh_token),
                ("access_token", self.access_token),
            )
            if secret
        ]
        return f"ConfigEntry({', '.join(shown)})"
