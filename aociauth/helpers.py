"""Credential-helper processes: ``docker-credential-NAME get``.

The protocol (docker/docker-credential-helpers): the server URL on standard
input, a JSON object ``{"ServerURL", "Username", "Secret"}`` on standard
output. ``Username == "<token>"`` means ``Secret`` is an identity (refresh)
token. A non-zero exit with the output ``credentials not found in native
keychain`` means there are no credentials, and so does an answer without both
a username and a secret: ``{"Username": "", "Secret": ""}`` (older
``docker-credential-pass`` answers an unknown server that way), or ``{}``
(containers/image's test helper), since a missing field reads as empty, as
Go's JSON decoding has it. ``list`` prints a JSON object of server URL to
username.

Bounded, unlike the original: the helper name must be a plain file name; the
run has a timeout, after which the helper's whole process group is killed;
standard output is capped at :data:`MAX_HELPER_OUTPUT` and parsed as exactly
one JSON object; errors carry the helper's standard error (trimmed), never its
standard output, which may hold the secret.

The process is driven with asyncio's subprocess protocol rather than
``asyncio.subprocess.Process``: it reports the helper's exit apart from the
closing of its pipes, which a grandchild may hold open long after the helper
has gone, and it lets the reading side be closed on such a grandchild.
``anyio`` provides the timeout and the shielded clean-up, which must run to
the end even when the caller is being cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import anyio

from aociauth import _trace
from aociauth._entry import ConfigEntry
from aociauth._redact import redact_text
from aociauth.errors import HelperError, HelperNotFoundError, HelperTimeoutError

__all__ = [
    "DEFAULT_HELPER_TIMEOUT",
    "MAX_HELPER_OUTPUT",
    "NOT_FOUND_MESSAGE",
    "TOKEN_USERNAME",
    "HelperLister",
    "HelperRunner",
    "erase_credentials",
    "exec_helper",
    "exec_helper_with_env",
    "list_helper_with_env",
    "store_credentials",
]

HelperRunner = Callable[[str, str], Awaitable[ConfigEntry]]
"""Runs a credential helper (Go: ``HelperRunner``).

Called with the helper name as the configuration spells it (without the
``docker-credential-`` prefix) and the server URL. Returns an empty
:class:`ConfigEntry` when the helper has no credentials; raises
:class:`~aociauth.HelperNotFoundError` when the helper does not exist.
"""

#: Seconds a helper may take by default. Helpers have been seen to hang on a
#: locked keychain (docker/docker-credential-helpers#355); interactive SSO
#: helpers need longer, or ``timeout=None``.
DEFAULT_HELPER_TIMEOUT = 60.0

#: Most bytes read from a helper's standard output. An answer is ~200 bytes.
MAX_HELPER_OUTPUT = 1024 * 1024

#: What helpers print (with a non-zero exit) for a server they have nothing for.
NOT_FOUND_MESSAGE = "credentials not found in native keychain"

#: The username that marks ``Secret`` as an identity token (docker/cli ``native_store.go``).
TOKEN_USERNAME = "<token>"  # noqa: S105 (a marker, not a password)

_PREFIX = "docker-credential-"
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Once the helper has exited, how long its pipes may stay open (held by a
# process it left behind) before that process group is killed.
_PIPE_GRACE = 1.0
# How long to wait for a killed helper to be reaped before closing its pipes anyway.
_REAP_BOUND = 5.0
_STDERR_KEEP_BYTES = 4096
_STDERR_SHOWN = 1024
# C0 controls and DEL: a credential holding one would break (or inject into)
# the header or form it is sent in.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def exec_helper(helper_name: str, server_url: str) -> ConfigEntry:
    """Ask ``docker-credential-<helper_name>`` for ``server_url`` (Go: ``ExecHelper``).

    Uses this process's environment and :data:`DEFAULT_HELPER_TIMEOUT`.
    Implements :data:`HelperRunner`.
    """
    return await exec_helper_with_env(None)(helper_name, server_url)


def exec_helper_with_env(
    env: Mapping[str, str] | None, *, timeout: float | None = DEFAULT_HELPER_TIMEOUT
) -> HelperRunner:
    """A :data:`HelperRunner` that runs helpers with ``env`` (Go: ``ExecHelperWithEnv``).

    With ``env`` None, helpers inherit this process's environment and are
    found on its ``PATH``. Otherwise ``env`` (copied now) is the helper's whole
    environment and the helper is found on ``env["PATH"]`` (``os.defpath``
    when it has none). ``timeout`` is in seconds; None lets a helper take as
    long as it likes (for helpers that wait for a person to log in).
    """
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be positive, or None")
    frozen = None if env is None else dict(env)

    async def run(helper_name: str, server_url: str) -> ConfigEntry:
        return await _run_helper(helper_name, server_url, frozen, timeout)

    return run


class _HelperProcess(asyncio.SubprocessProtocol):
    """Collects a helper's output and notes its exit and the closing of its pipes."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_overflow = False
        self.exited = False
        self._open_pipes = {1, 2}
        self._changed = asyncio.Event()

    @property
    def pipes_closed(self) -> bool:
        return not self._open_pipes

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            if len(self.stdout) + len(data) > MAX_HELPER_OUTPUT:
                self.stdout_overflow = True
                self._changed.set()
            elif not self.stdout_overflow:
                self.stdout += data
        elif fd == 2:
            self.stderr += data
            del self.stderr[:-_STDERR_KEEP_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        self._changed.set()

    def process_exited(self) -> None:
        self.exited = True
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()


async def _run_helper(
    name: str, server_url: str, env: dict[str, str] | None, time_limit: float | None
) -> ConfigEntry:
    with _trace.helper_run(name, bool(_VALID_NAME.fullmatch(name)), server_url) as traced:
        out = await _converse(name, "get", server_url, env, time_limit)
        if out is None:
            traced.found(ConfigEntry())  # it said "not found" (with a non-zero exit code)
            return ConfigEntry()
        traced.set({"process.exit.code": 0})  # only an exit code 0 gives an answer
        answer = _parse_answer(out)
        if isinstance(answer, str):
            _fail(name, server_url, answer)
        traced.found(answer)
        return answer


HelperLister = Callable[[str], Awaitable[dict[str, str]]]
"""Lists what a credential helper holds: its name in, ``{server URL: username}`` out."""


def list_helper_with_env(
    env: Mapping[str, str] | None, *, timeout: float | None = DEFAULT_HELPER_TIMEOUT
) -> HelperLister:
    """A :data:`HelperLister` that runs ``docker-credential-NAME list`` with ``env``.

    The protocol's ``list`` command (docker/docker-credential-helpers
    ``client.List``) prints a JSON object mapping server URL to username.
    ``aociauth get`` uses it to show which registries a ``credsStore`` holds
    credentials for. ``env`` and ``timeout`` are as for
    :func:`exec_helper_with_env`. The lister raises
    :class:`~aociauth.HelperNotFoundError` when the helper does not exist and
    :class:`~aociauth.HelperError` when it fails or answers something else.
    """
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be positive, or None")
    frozen = None if env is None else dict(env)

    async def run(helper_name: str) -> dict[str, str]:
        out = await _converse(helper_name, "list", "", frozen, timeout)
        if out is None:
            return {}
        try:
            data = json.loads(out.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            _fail(helper_name, "list", "standard output is not one JSON object of strings")
        return data

    return run


def _fail(
    name: str, about: str, message: str, cls: type[HelperError] = HelperError, **extra: Any
) -> NoReturn:
    raise cls(
        f"credential helper {_PREFIX}{_show(name)} for {about}: {message}",
        helper=name,
        registry=about,
        **extra,
    )


async def _converse(
    name: str, action: str, stdin_text: str, env: dict[str, str] | None, time_limit: float | None
) -> bytes | None:
    """Run ``docker-credential-NAME ACTION`` with ``stdin_text`` on its standard input.

    Returns its standard output, or None when it said it has no credentials
    (a non-zero exit with :data:`NOT_FOUND_MESSAGE`). ``stdin_text`` is the
    server URL for ``get``; messages name it (or the action) as what was asked.
    """
    about = stdin_text if action == "get" else action

    def fail(message: str, cls: type[HelperError] = HelperError, **extra: Any) -> NoReturn:
        _fail(name, about, message, cls, **extra)

    code, stdout, stderr_bytes = await _run_process(name, action, stdin_text, env, time_limit, fail)
    if code != 0:
        if NOT_FOUND_MESSAGE in (_text(stdout), _text(stderr_bytes)):
            return None
        stderr = _tidy(stderr_bytes)
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        fail(f"failed ({how})" + (f": {stderr}" if stderr else ""), stderr=stderr, exit_code=code)
    return stdout


async def _run_process(
    name: str,
    verb: str,
    stdin_text: str,
    env: dict[str, str] | None,
    time_limit: float | None,
    fail: Callable[..., NoReturn],
) -> tuple[int | None, bytes, bytes]:
    """Run ``docker-credential-NAME VERB`` with ``stdin_text`` on its standard input,
    bounded in time and output, its process group killed and reaped whatever happens.

    Returns the exit code, standard output and standard error. ``fail`` raises the
    caller's error for a refused name, a helper not found or not runnable, no answer
    within ``time_limit`` seconds, and too much output.
    """
    if not _VALID_NAME.fullmatch(name):
        # The name comes from a configuration file; a "/" or a leading "-"
        # would make it a path or an option rather than a helper on PATH.
        fail("refused: a helper name may only hold letters, digits, '.', '_' and '-'")
    executable = _find(_PREFIX + name, (os.environ if env is None else env).get("PATH", os.defpath))
    if executable is None:
        fail("not found on PATH", HelperNotFoundError)
    loop = asyncio.get_running_loop()
    try:
        transport, proc = await loop.subprocess_exec(
            _HelperProcess,
            executable,
            verb,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        # Found on PATH but not runnable (a missing interpreter, a bad format):
        # an error, not "not found", so a fallback store does not hide it.
        fail(f"cannot run it: {exc.strerror or type(exc).__name__}")
    timed_out = False
    try:
        stdin = transport.get_pipe_transport(0)
        if isinstance(stdin, asyncio.WriteTransport):
            stdin.write(stdin_text.encode("utf-8", "surrogateescape"))
            stdin.close()
        with anyio.move_on_after(time_limit) as deadline:
            await proc.until(lambda: proc.exited or proc.stdout_overflow)
        timed_out = deadline.cancelled_caught
        if not timed_out:
            with anyio.move_on_after(_PIPE_GRACE):
                await proc.until(lambda: proc.pipes_closed or proc.stdout_overflow)
    finally:
        with anyio.CancelScope(shield=True):
            await _dispose(transport, proc)
    if timed_out:
        fail(
            f"no answer within {time_limit:g} s; its process group was killed",
            HelperTimeoutError,
            stderr=_tidy(bytes(proc.stderr)),
        )
    if proc.stdout_overflow:
        fail(
            f"more than {MAX_HELPER_OUTPUT} bytes on standard output",
            stderr=_tidy(bytes(proc.stderr)),
        )
    return transport.get_returncode(), bytes(proc.stdout), bytes(proc.stderr)


async def _dispose(transport: asyncio.SubprocessTransport, proc: _HelperProcess) -> None:
    """Kill what is left of the helper, reap it, and close our ends of its pipes."""
    if not (proc.exited and proc.pipes_closed and not proc.stdout_overflow):
        # The helper is running, or left a process holding its pipes: kill
        # its process group (its own, from start_new_session), grandchildren too.
        _kill_group(transport.get_pid())
    with anyio.move_on_after(_REAP_BOUND):
        await proc.until(lambda: proc.exited)
    transport.close()


def _find(program: str, search_path: str) -> str | None:
    """The absolute path of ``program`` on ``search_path``.

    Synchronous: a stat() per PATH entry, local and no slower than the
    search ``execvp`` itself would make.
    """
    found = shutil.which(program, path=search_path)
    return None if found is None else os.path.abspath(found)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _parse_answer(stdout: bytes) -> ConfigEntry | str:
    """The credentials in a helper's answer, or what is wrong with it (never its text).

    A missing (or null) ``Username`` or ``Secret`` reads as empty, as Go's
    JSON decoding into docker-credential-helpers' ``Credentials`` reads it:
    containers/image's own test helper answers ``{}`` for a server it does
    not know. An answer without both a username and a secret is no
    credentials. Not JSON, or a field that is not a string, is an error.
    """
    problem = "standard output is not one JSON object"
    try:
        data = json.loads(stdout.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return problem
    if not isinstance(data, dict):
        return problem
    fields = {}
    for name in ("Username", "Secret"):
        value = data.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            return f"the answer's {name} is not a string"
        if _CONTROL.search(value):
            return f"the answer's {name} holds a control character"
        fields[name] = value
    username, secret = fields["Username"], fields["Secret"]
    if not username or not secret:
        return ConfigEntry()
    if username == TOKEN_USERNAME:
        return ConfigEntry(refresh_token=secret)
    return ConfigEntry(username=username, password=secret)


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON, though Python's parser accepts them.
    raise ValueError(name)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def _tidy(stderr: bytes) -> str:
    """The end of a helper's standard error, as one line of printable text.

    Scrubbed like any foreign text: a helper in front of a vault may print the URL it
    called, userinfo and signed query included.
    """
    text = stderr.decode("utf-8", "replace")[-_STDERR_SHOWN:]
    kept = "".join(c if c.isprintable() else " " if c in "\t\n\r" else "" for c in text)
    return redact_text(" ".join(kept.split()))


def _show(name: str) -> str:
    """A helper name fit for a message, however odd the configuration's one is."""
    return name if _VALID_NAME.fullmatch(name) else repr(name[:64])


# -- store and erase: what `aociauth login` and `logout` run -----------------------


async def store_credentials(
    helper_name: str,
    server_url: str,
    username: str,
    secret: str,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: float | None = DEFAULT_HELPER_TIMEOUT,
) -> None:
    """Store credentials with ``docker-credential-<helper_name> store``.

    The helper protocol's ``store`` verb: ``{"ServerURL", "Username",
    "Secret"}`` as JSON on standard input. ``env`` and ``time_limit`` (seconds,
    or None) are as ``env`` and ``timeout`` of :func:`exec_helper_with_env`.
    Raises :class:`~aociauth.HelperError` (or its not-found and timeout kinds)
    when the helper fails; the message never holds the secret.
    """
    payload = json.dumps({"ServerURL": server_url, "Username": username, "Secret": secret})
    code, _, stderr = await _run_verb(helper_name, "store", payload, server_url, env, time_limit)
    if code != 0:
        _verb_failed(helper_name, "store", server_url, code, stderr)


async def erase_credentials(
    helper_name: str,
    server_url: str,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: float | None = DEFAULT_HELPER_TIMEOUT,
) -> bool:
    """Erase credentials with ``docker-credential-<helper_name> erase`` (the URL on stdin).

    Returns False when the helper had none for ``server_url`` (it answers
    :data:`NOT_FOUND_MESSAGE`), True when it erased them. Raises
    :class:`~aociauth.HelperError` when the helper fails.
    """
    code, stdout, stderr = await _run_verb(
        helper_name, "erase", server_url, server_url, env, time_limit
    )
    if code == 0:
        return True
    if NOT_FOUND_MESSAGE in (stdout, stderr):
        return False
    _verb_failed(helper_name, "erase", server_url, code, stderr)


def _verb_failed(name: str, verb: str, server_url: str, code: int | None, stderr: str) -> NoReturn:
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    raise HelperError(
        f"credential helper {_PREFIX}{_show(name)} {verb} for {server_url}: failed ({how})"
        + (f": {stderr}" if stderr else ""),
        helper=name,
        registry=server_url,
        stderr=stderr,
        exit_code=code,
    )


async def _run_verb(
    name: str,
    verb: str,
    stdin_text: str,
    server_url: str,
    env: Mapping[str, str] | None,
    time_limit: float | None,
) -> tuple[int | None, str, str]:
    """Run ``docker-credential-<name> <verb>`` bounded as ``get`` is.

    Returns the exit code, standard output (for the not-found message only:
    it is never put in an error) and the tidied standard error.
    """

    def fail(message: str, cls: type[HelperError] = HelperError, **extra: Any) -> NoReturn:
        raise cls(
            f"credential helper {_PREFIX}{_show(name)} {verb} for {server_url}: {message}",
            helper=name,
            registry=server_url,
            **extra,
        )

    if time_limit is not None and not time_limit > 0:
        raise ValueError("timeout must be positive, or None")
    frozen = None if env is None else dict(env)
    code, stdout, stderr = await _run_process(name, verb, stdin_text, frozen, time_limit, fail)
    return code, _text(stdout), _tidy(stderr)
