"""Registry credentials from the user's Docker and podman configuration.

:func:`load` reads what ``docker login``, ``podman login`` and ``skopeo
login`` left behind. The sources, in precedence order (the "How credentials
are found" table of docs/configuration.md states the same, and a test holds the
two together):

1. ``$DOCKER_AUTH_CONFIG``: the configuration itself, as inline JSON (docker/cli
   asks it before the configuration file: ``GetCredentialsStore``);
2. ``$REGISTRY_AUTH_FILE``, or else ``$XDG_RUNTIME_DIR/containers/auth.json``,
   or else ``/run/containers/$UID/auth.json``: podman's primary file, which
   ``REGISTRY_AUTH_FILE`` overrides (containers-auth.json(5));
3. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config`` when
   ``XDG_CONFIG_HOME`` is unset);
4. ``$DOCKER_CONFIG/config.json``, or ``~/.docker/config.json`` when
   ``DOCKER_CONFIG`` is unset (``DOCKER_CONFIG`` replaces ``~/.docker``);
5. ``~/.dockercfg``, the legacy format: a bare map of registry to entry, read
   only (containers/image still reads it; docker/cli no longer does).

Sources are asked one after another: whatever a source says about a registry
(its ``auths``, ``credHelpers`` or ``credsStore``) comes before anything a
later source says, and a source that has no credentials for it (no key, a
``{}`` marker, a helper's "not found") passes the question on, as
containers/image goes through its files. Within a source the order is: an
``auths`` key for a namespace covering the repository (longest first), then
``credHelpers[host]`` (an explicit helper: its failure is an error), then
``credsStore`` (when it is not installed, the source's ``auths`` are used),
then the ``auths`` entry for the host. A helper's answer is that source's
answer: the same source's ``auths`` entry is not used after it.

Beyond the Go original:

* Docker Hub is known by three names (``docker.io``, ``index.docker.io``,
  ``registry-1.docker.io``); each of them finds the entry ``docker login``
  writes (``https://index.docker.io/v1/``), and helpers are asked for that
  URL, as the Docker CLI asks them.
* An ``auths`` entry that cannot be used (bad base64, a field that is not a
  string or holds a control character, ``identitytoken`` together with a
  username) fails lookups of its own host only; the rest of the file keeps
  working. Invalid JSON still fails the load.
* ``auths`` keys that carry a path (``quay.io/team``, no scheme, no trailing
  ``/``) hold credentials for the repositories under that path
  (containers/image's per-namespace keys); helpers know hosts only.
* Among Docker Hub's keys within one source: the name asked for, then
  ``https://index.docker.io/v1/``, then the other names.
* Files are read with a size limit (:data:`MAX_CONFIG_SIZE`), and only when
  they are regular files.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import dataclasses
import json
import logging
import os
import re
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol, runtime_checkable

from aociauth._entry import ConfigEntry
from aociauth._singleflight import SingleFlight
from aociauth.errors import ConfigError, HelperError, HelperNotFoundError, OCIAuthError
from aociauth.helpers import HelperLister, HelperRunner, exec_helper_with_env, list_helper_with_env

__all__ = [
    "DOCKER_HUB_HOSTS",
    "DOCKER_HUB_SERVER_URL",
    "MAX_CONFIG_SIZE",
    "Config",
    "ConfigEntry",
    "ConfigFile",
    "NamespacedConfig",
    "Resolution",
    "StoredCredential",
    "load",
    "load_with_env",
]

log = logging.getLogger("aociauth")

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
# C0 controls and DEL: in a credential they would break, or inject into, the
# header or form it is sent in (aiohttp refuses CR/LF in headers with a ValueError).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@runtime_checkable
class Config(Protocol):
    """Where the middleware gets credentials from (Go: ``Config``).

    Implement it to supply credentials from elsewhere (a vault, a test).
    It may be called concurrently.

    One optional capability, named by a protocol of its own and detected with
    ``isinstance``: a :class:`NamespacedConfig` also keeps credentials per
    repository namespace (``quay.io/team``), as :class:`ConfigFile` does. A
    Config without it is asked per registry only.
    """

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        """The credentials for registry ``host`` (``host[:port]``).

        Return an empty :class:`ConfigEntry` when there are none; raise an
        :class:`~aociauth.OCIAuthError` when they cannot be determined.
        """
        ...


@runtime_checkable
class NamespacedConfig(Config, Protocol):
    """A :class:`Config` with credentials per repository namespace, as :class:`ConfigFile` has.

    Both adapters ask :meth:`namespaces` once per registry origin; a request
    whose repository lies under one of the namespaces (``team`` covers
    ``team`` and ``team/app``, the longest wins) is looked up with
    :meth:`entry_for_repository` for that namespace, every other request with
    :meth:`~Config.entry_for_registry`. Each namespace gets a token identity
    of its own, so two namespaces' credentials never share a token.
    """

    async def entry_for_repository(self, host: str, repository: str) -> ConfigEntry:
        """The credentials for ``repository`` on registry ``host``.

        The adapters pass a namespace :meth:`namespaces` named, whole. Empty
        and raising mean what they mean for :meth:`~Config.entry_for_registry`.
        """
        ...

    def namespaces(self, host: str) -> tuple[str, ...]:
        """The repository namespaces of ``host`` with credentials of their own.

        Plain paths (``team``, ``team/app``), without the host; called once per
        registry origin, so it must not block.
        """
        ...


@dataclass(frozen=True)
class Resolution:
    """Which credentials a lookup found, and where they came from.

    ``source`` is the file path (or ``"DOCKER_AUTH_CONFIG"``) of the winning
    entry, ``key`` the ``auths`` or ``credHelpers`` key matched, ``helper`` the
    name of the helper that answered, and ``kind`` the kind of answer:
    ``"auths"``, ``"credHelpers"`` (an explicit helper), ``"credsStore"`` (the
    fallback helper) or ``"none"``. When no source has credentials, the
    entry is empty and the other fields name the first source that said so,
    if any did. ``helpers_asked`` names every helper the lookup asked, in
    order (an earlier source's helper may have had nothing); it takes no part
    in comparisons or the repr. Safe to print: the entry hides its secrets.
    """

    entry: ConfigEntry
    source: str | None = None
    key: str | None = None
    helper: str | None = None
    kind: Literal["auths", "credHelpers", "credsStore", "none"] = "none"
    helpers_asked: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)


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
    """What one lookup name answers with, within one source.

    A slot is either an explicit key, or a host derived from URL keys
    (``https://host/v1/``); ``derived_from`` lists those keys, sorted, and more
    than one of them makes the host ambiguous, as in the original.
    """

    auth: _Auth
    derived_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class _HelperRef:
    """One ``credHelpers`` value (or ``credsStore``), with where it came from."""

    key: str
    source: str
    name: str
    problem: str | None = None


@dataclass(frozen=True)
class _Document:
    """The auth part of one configuration source.

    ``legacy`` marks ``~/.dockercfg``: a bare ``auths`` map whose keys are
    registries only (containers/image reads every key of it as a host).
    """

    source: str
    auths: dict[str, _Auth]
    cred_helpers: dict[str, _HelperRef]
    creds_store: str
    legacy: bool = False


@dataclass(frozen=True)
class _Source:
    """One source, indexed for lookups."""

    name: str
    auths: dict[str, _Auth]
    slots: dict[str, _Slot]
    helpers: dict[str, _HelperRef]
    store: _HelperRef | None
    legacy: bool


@dataclass(frozen=True)
class StoredCredential:
    """One place that holds credentials, as ``aociauth get`` lists them.

    ``registry`` is the host (Docker Hub's keys all show as ``docker.io``) and
    ``namespace`` the repository path of a per-namespace key (empty for the
    whole registry). ``found`` says where and what: its ``entry`` is what this
    place holds (empty when it cannot be used), ``kind``, ``source``, ``key``
    and ``helper`` where it is. ``problem`` is why it cannot be used, if so.
    ``used_instead`` is what a lookup of ``registry``/``namespace`` finds
    first, when that is another place: this one is shadowed. Safe to print.
    """

    registry: str
    namespace: str
    found: Resolution
    problem: str | None = None
    used_instead: Resolution | None = None


_Ask = Callable[[str, str], Awaitable[ConfigEntry]]


class ConfigFile:
    """Credentials read from Docker and podman configuration files (Go: ``ConfigFile``).

    Build one with :func:`load`, :func:`load_with_env` or :meth:`from_dict`;
    ``ConfigFile()`` holds no credentials. Implements :class:`Config`.

    Lookups are async because a credential helper may have to run. Concurrent
    lookups that need the same helper answer share one helper process; once it
    has answered, the next lookup runs it again (remembering answers is the
    middleware's job).

    A configuration made by :func:`load` or :func:`load_with_env` knows the
    files it read: :meth:`reload_if_changed` reads them again when one changed
    on disk, so a ``docker login`` while the program runs is picked up.
    """

    def __init__(self, *, runner: HelperRunner | None = None) -> None:
        self._runner = runner
        self._lister: HelperLister | None = None
        self._chain: tuple[_Source, ...] = ()
        #: The environment the files were found with (None: not read from files).
        self._env: Mapping[str, str] | None = None
        #: Each file that may be read, as it was on disk when last read.
        self._stamps: tuple[tuple[str, _Stamp], ...] = ()
        #: Helper runs shared by (event loop, helper, server URL). Under asyncio
        #: each run is a task of its own, so a caller that is cancelled leaves it
        #: to the others; under trio, where no task may outlive its caller, the
        #: first caller runs it and a waiter takes over if it leaves.
        self._helper_runs: SingleFlight[_HelperRun, ConfigEntry] = SingleFlight(
            spawn=self._spawn, abandoned=_helper_run_abandoned
        )
        self._inline_helper_runs: SingleFlight[_HelperRun, ConfigEntry] = SingleFlight(
            spawn=None, abandoned=_helper_run_abandoned
        )
        self._tasks: set[asyncio.Task[None]] = set()

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
        return tuple(src.name for src in self._chain)

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
        (``quay.io/team``) covering the repository wins within its source, the
        longest first. A key matches whole path segments only:
        ``quay.io/team`` covers ``team`` and ``team/app``, not ``teamx/app``.
        """
        return (await self.resolve(host, repository)).entry

    def namespaces(self, host: str) -> tuple[str, ...]:
        """The repository paths of ``host`` that have ``auths`` entries of their own, longest first.

        Lets a caller share one lookup (and one token cache) between the
        repositories a namespace key covers: every repository under the
        longest such path covering it gets the answer that path gets.
        """
        found: set[str] = set()
        for src in self._chain:
            if src.legacy:
                continue
            for prefix in _hosts_for(host):
                for name, slot in src.slots.items():
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

        The sources are asked in precedence order; within each, an ``auths``
        key for a namespace covering the repository, ``credHelpers[host]``,
        ``credsStore``, the ``auths`` entry for the host. The first
        credentials found are the answer. When no source has any, the answer
        is empty and says which source answered so first (a ``{}`` marker, a
        helper's "not found"), or has kind ``"none"``. An error (a bad entry,
        a failing helper) ends the lookup. :meth:`entry_for_repository` is
        ``resolve(...).entry``.
        """
        return await self._resolve(host, repository.strip("/"), self._run_helper)

    async def stored_credentials(self) -> tuple[StoredCredential, ...]:
        """Every place in the configuration that holds credentials, in lookup order.

        Sources in precedence order; within a source, its namespace keys
        (longest first), its ``credHelpers``, what its ``credsStore`` holds
        (``docker-credential-NAME list`` where the helper supports it, and the
        ``{}`` markers ``docker login`` leaves), its host keys. Helpers are
        run, each once per server; a place whose helper has nothing is left
        out, one whose entry or helper fails is listed with the problem.
        """
        answers: dict[tuple[str, str], ConfigEntry | OCIAuthError] = {}

        async def ask(helper: str, host: str) -> ConfigEntry:
            key = (helper, _server_url(host))
            if key not in answers:
                try:
                    answers[key] = await self._run_helper(helper, host)
                except OCIAuthError as exc:
                    answers[key] = exc
            answer = answers[key]
            if isinstance(answer, OCIAuthError):
                raise answer
            return answer

        listed: list[StoredCredential] = []
        for src in self._chain:
            async for place in self._places(src, ask):
                listed.append(await self._judge(place, ask))
        return tuple(listed)

    def reload_if_changed(self) -> bool:
        """Read the configuration files again if one changed on disk; True if it did.

        A file counts as changed when its modification time, size or inode
        differ from when it was read, or it appeared or went away (``docker
        login`` writes a new file and renames it into place). The check is a
        ``stat`` per file, cheap enough to run every second. A configuration
        that is not read from files (:meth:`from_dict`, ``ConfigFile()``)
        never changes. When the new content cannot be used (a half-written
        file, invalid JSON), the configuration stays as it was, a warning is
        logged, and the next call tries again.
        """
        if self._env is None:
            return False
        stamps = _stamps(self._env)
        if stamps == self._stamps:
            return False
        try:
            chain = _chain_of(self._env)
        except ConfigError as exc:
            log.warning("configuration changed but cannot be read again: %s", exc)
            return False
        self._chain, self._stamps = chain, stamps
        log.debug("configuration files changed; read them again")
        return True

    # -- building ------------------------------------------------------------

    def _add(self, doc: _Document) -> None:
        """Append a source of lower precedence than those already added."""
        store = None
        if doc.creds_store:
            store = _HelperRef("credsStore", doc.source, doc.creds_store)
        src = _Source(doc.source, doc.auths, _slots_of(doc), doc.cred_helpers, store, doc.legacy)
        self._chain += (src,)

    # -- lookup --------------------------------------------------------------

    async def _resolve(self, host: str, repository: str, ask: _Ask) -> Resolution:
        asked: list[str] = []

        async def asking(helper: str, about: str) -> ConfigEntry:
            asked.append(helper)
            return await ask(helper, about)

        first_empty: Resolution | None = None
        for src in self._chain:
            res = await self._resolve_in(src, host, repository, asking)
            if res is None:
                continue
            if res.entry != ConfigEntry():
                return dataclasses.replace(res, helpers_asked=tuple(asked))
            if first_empty is None:
                first_empty = res
        if first_empty is None:
            first_empty = Resolution(ConfigEntry())
        return dataclasses.replace(first_empty, helpers_asked=tuple(asked))

    async def _resolve_in(
        self, src: _Source, host: str, repository: str, ask: _Ask
    ) -> Resolution | None:
        """What one source says about ``repository`` on ``host``; None when it says nothing."""
        found = _namespace_slot(src, host, repository)
        if found is not None:
            return _from_slot(*found)
        helper = _explicit_helper(src, host)
        if helper is not None:
            if helper.problem is not None:
                raise ConfigError(helper.problem, registry=host, step="config")
            if helper.name:
                entry = await ask(helper.name, host)
                return Resolution(entry, helper.source, helper.key, helper.name, "credHelpers")
            # An empty credHelpers value means this source's auths (not its store).
        elif src.store is not None:
            try:
                entry = await ask(src.store.name, host)
            except HelperNotFoundError:
                # A default store set up without its helper installed is common
                # (cue-lang/cue#2934): fall back to the source's auths entries.
                pass
            else:
                return Resolution(entry, src.name, None, src.store.name, "credsStore")
        found = _host_slot(src, host)
        return None if found is None else _from_slot(*found)

    async def _run_helper(self, helper: str, host: str) -> ConfigEntry:
        """Ask ``helper`` about ``host``, sharing a run already under way for the same question."""
        server_url = _server_url(host)
        try:
            loop: object = asyncio.get_running_loop()
            flights = self._helper_runs
        except RuntimeError:
            # trio: one run a thread at a time, and no helper run outlives its caller.
            loop, flights = threading.get_ident(), self._inline_helper_runs
        return await flights.run(
            (loop, helper, server_url), lambda: self._call_runner(helper, server_url, host)
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only a weak reference to a task: the set keeps it running.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        bad = [name for name, text in _fields(entry) if _CONTROL.search(text)]
        if bad:
            # Whatever the runner, a credential that would break the header or
            # form it is sent in is refused here, not by aiohttp later.
            raise HelperError(
                f"credential helper {_show(helper)} for {host}: its answer's {bad[0]}"
                " holds a control character",
                helper=helper,
                registry=host,
            )
        return entry

    # -- listing -------------------------------------------------------------

    async def _places(self, src: _Source, ask: _Ask) -> AsyncIterator[StoredCredential]:
        """The places of one source that may hold credentials, in lookup order, unjudged."""
        located = sorted(
            (*_registry_of(key, src.legacy), key, auth)
            for key, auth in src.auths.items()
            if not auth.is_marker
        )
        # Namespace keys first, the longest first; host keys last.
        located.sort(key=lambda r: -len(r[1].split("/")) if r[1] else 0)
        for registry, namespace, key, auth in located:
            if namespace:
                yield _stored(registry, namespace, key, auth)
        for key, ref in sorted(src.helpers.items()):
            registry = _registry_of(key, True)[0]
            found = Resolution(ConfigEntry(), ref.source, key, ref.name or None, "credHelpers")
            if ref.problem is not None:
                yield StoredCredential(registry, "", found, ref.problem)
            elif ref.name:
                place = await _asked(registry, found, ask)
                if place is not None:
                    yield place
        if src.store is not None:
            async for place in self._store_places(src, src.store, ask):
                yield place
        for registry, namespace, key, auth in located:
            if not namespace:
                yield _stored(registry, namespace, key, auth)

    async def _store_places(
        self, src: _Source, store: _HelperRef, ask: _Ask
    ) -> AsyncIterator[StoredCredential]:
        """What a ``credsStore`` holds: its ``list``, and the source's ``{}`` markers."""
        found = Resolution(ConfigEntry(), src.name, None, store.name, "credsStore")
        servers: set[str] = set()
        if self._lister is not None:
            try:
                servers.update(await self._lister(store.name))
            except HelperNotFoundError:
                return  # Not installed: lookups use the source's auths instead.
            except OCIAuthError as exc:
                yield StoredCredential("*", "", found, str(exc))
        servers.update(
            key
            for key, auth in src.auths.items()
            if auth.is_marker and not _registry_of(key, src.legacy)[1]
        )
        registries = sorted({_registry_of(server, True)[0] for server in servers})
        for registry in registries:
            try:
                place = await _asked(registry, found, ask)
            except HelperNotFoundError:
                return
            if place is not None:
                yield place

    async def _judge(self, place: StoredCredential, ask: _Ask) -> StoredCredential:
        """``place``, with what a lookup of its registry and namespace finds first."""
        if place.problem is not None or place.registry == "*":
            return place
        try:
            winner = await self._resolve(place.registry, place.namespace, ask)
        except OCIAuthError as exc:
            return StoredCredential(place.registry, place.namespace, place.found, str(exc))
        own = place.found
        if (winner.source, winner.key, winner.helper, winner.kind) == (
            own.source,
            own.key,
            own.helper,
            own.kind,
        ):
            return place
        return StoredCredential(place.registry, place.namespace, own, None, winner)


def load(runner: HelperRunner | None = None) -> ConfigFile:
    """Read the Docker and podman configuration of this process's environment (Go: ``Load``).

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
    Every path comes from ``env`` (``HOME`` included); only the
    ``/run/containers/$UID`` fallback uses this process's user id.
    """
    config = ConfigFile(runner=runner if runner is not None else _default_runner(env))
    if runner is None:
        config._lister = _default_lister(env)
    # A copy: what the files were found with must not change under reload_if_changed.
    config._env = dict(os.environ if env is None else env)
    # Stamped before reading: a change while they are read is seen at the next check.
    config._stamps = _stamps(config._env)
    config._chain = _chain_of(config._env)
    return config


def _chain_of(env: Mapping[str, str]) -> tuple[_Source, ...]:
    """Every configuration source ``env`` names, read and indexed, in precedence order."""
    config = ConfigFile()
    for source, raw, legacy in _read_sources(env):
        data = _parse_json(raw, source)
        config._add(_parse_legacy(data, source) if legacy else _parse_document(data, source))
    return config._chain


#: A shared helper run's key: (event loop, helper name, server URL).
_HelperRun = tuple[object, str, str]


def _helper_run_abandoned() -> HelperError:
    """What a lookup gets when the helper run it waited for was cancelled (its loop closing)."""
    return HelperError("the credential helper run this lookup waited for was cancelled")


def _default_runner(env: Mapping[str, str] | None) -> HelperRunner:
    return exec_helper_with_env(env)


def _default_lister(env: Mapping[str, str] | None) -> HelperLister:
    return list_helper_with_env(env)


# -- sources -------------------------------------------------------------------

#: podman's primary file when ``XDG_RUNTIME_DIR`` is unset (containers/image
#: ``getPathToAuthWithOS``); ``{uid}`` is this process's user id.
_RUN_CONTAINERS_AUTH = "/run/containers/{uid}/auth.json"


def _source_paths(env: Mapping[str, str]) -> tuple[tuple[str, bool], ...]:
    """The files :func:`load_with_env` would read for ``env``, in precedence order.

    Each is ``(path, legacy)``; ``legacy`` marks the ``~/.dockercfg`` format.
    ``DOCKER_AUTH_CONFIG``, which is no file, comes before all of them.
    """
    home = env.get("HOME", "")
    paths: list[tuple[str, bool]] = []
    if env.get("REGISTRY_AUTH_FILE"):
        # podman's --authfile default: it replaces the primary file, the
        # search goes on after it (containers-auth.json(5)).
        paths.append((env["REGISTRY_AUTH_FILE"], False))
    elif env.get("XDG_RUNTIME_DIR"):
        paths.append((os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"), False))
    elif hasattr(os, "getuid"):
        paths.append((_RUN_CONTAINERS_AUTH.format(uid=os.getuid()), False))
    if env.get("XDG_CONFIG_HOME"):
        paths.append((os.path.join(env["XDG_CONFIG_HOME"], "containers", "auth.json"), False))
    elif home:
        paths.append((os.path.join(home, ".config", "containers", "auth.json"), False))
    if env.get("DOCKER_CONFIG"):
        paths.append((os.path.join(env["DOCKER_CONFIG"], "config.json"), False))
    elif home:
        paths.append((os.path.join(home, ".docker", "config.json"), False))
    if home:
        paths.append((os.path.join(home, ".dockercfg"), True))
    return tuple(paths)


def _read_sources(env: Mapping[str, str]) -> Iterator[tuple[str, bytes, bool]]:
    """(source, content, legacy) of each configuration source that exists, in precedence order."""
    inline = env.get(_DOCKER_AUTH_CONFIG, "")
    if inline:
        raw = inline.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_CONFIG_SIZE:
            raise ConfigError(f"{_DOCKER_AUTH_CONFIG} is larger than {MAX_CONFIG_SIZE} bytes")
        yield _DOCKER_AUTH_CONFIG, raw, False
    seen: set[str] = set()
    for path, legacy in _source_paths(env):
        if path in seen:
            continue  # REGISTRY_AUTH_FILE naming another source's file: read it once.
        seen.add(path)
        data = _read_file(path)
        if data:
            yield path, data, legacy


#: How a file was on disk: (modification time in ns, size, inode); None when absent.
_Stamp = tuple[int, int, int] | None


def _stamps(env: Mapping[str, str]) -> tuple[tuple[str, _Stamp], ...]:
    """The stamp of every file :func:`load_with_env` would read for ``env``."""
    out: list[tuple[str, _Stamp]] = []
    for path, _legacy in _source_paths(env):
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, None))  # absent, or not readable: reading says why
        else:
            out.append((path, (st.st_mtime_ns, st.st_size, st.st_ino)))
    return tuple(out)


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


def _parse_legacy(data: Any, source: str) -> _Document:
    """A ``~/.dockercfg`` document: the ``auths`` map itself, with no helpers.

    Read as containers/image reads it (``legacyFormat``); docker/cli stopped
    reading the file in v25 and only warns that it is there.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid config {source}: not a JSON object")
    auths = _object_field({"auths": data}, "auths", source)
    return _Document(
        source=source,
        auths={key: _decode_entry(key, value, source) for key, value in auths.items()},
        cred_helpers={},
        creds_store="",
        legacy=True,
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
        return _HelperRef(key, source, value)
    problem = f'credHelpers entry for "{_show(key)}" in {source} is not a string'
    return _HelperRef(key, source, "", problem)


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
    checked = {
        "username": username,
        "password": password,
        "identitytoken": fields["identitytoken"],
        "registrytoken": fields["registrytoken"],
    }
    for name, text in checked.items():
        if _CONTROL.search(text):
            # The field named is where it came from: username and password may
            # come out of "auth". Never the text itself.
            origin = "auth" if fields["auth"] and name in ("username", "password") else name
            problem = f'{where}: field "{origin}" holds a control character ({name})'
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

    As strict as Go's ``base64.StdEncoding``, which docker/cli's
    ``decodeAuth`` and containers/image use: a character outside the base64
    alphabet is an error rather than skipped, spaces and tabs included; only
    CR and LF are ignored, as Go's decoder ignores them. Missing padding is
    repaired, since Docker for Mac wrote unpadded values
    (fsouza/go-dockerclient#820). The problem returned never holds the text.
    """
    compact = text.replace("\r", "").replace("\n", "")
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


def _slots_of(doc: _Document) -> dict[str, _Slot]:
    """The lookup names a document answers: its keys, and the hosts of its URL keys.

    In the legacy format every key names a registry, its path (if any)
    ignored, as containers/image's ``normalizeAuthFileKey`` reads it.
    """
    slots = {key: _Slot(auth) for key, auth in doc.auths.items() if not (doc.legacy and "/" in key)}
    for key, auth in sorted(doc.auths.items()):
        if "//" not in key and not (doc.legacy and "/" in key):
            continue
        host = _url_host(key)
        if host == key:
            continue
        current = slots.get(host)
        if current is None:
            slots[host] = _Slot(auth, (key,))
        elif current.derived_from:
            slots[host] = _Slot(current.auth, (*current.derived_from, key))
        # else: an explicit key for the host wins over URL keys.
    return slots


def _namespace_slot(src: _Source, host: str, repository: str) -> tuple[str, str, _Slot] | None:
    if src.legacy:
        return None
    segments = repository.split("/") if repository else []
    for n in range(len(segments), 0, -1):
        path = "/".join(segments[:n])
        names = [f"{h}/{path}" for h in _hosts_for(host)]
        found = _best(src, host, [name for name in names if name not in _HUB_ROOT_KEYS])
        if found is not None and not found[2].auth.is_marker:
            return found
    return None


def _host_slot(src: _Source, host: str) -> tuple[str, str, _Slot] | None:
    if host not in DOCKER_HUB_HOSTS:
        return _best(src, host, [host])
    return _best(src, host, [host, *_HUB_ROOT_KEYS])


def _best(src: _Source, host: str, names: list[str]) -> tuple[str, str, _Slot] | None:
    """The slot among ``names``: explicit keys before derived hosts, then in the order given."""
    ranked = [
        ((bool(slot.derived_from), rank), name, slot)
        for rank, name in enumerate(names)
        if (slot := src.slots.get(name)) is not None
    ]
    if not ranked:
        return None
    _, name, slot = min(ranked, key=lambda r: r[0])
    return host, name, slot


def _explicit_helper(src: _Source, host: str) -> _HelperRef | None:
    names = [host]
    if host in DOCKER_HUB_HOSTS:
        names += [DOCKER_HUB_SERVER_URL, *_HUB_HOST_ORDER]
    return next((src.helpers[name] for name in names if name in src.helpers), None)


def _server_url(host: str) -> str:
    """What a helper is asked for ``host``: Docker Hub's login URL, as the Docker CLI asks."""
    return DOCKER_HUB_SERVER_URL if host in DOCKER_HUB_HOSTS else host


def _registry_of(key: str, host_only: bool) -> tuple[str, str]:
    """(registry, namespace) a key is about; Docker Hub's names all show as ``docker.io``."""
    if "//" in key or host_only or key in _HUB_ROOT_KEYS:
        host, namespace = _url_host(key), ""
    else:
        host, _, namespace = key.partition("/")
        if namespace and not all(namespace.split("/")):
            return key, ""  # "quay.io/": no namespace key, and no host key either.
    return ("docker.io" if host in DOCKER_HUB_HOSTS else host), namespace


def _stored(registry: str, namespace: str, key: str, auth: _Auth) -> StoredCredential:
    found = Resolution(auth.entry, auth.source, key, None, "auths")
    return StoredCredential(registry, namespace, found, auth.problem)


async def _asked(registry: str, found: Resolution, ask: _Ask) -> StoredCredential | None:
    """What ``found``'s helper holds for ``registry``; None when it has nothing.

    A ``credsStore`` that is not installed raises
    :class:`~aociauth.HelperNotFoundError`: lookups skip such a store.
    """
    try:
        entry = await ask(found.helper or "", registry)
    except HelperNotFoundError as exc:
        if found.kind == "credsStore":
            raise
        return StoredCredential(registry, "", found, str(exc))
    except OCIAuthError as exc:
        return StoredCredential(registry, "", found, str(exc))
    if entry == ConfigEntry():
        return None
    return StoredCredential(registry, "", dataclasses.replace(found, entry=entry))


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


def _fields(entry: ConfigEntry) -> tuple[tuple[str, str], ...]:
    return (
        ("username", entry.username),
        ("password", entry.password),
        ("refresh token", entry.refresh_token),
        ("access token", entry.access_token),
    )


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
