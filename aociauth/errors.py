"""The exception hierarchy.

Every exception aociauth raises on purpose derives from :class:`OCIAuthError`.
Failures met while authorising a request made through the middleware also
derive from :class:`aiohttp.ClientError`, so code that already catches aiohttp
errors keeps working. Messages name the registry, the source or the step that
failed and never contain a secret.
"""

from __future__ import annotations

import aiohttp

__all__ = [
    "AuthRequestError",
    "BodyNotReplayableError",
    "ChallengeError",
    "ChallengeParseError",
    "ConfigError",
    "CredentialLookupError",
    "HelperError",
    "HelperNotFoundError",
    "HelperTimeoutError",
    "LoginRefusedError",
    "NoAuthError",
    "OCIAuthError",
    "RealmPolicyError",
    "TokenResponseError",
    "TokenServerError",
]


class OCIAuthError(Exception):
    """Base of every error aociauth raises on purpose.

    ``registry`` names the registry host the error concerns (when known) and
    ``step`` the part of the flow that failed (``"config"``, ``"helper"``,
    ``"token"``, ...). Neither ever holds a secret.
    """

    def __init__(self, message: str, *, registry: str | None = None, step: str | None = None):
        super().__init__(message)
        self.message = message
        self.registry = registry
        self.step = step

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(OCIAuthError):
    """A configuration source is unreadable or invalid, or an entry in it is.

    Raised by :func:`aociauth.load` for a file that cannot be read or is not
    JSON, and by lookups for an entry that cannot be used (bad base64,
    ambiguous entry, several URL keys for one host).
    """


class HelperError(ConfigError):
    """A credential helper failed.

    The message names the helper and the registry and carries the helper's
    standard error (trimmed), never its standard output.
    """

    def __init__(
        self,
        message: str,
        *,
        helper: str | None = None,
        registry: str | None = None,
        stderr: str = "",
        exit_code: int | None = None,
    ):
        super().__init__(message, registry=registry, step="helper")
        self.helper = helper
        self.stderr = stderr
        self.exit_code = exit_code


class HelperNotFoundError(HelperError):
    """The helper ``docker-credential-NAME`` is not on PATH (Go: ``ErrHelperNotFound``)."""


class HelperTimeoutError(HelperError):
    """A credential helper ran past its timeout; its whole process group was killed."""


class LoginRefusedError(OCIAuthError):
    """A registry or its token server refused the credentials ``aociauth login`` checked.

    Nothing is stored when it is raised.
    """


class NoAuthError(OCIAuthError):
    """No authorization token is available to add to the request (Go: ``ErrNoAuth``)."""


class ChallengeParseError(OCIAuthError):
    """A ``WWW-Authenticate`` header value could not be parsed.

    The challenge parser raises nothing else, whatever its input.
    """


class AuthRequestError(OCIAuthError, aiohttp.ClientError):
    """Authorising a request made through the middleware failed.

    Also an :class:`aiohttp.ClientError`. ``status`` holds the HTTP status of
    the response that caused the failure, where there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        step: str | None = None,
        status: int | None = None,
    ):
        super().__init__(message, registry=registry, step=step)
        self.status = status


class CredentialLookupError(AuthRequestError):
    """The configuration could not say which credentials a registry takes.

    The underlying :class:`ConfigError` (or helper error) is the ``__cause__``.
    """


class ChallengeError(AuthRequestError):
    """A registry's challenge cannot be acted on (for example a Bearer challenge with no realm)."""


class RealmPolicyError(AuthRequestError):
    """The realm policy refused to send a token request (or credentials) to a realm."""


class TokenServerError(AuthRequestError):
    """The token server refused the request, failed, or could not be reached.

    ``status`` is the token server's HTTP status where it answered. Where it
    answered, the error also says as whom it was asked (never a secret):
    ``anonymous`` when no credentials went with the request,
    ``credentials_found`` when the configuration had some for the registry,
    ``username`` theirs ("" when none), and ``credential_source`` where they
    came from (a config file and key, or a credential helper), or, when none
    were found, where the lookup looked ("" when unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        step: str | None = None,
        status: int | None = None,
        username: str = "",
        credential_source: str = "",
        anonymous: bool = False,
        credentials_found: bool = False,
    ):
        super().__init__(message, registry=registry, step=step, status=status)
        self.username = username
        self.credential_source = credential_source
        self.anonymous = anonymous
        self.credentials_found = credentials_found


class TokenResponseError(TokenServerError):
    """The token server answered, but not with a usable token (not JSON, no token, bad token)."""


class BodyNotReplayableError(AuthRequestError):
    """A request was answered 401 and its body cannot be sent again.

    Streaming bodies (async generators, pipes) are consumed by the first send.
    Authorise first, with a request that has no body (or with
    :func:`aociauth.with_scope` and a preceding request), then stream.
    """
