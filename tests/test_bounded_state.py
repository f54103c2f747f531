"""Issue 10, item 9: a registry redirecting to ever new hosts does not grow our state.

Every table the core keeps per origin, per identity or per partition is bounded
(least recently used out). At the core, with plain values, 100,000 distinct
redirect targets go through a core with a small ``max_origins``; through the
real middleware, 2,000 distinct host names (all 127.0.0.1 via a resolver) are
reached by redirects from a loopback registry. ``benchmarks/redirect_hosts.py``
shows the memory staying flat.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sized

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from yarl import URL

import aociauth
from aociauth.challenge import Challenge
from aociauth.config import ConfigEntry
from aociauth.core import (
    AuthCore,
    FetchToken,
    FlowPolicy,
    LookupCredentials,
    Reply,
    RequestFacts,
    Resend,
    Send,
    TokenReply,
)

MAX_ORIGINS = 64
CACHE_SIZE = 256


def sizes(core: AuthCore) -> dict[str, int]:
    """The length of every table the core (and its origin table and cache) holds."""
    out: dict[str, int] = {}
    for owner, prefix in ((core, ""), (core.origins, "origins."), (core.cache, "cache.")):
        for name, value in vars(owner).items():
            if isinstance(value, Sized) and not isinstance(value, str | bytes):
                out[prefix + name] = len(value)
    return out


def challenge_line(host: str) -> str:
    return f'Bearer realm="https://{host}/token",service="cdn",scope="repository:a:pull"'


def one_request(core: AuthCore, host: str, challenged: bool, now: float) -> None:
    """A redirected blob GET to ``host`` through the core's request flow, answered from
    plain values: 200 at once, or a Bearer challenge, a token, then 200."""
    facts = RequestFacts("GET", URL(f"https://{host}/v2/a/blobs/sha256:{host}"))
    flow = core.request_flow(facts)
    replies = [Reply(401, (challenge_line(host),)), Reply(200)] if challenged else [Reply(200)]
    value: object = None
    for _ in range(20):
        try:
            effect = core.resume(flow, value, now)
        except StopIteration:
            return
        value = None
        if isinstance(effect, LookupCredentials):
            value = ConfigEntry(username="alice", password=f"pw-{host}")
        elif isinstance(effect, Send | Resend):
            value = replies.pop(0)
        elif isinstance(effect, FetchToken):
            fetch = core.fetch_flow(effect.job)
            answer: object = None
            try:
                while True:
                    core.resume(fetch, answer, now)
                    body = b'{"token":"t-%s","expires_in":300,"refresh_token":"r-%s"}' % (
                        host.encode(),
                        host.encode(),
                    )
                    answer = TokenReply(200, body)
            except StopIteration as stop:
                value = stop.value
            core.fetch_ended(effect.key)
    raise AssertionError(f"the flow for {host} did not end")


def test_100k_redirect_hosts_leave_every_core_table_bounded() -> None:
    core = AuthCore(FlowPolicy(max_origins=MAX_ORIGINS, cache_size=CACHE_SIZE))
    biggest: dict[str, int] = {}
    for i in range(100_000):
        # One host in ten challenges, so identities, partitions, tokens and refresh
        # tokens are made for it; the rest answer at once.
        one_request(core, f"h{i}.cdn.test", challenged=i % 10 == 0, now=float(i) / 1000)
        if i % 997 == 0 or i > 99_990:
            for name, n in sizes(core).items():
                biggest[name] = max(biggest.get(name, 0), n)
    assert len(core.origins) <= MAX_ORIGINS
    for name, n in biggest.items():
        bound = CACHE_SIZE if name.startswith("cache") else 2 * MAX_ORIGINS
        assert n <= bound, f"{name} grew to {n}"
    # Something was learnt and kept: the check is not vacuous.
    assert biggest["origins._states"] == MAX_ORIGINS
    assert biggest["_partitions"] > MAX_ORIGINS // 2
    assert biggest["_refresh"] > 0
    assert biggest["cache._lru"] > 0
