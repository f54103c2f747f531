"""The real reference registry: 100 manifests from Debian's docker-registry (distribution 2.8).

The registry runs in token mode, trusting the in-process token server's
root certificate. 100 repositories are seeded (an OCI image each, pushed
with plain aiohttp), then their manifests are pulled:

* with aociauth + aiohttp (and with the original's policy, for comparison);
* with bare aiohttp given tokens fetched beforehand: the floor, what no
  client can beat;
* with oras-py, the Python OCI client, doing the pulls its own way
  (synchronous, on ``requests``: one at a time, in a thread so that the
  token server in this process keeps answering).

Registry requests and 401s are counted from the registry's own access log,
token requests by the token server, so every client is counted the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

import aociauth
from aociauth.testing.distribution import DistributionRegistry, find_binary
from aociauth.testing.tokenserver import TokenServer

from ._common import (
    OCI_MANIFEST,
    PASSWORD,
    USER,
    Report,
    Table,
    median,
    ms,
    password_config,
    pull_manifest,
    run_async,
)

NAME = "reference"
TITLE = "The real reference registry (distribution 2.8)"

REPOSITORIES = [f"ref/r{i:03d}" for i in range(100)]
_ACCESS_LINE = re.compile(r'^\S+ - \S+ \[[^\]]*\] "(\w+) (\S+) HTTP/[\d.]+" (\d{3}) ', re.M)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _push_blob(
    session: aiohttp.ClientSession, base: str, repo: str, data: bytes, headers: dict[str, str]
) -> None:
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/", headers=headers) as resp:
        if resp.status != 202:
            raise RuntimeError(f"upload to {repo} answered {resp.status}")
        location = resp.headers["Location"]
    separator = "&" if "?" in location else "?"
    put_headers = {**headers, "Content-Type": "application/octet-stream"}
    url = f"{location}{separator}digest={_digest(data)}"
    async with session.put(url, data=data, headers=put_headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"blob PUT to {repo} answered {resp.status}")


async def _push_image(session: aiohttp.ClientSession, base: str, repo: str, token: str) -> None:
    """A config, a layer and an OCI manifest tagged v1, as a pusher would send them."""
    headers = {"Authorization": f"Bearer {token}"}
    layer = f"layer of {repo}\n".encode()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    ).encode()
    for blob in (config, layer):
        await _push_blob(session, base, repo, blob, headers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _digest(layer),
                "size": len(layer),
            }
        ],
    }
    async with session.put(
        f"{base}/v2/{repo}/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={**headers, "Content-Type": OCI_MANIFEST},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"manifest PUT to {repo} answered {resp.status}")


async def _seed(registry: DistributionRegistry, ts: TokenServer) -> None:
    sem = asyncio.Semaphore(10)
    async with aiohttp.ClientSession() as session:

        async def one(repo: str) -> None:
            access = [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]
            token = ts.issuer.issue(subject=USER, access=access, expires_in=600)
            async with sem:
                await _push_image(session, registry.url, repo, token)

        await asyncio.gather(*(one(r) for r in REPOSITORIES))


async def _prefetch_tokens(ts: TokenServer) -> dict[str, str]:
    """One pull token per repository from the token server, as the floor's client holds them."""
    auth = aiohttp.BasicAuth(USER, PASSWORD)
    tokens = {}
    async with aiohttp.ClientSession() as session:
        for repo in REPOSITORIES:
            params = {"service": ts.service, "scope": f"repository:{repo}:pull"}
            async with session.get(ts.realm, params=params, auth=auth) as resp:
                tokens[repo] = (await resp.json())["token"]
    return tokens


class AccessLog:
    """Counts of the registry's access log lines since :meth:`mark`."""

    def __init__(self, registry: DistributionRegistry) -> None:
        self._registry = registry
        self._seen = 0

    def _lines(self) -> list[tuple[str, str, int]]:
        return [(m[1], m[2], int(m[3])) for m in _ACCESS_LINE.finditer(self._registry.log_text())]

    def mark(self) -> None:
        """Count from here on."""
        self._seen = len(self._lines())

    async def since_mark(self) -> list[tuple[str, str, int]]:
        """The (method, path, status) logged since :meth:`mark`, once the log is quiet."""
        # The registry writes its access line after the response: let the log settle.
        lines = self._lines()
        for _ in range(40):
            await asyncio.sleep(0.05)
            again = self._lines()
            if len(again) == len(lines):
                break
            lines = again
        return lines[self._seen :]


@dataclass
class Outcome:
    """One variant's run."""

    pulled: int
    wall: float
    registry_requests: int
    unauthorized: int
    token_requests: int


Pull = Callable[[], Awaitable[int]]


async def _aociauth_pull(
    registry: DistributionRegistry, params: aociauth.StdTransportParams, concurrent: bool
) -> int:
    mw = aociauth.new_std_transport(params)
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        return await _pull_all(session, registry.url, concurrent)


async def _pull_all(
    session: aiohttp.ClientSession,
    base: str,
    concurrent: bool,
    tokens: dict[str, str] | None = None,
) -> int:
    def headers(repo: str) -> dict[str, str] | None:
        return None if tokens is None else {"Authorization": f"Bearer {tokens[repo]}"}

    if concurrent:
        await asyncio.gather(*(pull_manifest(session, base, r, headers(r)) for r in REPOSITORIES))
    else:
        for repo in REPOSITORIES:
            await pull_manifest(session, base, repo, headers(repo))
    return len(REPOSITORIES)


async def _floor_pull(
    registry: DistributionRegistry, tokens: dict[str, str], concurrent: bool
) -> int:
    async with aiohttp.ClientSession() as session:
        return await _pull_all(session, registry.url, concurrent, tokens)


def _oras_pull(host: str, *, clear_token: bool) -> int:
    """Pull every manifest with one oras-py client, one at a time; return how many came back.

    ``clear_token``: forget the client's token before each pull. oras-py keeps
    one bearer token per client and answers a 401 by sending that same token
    again, so without this every repository after the first fails.
    """
    import oras.provider  # type: ignore[import-untyped]

    # oras-py logs each failed pull at error level; the table counts them instead.
    logging.getLogger("oras.logger").setLevel(logging.CRITICAL)
    client = oras.provider.Registry(hostname=host, insecure=True)
    client.session.trust_env = False  # loopback only: no proxy from the environment
    # A non-empty auth config, so that oras-py does not read this user's docker config.
    client.auth._auth_config = {"auths": {}, "credsStore": None, "credHelpers": {}}
    client.auth.set_basic_auth(USER, PASSWORD)
    pulled = 0
    for repo in REPOSITORIES:
        if clear_token:
            client.auth.token = None
        try:
            manifest = client.get_manifest(f"{host}/{repo}:v1")
        except ValueError:
            continue
        if manifest.get("mediaType") == OCI_MANIFEST:
            pulled += 1
    client.session.close()
    return pulled


async def _measure(log: AccessLog, ts: TokenServer, pull: Pull) -> Outcome:
    log.mark()
    ts.reset_counters()
    started = time.perf_counter()
    pulled = await pull()
    wall = time.perf_counter() - started
    lines = await log.since_mark()
    return Outcome(
        pulled=pulled,
        wall=wall,
        registry_requests=len(lines),
        unauthorized=sum(1 for *_, status in lines if status == 401),
        token_requests=ts.counters.requests,
    )


async def _main(quick: bool) -> Report:
    reps = 3 if quick else 5
    ts = TokenServer(users={USER: PASSWORD})
    async with ts:
        registry = DistributionRegistry(
            auth="token",
            realm=ts.realm,
            service=ts.service,
            issuer=ts.issuer.issuer,
            rootcertbundle=ts.issuer.root_cert_pem,
        )
        async with registry:
            await _seed(registry, ts)
            tokens = await _prefetch_tokens(ts)
            log = AccessLog(registry)
            config = password_config(registry.host, USER, PASSWORD)
            new = aociauth.StdTransportParams(config=config)
            orig = aociauth.StdTransportParams.original_policy(config=config)
            oras_version = _oras_version()
            variants: dict[str, Pull] = {
                "aociauth + aiohttp, 100 at once": lambda: _aociauth_pull(registry, new, True),
                "original policy + aiohttp, 100 at once": lambda: _aociauth_pull(
                    registry, orig, True
                ),
                "floor: aiohttp + tokens fetched before, 100 at once": lambda: _floor_pull(
                    registry, tokens, True
                ),
                "aociauth + aiohttp, one at a time": lambda: _aociauth_pull(registry, new, False),
                "floor: aiohttp + tokens fetched before, one at a time": lambda: _floor_pull(
                    registry, tokens, False
                ),
            }
            if oras_version is not None:
                variants[f"oras-py {oras_version}, one at a time, token cleared per pull"] = (
                    lambda: asyncio.to_thread(_oras_pull, registry.host, clear_token=True)
                )
                variants[f"oras-py {oras_version}, one at a time, as is"] = lambda: (
                    asyncio.to_thread(_oras_pull, registry.host, clear_token=False)
                )
            outcomes: dict[str, list[Outcome]] = {name: [] for name in variants}
            for rep in range(reps):
                names = list(variants) if rep % 2 == 0 else list(reversed(variants))
                for name in names:
                    outcomes[name].append(await _measure(log, ts, variants[name]))
    table = Table(
        f"GET the v1 manifest of {len(REPOSITORIES)} repositories, cold client each run; "
        f"wall: median of {reps}",
        [
            "client",
            "pulled",
            "wall ms",
            "registry requests",
            "401s",
            "token requests",
            "round trips",
        ],
    )
    for name, runs in outcomes.items():
        last = runs[-1]
        table.add(
            name,
            f"{last.pulled}/{len(REPOSITORIES)}",
            ms(median([o.wall for o in runs])),
            last.registry_requests,
            last.unauthorized,
            last.token_requests,
            last.registry_requests + last.token_requests,
        )
    report = Report(NAME, TITLE, [table])
    report.notes.append(
        "Requests and 401s are read from the registry's access log, token requests from the "
        "token server: the same count for every client. oras-py is synchronous (requests), "
        "so it pulls one at a time, in a worker thread."
    )
    if oras_version is None:
        report.notes.append("oras-py is not installed (pip install 'aociauth[bench]'): skipped.")
    else:
        report.notes.append(
            "oras-py keeps one bearer token per client and answers a 401 by sending that same "
            "token again, so one client pulling many repositories fails on every repository "
            "after the first ('as is'); forgetting the token before each pull ('token "
            "cleared') makes it work, at a 401 and a token request per repository."
        )
    return report


def _oras_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("oras")
    except Exception:
        return None


def run(quick: bool) -> Report:
    """Pull from the real registry with each client; ``quick`` repeats fewer times."""
    if find_binary() is None:
        report = Report(NAME, TITLE)
        report.notes.append(
            "skipped: docker-registry (distribution 2.8) is not on PATH "
            "(Debian: apt-get install docker-registry)"
        )
        return report
    result: Report = run_async(_main(quick))
    return result
