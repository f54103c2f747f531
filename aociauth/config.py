"""Registry credentials from the user's Docker configuration.

:func:`load` reads what ``docker login`` (and podman) left behind, in this
order, an earlier source winning per registry key:

1. ``$DOCKER_AUTH_CONFIG``: the configuration itself, as inline JSON;
2. ``$DOCKER_CONFIG/config.json``, or ``$HOME/.docker/config.json`` when
   ``DOCKER_CONFIG`` is unset (``DOCKER_CONFIG`` replaces ``~/.docker``, as in
   the Docker CLI);
3. ``$XDG_RUNTIME_DIR/containers/auth.json`` (podman, skopeo, buildah).

``auths`` and ``credHelpers`` merge per key; ``credsStore`` is the first
non-empty one. For a registry host the lookup order is ``credHelpers[host]``
(an explicit helper: its failure is an error), then ``credsStore`` (a
fallback helper: when it is not installed, ``auths`` is used), then
``auths``. A helper's answer is used as it is. An ``auths`` key holding a URL
(``https://host/v1/``) also answers for its host, unless the host has a key
of its own; several such keys for one host make its lookups fail.

Beyond the Go original:

* Docker Hub is known by three names (``docker.io``, ``index.docker.io``,
  ``registry-1.docker.io``); each of them finds the entry ``docker login``
  writes (``https://index.docker.io/v1/``), and helpers are asked for that
  URL, as the Docker CLI asks them.
* An ``auths`` entry that cannot be used (bad base64, a field that is not a
  string, ``identitytoken`` together with a username) fails lookups of its
  own host only; the rest of the file keeps working. Invalid JSON still fails
  the load.
* ``auths`` keys that carry a path (``quay.io/team``, no scheme, no trailing
  ``/``) hold credentials for the repositories under that path
  (containers/image's per-namespace keys). They come first, before the host's
  helpers, longest path first; helpers know hosts only.
* Among Docker Hub's keys, an earlier source wins; within one source, the
  name asked for, then ``https://index.docker.io/v1/``, then the other names.
* Files are read with a size limit (:data:`MAX_CONFIG_SIZE`), and only when
  they are regular files.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import functools
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, runtime_checkable

from aociauth.errors import ConfigError, HelperError, HelperNotFoundError, OCIAuthError

if TYPE_CHECKING:
    from aociauth.helpers import HelperRunner

__all__ = [
    "DOCKER_HUB_HOSTS",
    "DOCKER_HUB_SERVER_URL",
    "MAX_CONFIG_SIZE",
    "Config",
    "ConfigEntry",
    "ConfigFile",
    "Resolution",
    "load",
    "load_with_env",
]

#: Largest configuration file (or ``DOCKER_AUTH_CONFIG`` value) read, in bytes.
#: Real ones are a few KiB; the limit keeps a wrong path (a log, a disk image)
#: from being read into memory whole.
MAX_CONFIG_SIZE = 16 * 1024 * 1024

#: The key ``docker login`` stores Docker Hub credentials under, and the server
#: URL credential helpers are asked for (docker/cli ``registry.IndexServer``).
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"

#: The names Docker Hub is known by. They all share one credential.
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# The order in which Docker Hub's other names are tried when the name asked
# for has no entry of its own: docker login's key first.
_HUB_ROOT_KEYS = (
    DOCKER_HUB_SERVER_URL,
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    # Written by old Docker versions, without a scheme: Hub's root, not a namespace.
    "index.docker.io/v1/",
    "index.docker.io/v1",
)
_HUB_HOST_ORDER = ("docker.io", "index.docker.io", "registry-1.docker.io")

_DOCKER_AUTH_CONFIG = "DOCKER_AUTH_CONFIG"
_AUTH_FIELDS = ("username", "password", "auth", "identitytoken", "registrytoken")
_SHOWN_KEY_LENGTH = 256


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
            f"{name}=<set>"
            for name in ("password", "refresh_token", "access_token")
            if getattr(self, name)
        ]
        return f"ConfigEntry({', '.join(shown)})"


@runtime_checkable
class Config(Protocol):
    """Where the middleware gets credentials from (Go: ``Config``).

    Implement it to supply credentials from elsewhere (a vault, a test).
    It may be called concurrently.
    """

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        """The credentials for registry ``host`` (``host[:port]``).

        Return an empty :class:`ConfigEntry` when there are none; raise an
        :class:`~aociauth.OCIAuthError` when they cannot be determined.
        """
        ...


@dataclass(frozen=True)
class Resolution:
    """Which credentials a lookup found, and where they came from.

    ``source`` is the file path (or ``"DOCKER_AUTH_CONFIG"``) of the winning
    entry, ``key`` the ``auths`` or ``credHelpers`` key matched, ``helper`` the
    name of the helper that answered, and ``kind`` the kind of answer:
    ``"auths"``, ``"credHelpers"`` (an explicit helper), ``"credsStore"`` (the
    fallback helper) or ``"none"``. Safe to print: the entry hides its secrets.
    """

    entry: ConfigEntry
    source: str | None = None
    key: str | None = None
    helper: str | None = None
    kind: Literal["auths", "credHelpers", "credsStore", "none"] = "none"


@dataclass(frozen=True)
class _Auth:
    """One ``auths`` entry, decoded at load time, or why it cannot be used."""

    key: str
    source: str
    entry: ConfigEntry
    problem: str | None = None

    @property
    def is_marker(self) -> bool:
        """``{}``: docker login's note that the credential is in a helper."""
        return self.problem is None and self.entry == ConfigEntry()


@dataclass(frozen=True)
class _Slot:
    """What one lookup name answers with.

    A slot is either an explicit key, or a host derived from URL keys
    (``https://host/v1/``); ``derived_from`` lists those keys, sorted, and more
    than one of them makes the host ambiguous, as in the original.
    """

    auth: _Auth
    order: int
    derived_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class _HelperRef:
    """One ``credHelpers`` value (or ``credsStore``), with where it came from."""

    key: str
    source: str
    order: int
    name: str
    problem: str | None = None


@dataclass(frozen=True)
class _Document:
    """The auth part of one configuration source."""

    source: str
    auths: dict[str, _Auth]
    cred_helpers: dict[str, _HelperRef]
    creds_store: str


class ConfigFile:
    """Credentials read from Docker configuration files (Go: ``ConfigFile``).

    Build one with :func:`load`, :func:`load_with_env` or :meth:`from_dict`;
    ``ConfigFile()`` holds no credentials. Implements :class:`Config`.

    Lookups are async because a credential helper may have to run. Concurrent
    lookups that need the same helper answer share one helper process; once it
    has answered, the next lookup runs it again (remembering answers is the
    middleware's job).
    """

    def __init__(self, *, runner: HelperRunner | None = None) -> None:
        self._runner = runner
        self._slots: dict[str, _Slot] = {}
        self._helpers: dict[str, _HelperRef] = {}
        self._store: _HelperRef | None = None
        self._sources: tuple[str, ...] = ()
        self._inflight: dict[
            tuple[asyncio.AbstractEventLoop, str, str], asyncio.Future[ConfigEntry]
        ] = {}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        runner: HelperRunner | None = None,
        source: str = "<dict>",
    ) -> ConfigFile:
        """A configuration from an already parsed ``config.json`` document.

        ``source`` names it in errors and in :attr:`Resolution.source`. Raises
        :class:`~aociauth.ConfigError` when the document's shape is wrong
        (``auths`` not an object, ...); a bad entry only fails its own lookups.
        """
        config = cls(runner=runner)
        config._add(_parse_document(data, source))
        return config

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources read, in precedence order: file paths, or ``DOCKER_AUTH_CONFIG``."""
        return self._sources

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        """The credentials for registry ``host`` (``host[:port]``), empty when there are none.

        Raises :class:`~aociauth.ConfigError` for an entry that cannot be
        used, and :class:`~aociauth.HelperError` (or a subclass) when a
        helper fails.
        """
        return (await self.resolve(host)).entry

    async def entry_for_repository(self, host: str, repository: str) -> ConfigEntry:
        """The credentials for ``repository`` on registry ``host``.

        Like :meth:`entry_for_registry`, but an ``auths`` key with a path
        (``quay.io/team``) covering the repository wins, the longest first. A
        key matches whole path segments only: ``quay.io/team`` covers
        ``team`` and ``team/app``, not ``teamx/app``.
        """
        return (await self.resolve(host, repository)).entry

    def namespaces(self, host: str) -> tuple[str, ...]:
        """The repository paths of ``host`` that have ``auths`` entries of their own, longest first.

        Lets a caller share one lookup (and one token cache) between the
        repositories a namespace key covers.
        """
        found: set[str] = set()
        for prefix in _hosts_for(host):
            for name, slot in self._slots.items():
                path = name[len(prefix) + 1 :]
                if (
                    name.startswith(prefix + "/")
                    and all(path.split("/"))
                    and name not in _HUB_ROOT_KEYS
                    and not slot.auth.is_marker
                ):
                    found.add(path)
        return tuple(sorted(found, key=lambda p: (-p.count("/"), p)))

    async def resolve(self, host: str, repository: str = "") -> Resolution:
        """Look up ``repository`` on ``host`` and say where the answer came from.

        The order: an ``auths`` key for a namespace covering the repository;
        ``credHelpers[host]``; ``credsStore``; the ``auths`` entry for the
        host. :meth:`entry_for_repository` is ``resolve(...).entry``.
        """
        found = self._namespace_slot(host, repository.strip("/"))
        if found is not None:
            return _from_slot(*found)
        helper = self._explicit_helper(host)
        if helper is not None:
            if helper.problem is not None:
                raise ConfigError(helper.problem, registry=host, step="config")
            if helper.name:
                entry = await self._run_helper(helper.name, host)
                return Resolution(entry, helper.source, helper.key, helper.name, "credHelpers")
        elif self._store is not None:
            store = self._store
            try:
                entry = await self._run_helper(store.name, host)
            except HelperNotFoundError:
                # A default store set up without its helper installed is common
                # (cue-lang/cue#2934): fall back to the auths entries.
                pass
            else:
                return Resolution(entry, store.source, None, store.name, "credsStore")
        found = self._host_slot(host)
        if found is None:
            return Resolution(ConfigEntry())
        return _from_slot(*found)

    # -- building ------------------------------------------------------------

    def _add(self, doc: _Document) -> None:
        """Merge a source of lower precedence than those already added."""
        order = len(self._sources)
        self._sources += (doc.source,)
        for name, slot in _slots_of(doc, order).items():
            self._slots.setdefault(name, slot)
        for key, ref in doc.cred_helpers.items():
            self._helpers.setdefault(
                key, _HelperRef(ref.key, ref.source, order, ref.name, ref.problem)
            )
        if doc.creds_store and self._store is None:
            self._store = _HelperRef("credsStore", doc.source, order, doc.creds_store)

    # -- lookup --------------------------------------------------------------

    def _namespace_slot(self, host: str, repository: str) -> tuple[str, str, _Slot] | None:
        segments = repository.split("/") if repository else []
        for n in range(len(segments), 0, -1):
            path = "/".join(segments[:n])
            names = [f"{h}/{path}" for h in _hosts_for(host)]
            found = self._best(host, [name for name in names if name not in _HUB_ROOT_KEYS])
            if found is not None and not found[2].auth.is_marker:
                return found
        return None

    def _host_slot(self, host: str) -> tuple[str, str, _Slot] | None:
        if host not in DOCKER_HUB_HOSTS:
            return self._best(host, [host])
        return self._best(host, [host, *_HUB_ROOT_KEYS])

    def _best(self, host: str, names: list[str]) -> tuple[str, str, _Slot] | None:
        """The slot among ``names`` from the earliest source; then explicit keys; then by rank."""
        ranked = [
            ((slot.order, bool(slot.derived_from), rank), name, slot)
            for rank, name in enumerate(names)
            if (slot := self._slots.get(name)) is not None
        ]
        if not ranked:
            return None
        _, name, slot = min(ranked, key=lambda r: r[0])
        return host, name, slot

    def _explicit_helper(self, host: str) -> _HelperRef | None:
        names = [host]
        if host in DOCKER_HUB_HOSTS:
            names += [DOCKER_HUB_SERVER_URL, *_HUB_HOST_ORDER]
        ranked = [
            ((ref.order, rank), ref)
            for rank, name in enumerate(names)
            if (ref := self._helpers.get(name)) is not None
        ]
        return min(ranked, key=lambda r: r[0])[1] if ranked else None

    async def _run_helper(self, helper: str, host: str) -> ConfigEntry:
        """Ask ``helper`` about ``host``, sharing a run already under way for the same question."""
        server_url = DOCKER_HUB_SERVER_URL if host in DOCKER_HUB_HOSTS else host
        loop = asyncio.get_running_loop()
        key = (loop, helper, server_url)
        run = self._inflight.get(key)
        if run is None:
            run = loop.create_task(self._call_runner(helper, server_url, host))
            self._inflight[key] = run
            run.add_done_callback(functools.partial(self._forget, key))
        # shield: a waiter that is cancelled leaves the run to the others (and
        # marks a failure nobody waits for any more as retrieved).
        return await asyncio.shield(run)

    def _forget(
        self,
        key: tuple[asyncio.AbstractEventLoop, str, str],
        run: asyncio.Future[ConfigEntry],
    ) -> None:
        if self._inflight.get(key) is run:
            del self._inflight[key]

    async def _call_runner(self, helper: str, server_url: str, host: str) -> ConfigEntry:
        runner = self._runner
        if runner is None:
            runner = _default_runner(None)
        try:
            entry = await runner(helper, server_url)
        except OCIAuthError:
            raise
        except Exception as exc:
            # A custom runner's message may say anything; only its type is shown.
            raise HelperError(
                f"credential helper {_show(helper)} failed for {host}: {type(exc).__name__}",
                helper=helper,
                registry=host,
            ) from exc
        if not isinstance(entry, ConfigEntry):
            raise HelperError(
                f"credential helper runner for {_show(helper)} returned"
                f" {type(entry).__name__}, not a ConfigEntry",
                helper=helper,
                registry=host,
            )
        return entry


def load(runner: HelperRunner | None = None) -> ConfigFile:
    """Read the Docker configuration of this process's environment (Go: ``Load``).

    ``runner`` runs credential helpers; None means :func:`~aociauth.exec_helper`.
    Reading is synchronous file I/O, meant for program start (as in the
    original); call it in a thread (``asyncio.to_thread``) if that matters.
    Missing files are skipped. Raises :class:`~aociauth.ConfigError`, naming
    the source, for a file that cannot be read, is too large
    (:data:`MAX_CONFIG_SIZE`) or is not valid JSON.
    """
    return load_with_env(runner, None)


def load_with_env(
    runner: HelperRunner | None = None, env: Mapping[str, str] | None = None
) -> ConfigFile:
    """Like :func:`load`, with the environment variables taken from ``env`` (Go: ``LoadWithEnv``).

    ``env`` None means ``os.environ``. With an explicit ``env`` and no
    ``runner``, helpers are looked up on ``env["PATH"]`` and run with ``env``
    as their whole environment (:func:`~aociauth.exec_helper_with_env`).
    """
    if runner is None:
        runner = _default_runner(env)
    config = ConfigFile(runner=runner)
    for source, raw in _read_sources(os.environ if env is None else env):
        config._add(_parse_document(_parse_json(raw, source), source))
    return config


def _default_runner(env: Mapping[str, str] | None) -> HelperRunner:
    # Imported here: helpers imports ConfigEntry from this module.
    from aociauth.helpers import exec_helper_with_env

    return exec_helper_with_env(env)


# -- sources -------------------------------------------------------------------


def _read_sources(env: Mapping[str, str]) -> Iterator[tuple[str, bytes]]:
    """(source, content) of each configuration source that exists, in precedence order."""
    inline = env.get(_DOCKER_AUTH_CONFIG, "")
    if inline:
        raw = inline.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_CONFIG_SIZE:
            raise ConfigError(f"{_DOCKER_AUTH_CONFIG} is larger than {MAX_CONFIG_SIZE} bytes")
        yield _DOCKER_AUTH_CONFIG, raw
    paths = []
    if env.get("DOCKER_CONFIG"):
        paths.append(os.path.join(env["DOCKER_CONFIG"], "config.json"))
    elif env.get("HOME"):
        paths.append(os.path.join(env["HOME"], ".docker", "config.json"))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    for path in paths:
        data = _read_file(path)
        if data:
            yield path, data


def _read_file(path: str) -> bytes | None:
    """The content of ``path``; None when it does not exist."""
    try:
        # O_NONBLOCK: opening a FIFO put in the file's place must not hang.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"cannot read {path}: not a regular file")
        chunks = []
        size = 0
        while size <= MAX_CONFIG_SIZE:
            chunk = os.read(fd, MAX_CONFIG_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_SIZE:
        raise ConfigError(f"cannot read {path}: larger than {MAX_CONFIG_SIZE} bytes")
    return b"".join(chunks)


def _parse_json(raw: bytes, source: str) -> Any:
    """The JSON document in ``raw``; None for an empty one.

    Errors are raised outside the ``except`` blocks so that no exception
    holding the text (``JSONDecodeError.doc``, ``UnicodeDecodeError.object``)
    stays attached as a context.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw:
        return None
    problem = "not valid JSON"
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, RecursionError):
        pass
    raise ConfigError(f"invalid config {source}: {problem}")


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON, though Python's parser accepts them.
    raise ValueError(name)


# -- documents -----------------------------------------------------------------


def _parse_document(data: Any, source: str) -> _Document:
    """Check the shape of a document and decode each of its ``auths`` entries."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid config {source}: not a JSON object")
    auths = _object_field(data, "auths", source)
    helpers = _object_field(data, "credHelpers", source)
    store = data.get("credsStore")
    if store is None:
        store = ""
    if not isinstance(store, str):
        raise ConfigError(f'invalid config {source}: "credsStore" is not a string')
    return _Document(
        source=source,
        auths={key: _decode_entry(key, value, source) for key, value in auths.items()},
        cred_helpers={key: _helper_ref(key, value, source) for key, value in helpers.items()},
        creds_store=store,
    )


def _object_field(data: Mapping[Any, Any], name: str, source: str) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f'invalid config {source}: "{name}" is not a JSON object')
    if not all(isinstance(key, str) for key in value):
        raise ConfigError(f'invalid config {source}: a key of "{name}" is not a string')
    return value


def _helper_ref(key: str, value: Any, source: str) -> _HelperRef:
    if value is None:
        value = ""
    if isinstance(value, str):
        return _HelperRef(key, source, 0, value)
    problem = f'credHelpers entry for "{_show(key)}" in {source} is not a string'
    return _HelperRef(key, source, 0, "", problem)


_AZURE_TOKEN_USER = "00000000-0000-0000-0000-000000000000"  # noqa: S105 (a user name)


def _decode_entry(key: str, value: Any, source: str) -> _Auth:
    """An ``auths`` entry as a :class:`ConfigEntry`, or the problem with it (without its text)."""
    where = f'auths entry for "{_show(key)}" in {source}'
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return _Auth(key, source, ConfigEntry(), f"{where} is not a JSON object")
    fields: dict[str, str] = {}
    for name in _AUTH_FIELDS:
        field = value.get(name)
        if field is None:
            field = ""
        if not isinstance(field, str) or not _is_utf8(field):
            return _Auth(key, source, ConfigEntry(), f'{where}: field "{name}" is not a string')
        fields[name] = field
    username, password = fields["username"], fields["password"]
    if fields["auth"]:
        decoded = _decode_auth(fields["auth"])
        if isinstance(decoded, str):
            return _Auth(
                key,
                source,
                ConfigEntry(),
                f'cannot decode auth field for "{_show(key)}" in {source}: {decoded}',
            )
        username, password = decoded
    if fields["identitytoken"] and username == _AZURE_TOKEN_USER and not password:
        # `az acr login` writes the all-zero GUID as a placeholder user beside the
        # token it means; docker/cli uses the token. Not ambiguous: a refresh token.
        username = ""
    if fields["identitytoken"] and username:
        problem = f"ambiguous auth credentials: {where} has both identitytoken and a username"
        return _Auth(key, source, ConfigEntry(), problem)
    entry = ConfigEntry(
        refresh_token=fields["identitytoken"],
        access_token=fields["registrytoken"],
        username=username,
        password=password,
    )
    return _Auth(key, source, entry)


def _decode_auth(text: str) -> tuple[str, str] | str:
    """(username, password) from base64 ``user:pass``, or what is wrong with it.

    Strict, unlike Python's default: a character outside the base64 alphabet
    is an error rather than skipped. Missing padding is repaired, since Docker
    for Mac wrote unpadded values (fsouza/go-dockerclient#820). The problem
    returned never holds the text.
    """
    compact = text.strip().replace("\r", "").replace("\n", "")
    padded = compact + "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        return "invalid base64-encoded string"
    if base64.b64encode(raw).decode("ascii") != padded:
        # Python 3.10 ignores data after the padding; the round trip does not.
        return "invalid base64-encoded string"
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "decoded auth field is not UTF-8"
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return "no username found"
    # NULs trimmed from the password, as the Docker CLI does (cli/config/configfile).
    return username, password.strip("\x00")


def _slots_of(doc: _Document, order: int) -> dict[str, _Slot]:
    """The lookup names a document answers: its keys, and the hosts of its URL keys."""
    slots = {key: _Slot(auth, order) for key, auth in doc.auths.items()}
    for key, auth in sorted(doc.auths.items()):
        if "//" not in key:
            continue
        host = _url_host(key)
        if host == key:
            continue
        current = slots.get(host)
        if current is None:
            slots[host] = _Slot(auth, order, (key,))
        elif current.derived_from:
            slots[host] = _Slot(current.auth, order, (*current.derived_from, key))
        # else: an explicit key for the host wins over URL keys.
    return slots


def _url_host(key: str) -> str:
    """The host of a URL key, as docker's ``ConvertToHostname`` has it."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
            break
    return key.partition("/")[0]


def _from_slot(host: str, name: str, slot: _Slot) -> Resolution:
    if len(slot.derived_from) > 1:
        raise ConfigError(
            f'more than one auths entry for "{_show(name)}"'
            f" ({', '.join(_show(k) for k in slot.derived_from)}) in {slot.auth.source}",
            registry=host,
            step="config",
        )
    if slot.auth.problem is not None:
        raise ConfigError(slot.auth.problem, registry=host, step="config")
    key = slot.derived_from[0] if slot.derived_from else name
    return Resolution(slot.auth.entry, slot.auth.source, key, None, "auths")


def _hosts_for(host: str) -> tuple[str, ...]:
    """The names ``host``'s keys may be written with: Docker Hub has three."""
    if host in DOCKER_HUB_HOSTS:
        return (host, *(h for h in _HUB_HOST_ORDER if h != host))
    return (host,)


def _is_utf8(text: str) -> bool:
    # JSON's \\ud800 escapes give lone surrogates, which nothing can send.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(text: str) -> str:
    """A key fit for a message: printable and of bounded length."""
    if text.isprintable() and len(text) <= _SHOWN_KEY_LENGTH:
        return text
    return repr(text[:_SHOWN_KEY_LENGTH])[1:-1] + ("..." if len(text) > _SHOWN_KEY_LENGTH else "")
