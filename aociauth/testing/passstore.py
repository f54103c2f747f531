"""A throw-away password store for the real ``docker-credential-pass``.

``docker-credential-pass`` (Debian's golang-docker-credential-helpers) keeps
credentials in ``pass``, which encrypts them with GnuPG. :class:`PassStore`
makes a GnuPG home with a passphrase-less key and a password store under a
directory of the test's own, stores credentials with the helper's own
``store`` command, and writes Docker configs that use it, so a test reads
them back exactly as a user's ``docker login`` with ``"credsStore": "pass"``
would leave them::

    if missing_binaries():
        pytest.skip(f"needs {', '.join(missing_binaries())}")
    with PassStore.initialised(tmp_path) as store:
        store.store("reg.example.test", "alice", "s3cret")
        config = store.config("docker", {"credsStore": "pass"})

Nothing touches the user's own GnuPG home or password store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from aociauth.config import ConfigFile, load_with_env
from aociauth.errors import OCIAuthError

__all__ = ["REQUIRED", "PassStore", "PassStoreError", "missing_binaries"]

REQUIRED = ("docker-credential-pass", "pass", "gpg", "gpgconf")
"""The programs a :class:`PassStore` runs."""

_COMMAND_TIMEOUT = 120


class PassStoreError(OCIAuthError):
    """A command setting up or filling the store failed; the message has its stderr."""


def missing_binaries() -> list[str]:
    """Those of :data:`REQUIRED` not on ``PATH`` (Debian: golang-docker-credential-helpers,
    pass, gnupg)."""
    return [name for name in REQUIRED if shutil.which(name) is None]


class PassStore:
    """A GnuPG home and a password store under ``root``, which docker-credential-pass uses.

    :attr:`env` is the environment every command runs with (``HOME``,
    ``GNUPGHOME``, ``PASSWORD_STORE_DIR`` under ``root``, and this process's
    ``PATH``): give it to whatever runs the helper.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        gnupg = root / "gnupg"
        gnupg.mkdir(mode=0o700)
        (root / "home").mkdir()
        self.env: dict[str, str] = {
            "HOME": str(root / "home"),
            "GNUPGHOME": str(gnupg),
            "PASSWORD_STORE_DIR": str(root / "store"),
            "PATH": os.environ.get("PATH", os.defpath),
        }

    @classmethod
    @contextlib.contextmanager
    def initialised(cls, root: Path) -> Iterator[PassStore]:
        """A store under ``root``, its key made and ``pass`` initialised; its agent ended after."""
        store = cls(root)
        try:
            store.initialise()
            yield store
        finally:
            store.close()

    def run(self, *argv: str, stdin: str = "") -> str:
        """Run ``argv`` with :attr:`env`; its stdout, or :class:`PassStoreError`."""
        done = subprocess.run(
            argv,
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=_COMMAND_TIMEOUT,
        )
        if done.returncode != 0:
            raise PassStoreError(f"{argv[0]} failed: {done.stderr}")
        return done.stdout

    def initialise(self) -> None:
        """Make a passphrase-less GnuPG key and initialise ``pass`` with it."""
        self.run(
            "gpg",
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "aociauth test <test@example.invalid>",
            "default",
            "default",
            "never",
        )
        listing = self.run("gpg", "--batch", "--with-colons", "--list-secret-keys")
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.run("pass", "init", fingerprint)

    def store(self, server_url: str, username: str, secret: str) -> None:
        """Store a credential with ``docker-credential-pass store``, as ``docker login`` does."""
        credential = {"ServerURL": server_url, "Username": username, "Secret": secret}
        self.run("docker-credential-pass", "store", stdin=json.dumps(credential))

    def config(self, name: str, document: Mapping[str, object], **env: str) -> ConfigFile:
        """Write ``document`` as ``root/name/config.json`` and load it as the helper would be run.

        ``load_with_env`` reads it with :attr:`env`, ``DOCKER_CONFIG`` pointing
        at it, and ``env`` on top.
        """
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps(dict(document)))
        return load_with_env(env={**self.env, "DOCKER_CONFIG": str(directory), **env})

    def close(self) -> None:
        """End the GnuPG agent the store started (it would outlive the test otherwise)."""
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=_COMMAND_TIMEOUT,
        )
