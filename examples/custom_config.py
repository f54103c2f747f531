"""Supply credentials from your own source with a custom ``aociauth.Config``.

Run it: ``python examples/custom_config.py`` (needs ``pip install -e '.[testing]'``).

``Config`` is a protocol with one async method, ``entry_for_registry(host)``,
so credentials can come from a secrets manager, a vault or the environment
instead of ``~/.docker/config.json``. Here a ``VaultConfig`` (a dict standing
in for a secrets store) comes first and a ``docker login`` style
``ConfigFile`` is the fallback. The middleware asks the config once per
registry and remembers the answer, however many requests it sends.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence

import aiohttp

import aociauth
from aociauth.testing import Registry, TokenServer


class VaultConfig:
    """Credentials kept in a secrets store, looked up by registry host."""

    def __init__(self, store: Mapping[str, tuple[str, str]]) -> None:
        self._store = store
        self.lookups: collections.Counter[str] = collections.Counter()

    async def entry_for_registry(self, host: str) -> aociauth.ConfigEntry:
        self.lookups[host] += 1
        await asyncio.sleep(0)  # a real store would be asked over the network here
        found = self._store.get(host)
        if found is None:
            return aociauth.ConfigEntry()  # nothing known: the empty entry, not an error
        username, password = found
        return aociauth.ConfigEntry(username=username, password=password)


class ChainConfig:
    """Ask each config in turn; the first one with credentials wins."""

    def __init__(self, configs: Sequence[aociauth.Config]) -> None:
        self._configs = configs

    async def entry_for_registry(self, host: str) -> aociauth.ConfigEntry:
        for config in self._configs:
            entry = await config.entry_for_registry(host)
            if entry != aociauth.ConfigEntry():
                return entry
        return aociauth.ConfigEntry()


async def pull_tags(session: aiohttp.ClientSession, registry: Registry, repo: str) -> int:
    async with session.get(f"{registry.url}/v2/{repo}/tags/list") as resp:
        return resp.status


async def main() -> None:
    async with (
        TokenServer(users={"ci-bot": "vault-secret", "alice": "file-secret"}) as token_server,
        Registry(auth="bearer", token_server=token_server) as private,
        Registry(auth="basic", users={"alice": "file-secret"}) as legacy,
    ):
        for registry in (private, legacy):
            for i in range(5):
                registry.seed_image(f"team/app{i}")

        vault = VaultConfig({private.host: ("ci-bot", "vault-secret")})
        docker_file = aociauth.ConfigFile.from_dict(
            {"auths": {legacy.host: {"username": "alice", "password": "file-secret"}}}
        )
        config = ChainConfig([vault, docker_file])
        assert isinstance(config, aociauth.Config)  # the protocol is runtime-checkable
        print(f"vault answers for {private.host}: {await vault.entry_for_registry(private.host)}")
        vault.lookups.clear()

        mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
        async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
            statuses = await asyncio.gather(
                *(
                    pull_tags(session, r, f"team/app{i}")
                    for r in (private, legacy)
                    for i in range(5)
                )
            )
        print(f"statuses: {sorted(collections.Counter(statuses).items())}")
        subjects = sorted({r.subject for r in token_server.requests if r.subject})
        print(f"token server issued tokens to: {subjects}")
        print(f"Basic requests the legacy registry got: {legacy.counters.basic}")
        print(f"vault lookups per registry: {dict(vault.lookups)}")
        print(f"config lookups by the middleware: {mw.stats.config_lookups}")


if __name__ == "__main__":
    asyncio.run(main())
