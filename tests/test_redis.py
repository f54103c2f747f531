"""The shared token cache on a real ``redis-server``: lookups, secrecy, faults, single flight.

Each test starts its own empty Redis (persistence off) on a free loopback port
with :class:`aociauth.testing.redis.RedisServer`; they skip where Debian's
``redis-server`` is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import pytest_asyncio

from aociauth.testing.redis import RedisClusterServers, RedisServer, find_redis_server

redis = pytest.importorskip("redis", reason="the shared cache needs redis-py (extra redis)")

from redis.asyncio import Redis  # noqa: E402

from aociauth import parse_scope  # noqa: E402
from aociauth.redis import MAX_FIELDS, MAX_INDEXED_RESOURCES, RedisTokenStore  # noqa: E402
from aociauth.scope import Scope  # noqa: E402
from aociauth.shared_cache import (  # noqa: E402
    SharedCacheError,
    SharedIdentity,
    SharedToken,
    SharedTokenStore,
    shared_fetch,
)

pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not on PATH: apt-get install redis-server",
)

KEY = bytes(range(32))
ALICE = SharedIdentity("ghcr.io", "alice", "alice-password-123")
REALM = "https://ghcr.io/token"
PASSWORD = "redis-password-456"
#: The call timeout of tests that count fetches: a timeout counts as an outage and
#: adds fetches, rightly, and a loaded CI machine can stall an event loop for seconds.
GENEROUS = 10.0

#: The ACL of docs/fleet.md ("Redis access control"), for a single Redis.
FLEET_ACL = (
    "on >fleet-user-password resetkeys ~aociauth:* resetchannels -@all "
    "+get +set +exists +hgetall +evalsha +script|load +ping +select "
    "+hset +hkeys +hdel +pttl +pexpire +del"
)
#: What docs/fleet.md adds for Redis Cluster: topology discovery.
CLUSTER_ACL = "+cluster|slots +command"


def token(scope: str, life: float = 300.0, value: str = "tok-abc.def") -> SharedToken:
    now = time.time()
    return SharedToken(value, parse_scope(scope), now + life, now)


def scope_of(repository: str) -> Scope:
    return parse_scope(f"repository:{repository}:pull")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with RedisServer(password=PASSWORD) as srv:
        yield srv


StoreFactory = Callable[..., RedisTokenStore]


@pytest_asyncio.fixture
async def stores(server: RedisServer) -> AsyncIterator[StoreFactory]:
    """Make stores on ``server`` (each with its own client, like separate processes)."""
    made: list[RedisTokenStore] = []

    def make(**kwargs: Any) -> RedisTokenStore:
        kwargs.setdefault("key", KEY)
        store = RedisTokenStore.from_url(server.url, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest_asyncio.fixture
async def raw(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


async def dump(client: Redis) -> dict[bytes, dict[bytes, bytes] | bytes]:
    """Every key in Redis with its value (fields of hashes)."""
    out: dict[bytes, dict[bytes, bytes] | bytes] = {}
    async for key in client.scan_iter(match="*"):
        if await client.type(key) == b"hash":
            out[key] = await client.hgetall(key)
        else:
            out[key] = await client.get(key)
    return out


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_from_url_refuses_a_key_of_the_wrong_length(size: int) -> None:
    key = secrets.token_bytes(size)
    # Port 9 (discard): nothing is contacted before the key is checked.
    with pytest.raises(SharedCacheError) as caught:
        RedisTokenStore.from_url("redis://127.0.0.1:9/0", key=key)
    assert "32" in str(caught.value)
    if key:
        assert key.hex() not in str(caught.value)


@pytest.mark.parametrize("prefix", ["", "a{b}", "with space"])
def test_from_url_refuses_an_unusable_prefix(prefix: str) -> None:
    with pytest.raises(SharedCacheError):
        RedisTokenStore.from_url("redis://127.0.0.1:9/0", key=KEY, prefix=prefix)


async def test_store_is_a_shared_token_store(stores: StoreFactory) -> None:
    store = stores()
    assert isinstance(store, SharedTokenStore)


async def test_repr_and_log_name_no_password(
    server: RedisServer, stores: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores()
    assert PASSWORD not in repr(store)
    assert server.host in repr(store)
    caplog.set_level(logging.DEBUG, logger="aociauth")
    await server.kill()
    assert await store.get(ALICE, REALM, scope_of("a")) is None
    assert caplog.records
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


# --- lookups ---------------------------------------------------------------------------


async def test_token_is_found_for_each_resource_it_grants(stores: StoreFactory) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull repository:b:pull,push"))
    for wanted in [
        "repository:a:pull",
        "repository:b:push",
        "repository:a:pull repository:b:pull",
        "repository:b:pull,push",
    ]:
        found = await store.get(ALICE, REALM, parse_scope(wanted))
        assert found is not None, wanted
        assert found.value == "tok-abc.def"
    for wanted in ["repository:a:push", "repository:c:pull", "repository:a:pull repository:c:pull"]:
        assert await store.get(ALICE, REALM, parse_scope(wanted)) is None, wanted
    # The empty scope takes any token of the realm.
    assert await store.get(ALICE, REALM, Scope()) is not None
    assert store.stats.hits == 5
    assert store.stats.misses == 3
    assert store.stats.writes == 1


async def test_another_process_reads_what_one_wrote(stores: StoreFactory) -> None:
    writer, reader = stores(), stores()
    written = token("repository:a:pull")
    await writer.put(ALICE, REALM, written)
    found = await reader.get(ALICE, REALM, scope_of("a"))
    assert found == written


async def test_identities_and_realms_share_nothing(stores: StoreFactory) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull"))
    for identity, realm in [
        (SharedIdentity("docker.io", "alice", ALICE.secret), REALM),
        (SharedIdentity("ghcr.io", "bob", ALICE.secret), REALM),
        (SharedIdentity("ghcr.io", "alice", "another-password"), REALM),
        (SharedIdentity("ghcr.io", "", ""), REALM),
        (ALICE, "https://other.example/token"),
    ]:
        assert await store.get(identity, realm, scope_of("a")) is None, (identity, realm)
    assert await store.get(ALICE, REALM, scope_of("a")) is not None


async def test_fleet_keys_share_nothing(stores: StoreFactory, raw: Redis) -> None:
    ours, theirs = stores(), stores(key=secrets.token_bytes(32))
    await ours.put(ALICE, REALM, token("repository:a:pull", value="ours"))
    keys_before = set(await dump(raw))
    assert await theirs.get(ALICE, REALM, scope_of("a")) is None
    await theirs.put(ALICE, REALM, token("repository:a:pull", value="theirs"))
    keys_after = set(await dump(raw))
    assert len(keys_after - keys_before) == len(keys_before) == 2
    found = await ours.get(ALICE, REALM, scope_of("a"))
    assert found is not None
    assert found.value == "ours"


async def test_redis_holds_nothing_in_the_clear(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:team/app:pull,push", value="tok-SECRETVALUE"))
    async with store.fetch_lock(ALICE, REALM, scope_of("team/app")):
        contents = await dump(raw)
    assert len(contents) == 3  # the repository's bucket, the realm's "any" bucket, the lock
    everything = b""
    for key, value in contents.items():
        everything += key
        if isinstance(value, dict):
            for field, blob in value.items():
                everything += field + blob
        else:
            everything += value
    for clear in ["tok-SECRETVALUE", "alice", ALICE.secret, "ghcr.io", REALM, "team/app", "push"]:
        assert clear.encode() not in everything, clear


async def test_longest_lived_token_wins_and_buckets_stay_small(
    stores: StoreFactory, raw: Redis
) -> None:
    store = stores()
    for i in range(10):
        await store.put(ALICE, REALM, token("repository:a:pull", life=100 + i, value=f"t{i}"))
    found = await store.get(ALICE, REALM, scope_of("a"))
    assert found is not None
    assert found.value == "t9"
    for value in (await dump(raw)).values():
        assert isinstance(value, dict)
        assert len(value) == MAX_FIELDS


async def test_a_token_of_many_repositories_is_indexed_by_its_first_ones(
    stores: StoreFactory, raw: Redis
) -> None:
    store = stores()
    many = " ".join(f"repository:r{i:02d}:pull" for i in range(MAX_INDEXED_RESOURCES + 8))
    await store.put(ALICE, REALM, token(many))
    assert len(await dump(raw)) == MAX_INDEXED_RESOURCES + 1  # and the realm's "any" bucket
    assert await store.get(ALICE, REALM, scope_of(f"r{MAX_INDEXED_RESOURCES - 1:02d}"))
    assert await store.get(ALICE, REALM, scope_of(f"r{MAX_INDEXED_RESOURCES:02d}")) is None


# --- nothing readable, nothing forgeable ---------------------------------------------------


async def test_tampered_entry_is_ignored_and_counted(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull"))
    for key in list(await dump(raw)):
        for field, blob in (await raw.hgetall(key)).items():
            flipped = bytearray(blob)
            flipped[len(flipped) // 2] ^= 0x40
            await raw.hset(key, field, bytes(flipped))
    assert await store.get(ALICE, REALM, scope_of("a")) is None
    assert await store.get(ALICE, REALM, Scope()) is None
    assert store.stats.rejected_entries == 2


async def test_entry_moved_to_another_identity_is_ignored(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    bob = SharedIdentity("ghcr.io", "bob", "bob-password")
    await store.put(ALICE, REALM, token("repository:a:pull", value="alices"))
    alice_keys = set(await dump(raw))
    await store.put(bob, REALM, token("repository:a:pull", life=60, value="bobs"))
    bob_keys = set(await dump(raw)) - alice_keys
    # Copy every entry of Alice's into every bucket of Bob's, keeping field names.
    for source in alice_keys:
        for field, blob in (await raw.hgetall(source)).items():
            for target in bob_keys:
                await raw.hset(target, field, blob)
    found = await store.get(bob, REALM, scope_of("a"))
    assert found is not None
    assert found.value == "bobs"
    assert store.stats.rejected_entries == 1  # Alice's entry in the bucket read


async def test_entry_moved_to_another_resource_is_ignored(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull", value="for-a"))
    keys_a = set(await dump(raw))
    await store.put(ALICE, REALM, token("repository:b:pull", value="for-b"))
    (bucket_b,) = [k for k in set(await dump(raw)) - keys_a]
    (bucket_a,) = [k for k in keys_a if k != bucket_b and len(await raw.hgetall(k)) == 1]
    await raw.delete(bucket_b)
    for field, blob in (await raw.hgetall(bucket_a)).items():
        await raw.hset(bucket_b, field, blob)
    assert await store.get(ALICE, REALM, scope_of("b")) is None
    assert store.stats.rejected_entries == 1


async def test_renamed_field_cannot_extend_a_token(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull"))
    for key in list(await dump(raw)):
        for field, blob in (await raw.hgetall(key)).items():
            expires, rest = field.split(b":", 1)
            await raw.hdel(key, field)
            await raw.hset(key, str(int(expires) + 10**9).encode() + b":" + rest, blob)
    assert await store.get(ALICE, REALM, scope_of("a")) is None
    assert store.stats.rejected_entries == 1


async def test_entry_sealed_with_another_key_is_ignored(stores: StoreFactory, raw: Redis) -> None:
    ours, forger = stores(), stores(key=secrets.token_bytes(32))
    await ours.put(ALICE, REALM, token("repository:a:pull", value="real"))
    ours_keys = set(await dump(raw))
    await forger.put(ALICE, REALM, token("repository:a:pull repository:a:push", value="forged"))
    forged_keys = set(await dump(raw)) - ours_keys
    # Put the forger's entries under our names, fields and all.
    for source in forged_keys:
        for field, blob in (await raw.hgetall(source)).items():
            for target in ours_keys:
                await raw.hset(target, field, blob)
    found = await ours.get(ALICE, REALM, scope_of("a"))
    assert found is not None
    assert found.value == "real"
    assert await ours.get(ALICE, REALM, parse_scope("repository:a:push")) is None
    assert ours.stats.rejected_entries == 2


# --- expiry ----------------------------------------------------------------------------------


async def test_keys_expire_with_the_token(stores: StoreFactory, raw: Redis) -> None:
    store = stores()
    await store.put(ALICE, REALM, token("repository:a:pull repository:b:pull", life=120))
    contents = await dump(raw)
    assert len(contents) == 3
    for key in contents:
        ttl = await raw.pttl(key)
        assert 110_000 < ttl <= 120_000


async def test_a_token_near_its_expiry_is_not_handed_out(stores: StoreFactory, raw: Redis) -> None:
    now = [1_000_000_000.0]
    store = stores(clock=lambda: now[0], expiry_margin=5.0)
    await store.put(ALICE, REALM, SharedToken("t", scope_of("a"), now[0] + 60, now[0]))
    now[0] += 54
    assert await store.get(ALICE, REALM, scope_of("a")) is not None
    now[0] += 2  # 4 s left: within the margin, though Redis still holds it
    assert await store.get(ALICE, REALM, scope_of("a")) is None
    assert len(await dump(raw)) == 2


async def test_a_token_about_to_expire_is_not_written(stores: StoreFactory, raw: Redis) -> None:
    store = stores(expiry_margin=5.0)
    await store.put(ALICE, REALM, token("repository:a:pull", life=4))
    await store.put(ALICE, REALM, token("repository:a:pull", life=-10))
    assert await dump(raw) == {}
    assert store.stats.writes == 0


async def test_expired_fields_are_dropped_on_write(stores: StoreFactory, raw: Redis) -> None:
    now = [time.time()]
    store = stores(clock=lambda: now[0])
    await store.put(ALICE, REALM, SharedToken("old", scope_of("a"), now[0] + 30, now[0]))
    now[0] += 40
    await store.put(ALICE, REALM, SharedToken("new", scope_of("a"), now[0] + 30, now[0]))
    for value in (await dump(raw)).values():
        assert isinstance(value, dict)
        assert len(value) == 1


# --- faults ------------------------------------------------------------------------------------


async def test_dead_redis_is_harmless_and_logged_once(
    server: RedisServer, stores: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(backoff=0.01, max_backoff=0.01)
    await store.put(ALICE, REALM, token("repository:a:pull"))
    assert await store.get(ALICE, REALM, scope_of("a")) is not None
    caplog.set_level(logging.WARNING, logger="aociauth")
    await server.kill()
    for i in range(10):
        assert await store.get(ALICE, REALM, scope_of("a")) is None
        await store.put(ALICE, REALM, token(f"repository:r{i}:pull"))
        async with store.fetch_lock(ALICE, REALM, scope_of("a")) as mine:
            assert mine is True
        await anyio.sleep(0.012)  # past the back-off: Redis is tried again, and fails again
    assert store.stats.outages == 1
    assert store.stats.errors >= 10
    assert store.stats.writes == 1
    warnings = [r for r in caplog.records if r.name == "aociauth.redis"]
    assert len(warnings) == 1
    assert "going on without it" in warnings[0].getMessage()


async def test_stalled_redis_costs_one_timeout_then_is_skipped(
    server: RedisServer, stores: StoreFactory
) -> None:
    store = stores(timeout=0.1, backoff=30.0, max_backoff=30.0)
    await store.put(ALICE, REALM, token("repository:a:pull"))
    server.pause()
    try:
        # One 0.1 s timeout, then nothing waits on Redis (the bound leaves room for a
        # loaded machine; the counts below are the proof).
        with anyio.fail_after(5):
            assert await store.get(ALICE, REALM, scope_of("a")) is None
            for _ in range(20):
                assert await store.get(ALICE, REALM, scope_of("a")) is None
                await store.put(ALICE, REALM, token("repository:a:pull"))
                async with store.fetch_lock(ALICE, REALM, scope_of("a")) as mine:
                    assert mine is True
    finally:
        server.resume()
    assert store.stats.errors == 1
    assert store.stats.skipped == 60
    assert store.stats.outages == 1


async def test_redis_coming_back_is_picked_up(
    server: RedisServer, stores: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(backoff=0.02, max_backoff=0.02)
    caplog.set_level(logging.WARNING, logger="aociauth")
    await server.kill()
    assert await store.get(ALICE, REALM, scope_of("a")) is None
    await server.start()
    attempts = 0
    while store.stats.writes == 0 and attempts < 200:
        attempts += 1
        await store.put(ALICE, REALM, token("repository:a:pull"))
        await anyio.sleep(0.01)
    assert store.stats.writes == 1
    assert await store.get(ALICE, REALM, scope_of("a")) is not None
    messages = [r.getMessage() for r in caplog.records if r.name == "aociauth.redis"]
    assert len(messages) == 2
    assert "answers again" in messages[1]
    assert store.stats.outages == 1


# --- single flight ------------------------------------------------------------------------


class CountingFetch:
    """A token fetch that takes 50 ms and counts, for one scope."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def __call__(self, repository: str) -> Callable[[], Any]:
        async def fetch() -> SharedToken:
            self.counts[repository] = self.counts.get(repository, 0) + 1
            await asyncio.sleep(0.05)
            return token(f"repository:{repository}:pull", value=f"tok-{repository}")

        return fetch


REPOSITORIES = [f"team/r{i:02d}" for i in range(20)]


async def test_concurrent_callers_fetch_each_scope_once(stores: StoreFactory) -> None:
    processes = [stores(timeout=GENEROUS) for _ in range(8)]
    counts: dict[str, int] = {}
    fetcher = CountingFetch(counts)

    async def one(store: RedisTokenStore, repository: str) -> None:
        got, _ = await shared_fetch(store, ALICE, REALM, scope_of(repository), fetcher(repository))
        assert got.value == f"tok-{repository}"

    async with anyio.create_task_group() as tg:
        for store in processes:
            for repository in REPOSITORIES:
                tg.start_soon(one, store, repository)
    assert sum(s.stats.errors for s in processes) == 0
    assert counts == dict.fromkeys(REPOSITORIES, 1)
    assert sum(s.stats.lock_acquired for s in processes) >= 20
    assert sum(s.stats.lock_waits for s in processes) > 0
    assert sum(s.stats.lock_timeouts for s in processes) == 0


async def test_a_refresh_is_not_handed_the_token_it_replaces(stores: StoreFactory) -> None:
    one, other = stores(), stores()
    current = token("repository:a:pull", life=100, value="current")
    await one.put(ALICE, REALM, current)
    counts: dict[str, int] = {}
    fetcher = CountingFetch(counts)
    for store in (one, other):  # the second refresher takes the first one's new token
        got, _ = await shared_fetch(
            store, ALICE, REALM, scope_of("a"), fetcher("a"), fresher_than=current.expires_at
        )
        assert got.value == "tok-a"
    assert counts == {"a": 1}
    # Without fresher_than, the longest-lived token is found.
    got, fetched = await shared_fetch(other, ALICE, REALM, scope_of("a"), fetcher("a"))
    assert got.value == "tok-a"
    assert not fetched


async def test_failed_fetch_releases_the_lock(stores: StoreFactory) -> None:
    store, other = stores(), stores()

    async def failing_fetch() -> SharedToken:
        raise RuntimeError("token server said no")

    with pytest.raises(RuntimeError):
        await shared_fetch(store, ALICE, REALM, scope_of("a"), failing_fetch)
    assert store.stats.lock_acquired == 1
    async with other.fetch_lock(ALICE, REALM, scope_of("a")) as mine:
        assert mine
    assert other.stats.lock_waits == 0


def _pull_everything(url: str, counter: str, ready: Any, go: Any, use_lock: bool) -> None:
    """One fleet process: its own event loop and store, the same 20 scopes as the others."""

    async def main() -> None:
        store = RedisTokenStore.from_url(url, key=KEY, timeout=GENEROUS)
        client = Redis.from_url(url)

        def fetcher(repository: str) -> Callable[[], Any]:
            async def fetch() -> SharedToken:
                await client.incr(counter)
                await asyncio.sleep(0.05)
                return token(f"repository:{repository}:pull", value=f"tok-{repository}")

            return fetch

        async def one(repository: str) -> None:
            scope = scope_of(repository)
            if use_lock:
                await shared_fetch(store, ALICE, REALM, scope, fetcher(repository))
            elif await store.get(ALICE, REALM, scope) is None:
                await store.put(ALICE, REALM, await fetcher(repository)())

        ready.set()
        go.wait(30)
        async with anyio.create_task_group() as tg:
            for repository in REPOSITORIES:
                tg.start_soon(one, repository)
        await client.aclose()
        await store.aclose()

    asyncio.run(main())


def run_fleet(url: str, counter: str, processes: int, *, use_lock: bool) -> None:
    """Start ``processes`` fleet processes, release them together, wait for them."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(processes)]
    procs = [
        ctx.Process(target=_pull_everything, args=(url, counter, ready, go, use_lock))
        for ready in readies
    ]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            assert ready.wait(60), "a fleet process did not start"
        go.set()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


@pytest.mark.slow
async def test_four_cold_processes_fetch_each_scope_once(server: RedisServer, raw: Redis) -> None:
    await anyio.to_thread.run_sync(lambda: run_fleet(server.url, "fetches", 4, use_lock=True))
    assert int(await raw.get("fetches")) == 20


def _crash_holding_lock(url: str, lock_ttl: float) -> None:
    """Take the fetch lock, then die without releasing it."""

    async def main() -> None:
        store = RedisTokenStore.from_url(url, key=KEY, lock_ttl=lock_ttl)
        lock = store.fetch_lock(ALICE, REALM, scope_of("a"))
        assert await lock.__aenter__()
        os._exit(0)

    asyncio.run(main())


@pytest.mark.slow
async def test_crashed_lock_holder_stalls_nobody_past_the_lock(
    server: RedisServer, stores: StoreFactory, raw: Redis
) -> None:
    lock_ttl = 1.0
    ctx = multiprocessing.get_context("spawn")
    crasher = ctx.Process(target=_crash_holding_lock, args=(server.url, lock_ttl))
    await anyio.to_thread.run_sync(lambda: (crasher.start(), crasher.join(60)))
    assert crasher.exitcode == 0
    # The waiters' own lock_ttl bounds how long each polls: longer than the dead
    # holder's, so that on a loaded machine the three who lose the race for the freed
    # lock still see the winner's token instead of giving up and fetching themselves
    # (3 fetches were seen with 1 s each, under a load of 7).
    processes = [stores(lock_ttl=3 * lock_ttl) for _ in range(4)]
    assert await raw.pttl(processes[0].lock_key(ALICE, REALM, scope_of("a"))) > 0
    counts: dict[str, int] = {}
    fetcher = CountingFetch(counts)
    # The lock's life, one fetch and polls, and room for a loaded machine.
    with anyio.fail_after(lock_ttl + 4):
        async with anyio.create_task_group() as tg:
            for store in processes:
                tg.start_soon(shared_fetch, store, ALICE, REALM, scope_of("a"), fetcher("a"))
    assert counts == {"a": 1}
    assert sum(s.stats.lock_waits for s in processes) >= 4
    assert sum(s.stats.lock_timeouts for s in processes) == 0


async def test_waiter_gives_up_on_a_lock_that_is_never_released(
    server: RedisServer, stores: StoreFactory, raw: Redis
) -> None:
    store = stores(lock_ttl=0.3)
    key = store.lock_key(ALICE, REALM, scope_of("a"))
    await raw.set(key, "someone", px=10_000)  # longer than this store's lock_ttl allows for
    with anyio.fail_after(5):
        async with store.fetch_lock(ALICE, REALM, scope_of("a")) as mine:
            assert mine is True
    assert store.stats.lock_timeouts == 1
    assert await raw.get(key) == b"someone"  # not ours: not released


# --- Redis Cluster -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli (redis-tools) missing")
async def test_works_on_a_redis_cluster_with_the_documented_acl() -> None:
    async with RedisClusterServers() as cluster:
        for node in cluster.nodes:
            acl = f"{FLEET_ACL} {CLUSTER_ACL}".split()
            assert (await node.command("ACL", "SETUSER", "fleet", *acl)).startswith(b"+OK")
        url = f"redis://fleet:fleet-user-password@{cluster.nodes[0].host}/0"
        # Three clients in one loop on a shared CI machine.
        stores = [
            RedisTokenStore.from_url(url, key=KEY, cluster=True, timeout=GENEROUS) for _ in range(3)
        ]
        try:
            counts: dict[str, int] = {}
            fetcher = CountingFetch(counts)
            identities = [SharedIdentity("ghcr.io", f"user{i}", "pw") for i in range(6)]
            async with anyio.create_task_group() as tg:
                for store in stores:
                    for identity in identities:
                        tg.start_soon(
                            shared_fetch, store, identity, REALM, scope_of("a"), fetcher("a")
                        )
            assert sum(s.stats.errors for s in stores) == 0
            assert counts == {"a": len(identities)}
            found = await stores[0].get(identities[0], REALM, scope_of("a"))
            assert found is not None
            # The identities' keys are spread over the cluster's nodes.
            holding = 0
            for node in cluster.nodes:
                holding += (await node.command("DBSIZE")) != b":0\r\n"
            assert holding >= 2
        finally:
            for store in stores:
                await store.aclose()


# --- Redis ACLs ----------------------------------------------------------------------------


async def test_documented_acl_is_enough(server: RedisServer) -> None:
    reply = await server.command("ACL", "SETUSER", "fleet", *FLEET_ACL.split())
    assert reply.startswith(b"+OK"), reply
    url = f"redis://fleet:fleet-user-password@{server.host}/0"
    store = RedisTokenStore.from_url(url, key=KEY)
    try:
        await store.put(ALICE, REALM, token("repository:a:pull"))
        assert await store.get(ALICE, REALM, scope_of("a")) is not None
        got, fetched = await shared_fetch(
            store, ALICE, REALM, scope_of("b"), CountingFetch({})("b")
        )
        assert fetched
        assert await store.get(ALICE, REALM, scope_of("b")) == got
        assert store.stats.errors == 0
        # And nothing outside the prefix.
        other = RedisTokenStore.from_url(url, key=KEY, prefix="elsewhere")
        try:
            await other.put(ALICE, REALM, token("repository:a:pull"))
            assert other.stats.errors == 1
        finally:
            await other.aclose()
    finally:
        await store.aclose()


async def test_shared_fetch_without_redis_just_fetches(
    server: RedisServer, stores: StoreFactory
) -> None:
    store = stores()
    await server.kill()
    counts: dict[str, int] = {}
    fetcher = CountingFetch(counts)
    for _ in range(3):
        got, fetched = await shared_fetch(store, ALICE, REALM, scope_of("a"), fetcher("a"))
        assert fetched
        assert got.value == "tok-a"
    assert counts == {"a": 3}
    assert store.stats.outages == 1


async def test_the_holder_releases_its_lock_even_in_the_back_off(
    server: RedisServer, stores: StoreFactory, raw: Redis
) -> None:
    # One slow call puts the store in its back-off; the lock it holds must still go
    # when it leaves, or every other process waits the lock's whole lifetime.
    store = stores(timeout=0.2, backoff=30.0, max_backoff=30.0, lock_ttl=60.0)
    scope = scope_of("team/app")
    async with store.fetch_lock(ALICE, REALM, scope) as mine:
        assert mine
        assert await raw.exists(store.lock_key(ALICE, REALM, scope)) == 1
        server.pause()
        try:
            assert await store.get(ALICE, REALM, scope) is None
        finally:
            server.resume()
        assert store.stats.outages == 1
    assert await raw.exists(store.lock_key(ALICE, REALM, scope)) == 0


async def test_a_burst_waiting_for_a_connection_is_not_an_outage(stores: StoreFactory) -> None:
    # Thousands of lookups through one connection: the last waits far longer than the
    # call timeout for its turn, while no call itself is slow. Counted against the
    # timeout, such a burst tripped the circuit and lost its writes; queued in the
    # store, none times out.
    store = stores(timeout=0.5, max_connections=1)
    calls = 4000
    results = await asyncio.gather(*(store.get(ALICE, REALM, scope_of("a")) for _ in range(calls)))
    assert results == [None] * calls
    assert store.stats.errors == 0
    assert store.stats.outages == 0
    assert store.stats.misses == calls
