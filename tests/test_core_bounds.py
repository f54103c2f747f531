"""What the core keeps per origin and per partition stays bounded, with plain values.

A registry (or whoever answers in its name) chooses the hosts it redirects to,
and a credential helper the credentials it hands out: every table the core
keeps of them is bounded by ``FlowPolicy.max_origins`` (twice that for what is
kept per partition), the least recent entry out first, and what is kept for a
partition goes with it. Driven with the helpers of test_core_flow.
"""

from __future__ import annotations

from test_core_flow import CREDS, drive, get, identity, job, ok, run_fetch
from test_core_renewal import RENEWED, helper
from yarl import URL

from aociauth.config import ConfigEntry
from aociauth.core import AuthCore, FlowPolicy, LookupCredentials, TokenReply
from aociauth.core.origin import Answered


def user(n: int) -> ConfigEntry:
    return ConfigEntry(username=f"u{n}", password="p")


def test_identities_are_kept_for_max_origins_origins() -> None:
    core = AuthCore(FlowPolicy(max_origins=2))
    lookups = []
    for n in (1, 2, 1):
        run = drive(core, get(base=URL(f"https://r{n}.example")))
        lookups.append(len(run.of(LookupCredentials)))
    assert lookups == [1, 1, 0]  # both remembered
    drive(core, get(base=URL("https://r3.example")))
    assert len(core._identities) == 2


def test_past_the_bound_a_partition_goes_with_what_is_kept_for_it() -> None:
    core = AuthCore(FlowPolicy(max_origins=1))  # room for two partitions
    granted, refused = job(core, entry=user(0)), job(core, entry=user(1))
    p0, p1 = granted.identity.partition, refused.identity.partition
    run_fetch(core, granted, [ok("T0", refresh_token="RT0")])
    run_fetch(core, refused, [TokenReply(401)])
    assert core.refresh_token(granted.identity) == "RT0"
    assert (p0 in core._asked_as, p1 in core._refused_creds) == (True, True)
    identity(core, user(2))  # p0 out, with its refresh token and how it asked
    assert len(core._partitions) == 2
    assert core.refresh_token(granted.identity) == ""  # the config's, again
    assert p0 not in core._asked_as
    assert p1 in core._refused_creds
    identity(core, user(3))  # p1 out, with its refusal
    assert p1 not in core._refused_creds
    assert len(core._partitions) == 2


def test_refresh_tokens_of_evicted_partitions_are_kept_least_recently_set_out() -> None:
    # A fetch may end after its partition was evicted: what it learnt is kept, bounded.
    core = AuthCore(FlowPolicy(max_origins=1))
    j0, j1, j2 = (job(core, entry=user(n)) for n in range(3))  # j0's partition evicted
    for j, rt in ((j0, "RT0"), (j1, "RT1"), (j0, "RT0b"), (j2, "RT2")):
        run_fetch(core, j, [ok(refresh_token=rt)])
    assert core.refresh_token(j0.identity) == "RT0b"  # set again: kept
    assert core.refresh_token(j1.identity) == ""  # the least recently set: out
    assert core.refresh_token(j2.identity) == "RT2"


def test_refused_credentials_are_kept_per_partition_and_forgotten_once_granted() -> None:
    core = AuthCore(FlowPolicy(max_origins=1))
    j0, j1 = job(core, entry=user(0)), job(core, entry=user(1))
    run_fetch(core, j0, [TokenReply(403)])
    assert set(core._refused_creds) == {j0.identity.partition}
    run_fetch(core, j0, [ok()])
    assert set(core._refused_creds) == set()
    run_fetch(core, j0, [TokenReply(401)])
    run_fetch(core, j1, [TokenReply(401)])
    assert set(core._refused_creds) == {j1.identity.partition}


def test_renewals_are_remembered_for_max_origins_origins() -> None:
    core = AuthCore(FlowPolicy(max_origins=2, helper_rerun_interval=60.0))

    def renew(n: int) -> int:
        """Refuse the current credentials of origin n: how many lookups that made."""
        st = core.origins.apply(core.origin_of(URL(f"https://r{n}.example")), Answered())
        ident = core._identities.get((st.key, "")) or core.adopt(st, "", helper(CREDS))
        gen = core.renewed(st, ident)
        lookups = 0
        value: object = None
        while True:
            try:
                effect = gen.send(value)
            except StopIteration:
                return lookups
            assert isinstance(effect, LookupCredentials)
            lookups += 1
            value = helper(RENEWED)

    assert [renew(n) for n in (1, 2)] == [1, 1]
    assert [renew(n) for n in (1, 2)] == [0, 0]  # within the interval, both
    assert renew(3) == 1
    assert len(core._renewals) == 2
