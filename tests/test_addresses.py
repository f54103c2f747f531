"""Every spelling of a forbidden address is refused, as a realm literal and as a DNS answer.

The literal check (realm.check_realm) and the connect-time check
(RealmGuardResolver) both ask _addresses.forbidden_address; these tests feed
each the same spellings. DNS answers come from a table resolver; the one
real lookup is the system resolver reading ``0x7f.1``, which needs no network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import yarl
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from aociauth._addresses import (
    AddressKind,
    TrustDecision,
    classify_address,
    embedded_ipv4,
    forbidden_address,
    on_this_machine,
    parse_address,
    parse_inet_aton,
)
from aociauth._resolver import RealmAddressError, RealmGuardResolver
from aociauth._token_sessions import TokenSessions, token_trust
from aociauth.cli import is_loopback, parse_reference
from aociauth.realm import RealmDecision, RealmPolicy, check_realm
from aociauth.testing.client import TableResolver
from aociauth.testing.scripted import ScriptedServer

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

PUBLIC_REGISTRY = yarl.URL("https://registry.example")
LOCAL_REGISTRY = yarl.URL("http://127.0.0.1:5000")
PUBLIC_TRUST = TrustDecision(loopback=False, private=True)
LOCAL_TRUST = TrustDecision(loopback=True, private=True)
UNRESTRICTED = TrustDecision(unrestricted=True)


# -- the ways an IPv6 address carries an IPv4 one ------------------------------


def mapped(v4: V4) -> V6:
    return V6(0xFFFF << 32 | int(v4))


def translated(v4: V4) -> V6:
    return V6(0xFFFF << 48 | int(v4))


def compatible(v4: V4) -> V6:
    return V6(int(v4))


def sixtofour(v4: V4) -> V6:
    return V6(0x2002 << 112 | int(v4) << 80 | 0x1)


def teredo_client(v4: V4) -> V6:
    server = int(V4("65.54.227.120"))
    return V6(0x20010000 << 96 | server << 64 | (int(v4) ^ 0xFFFFFFFF))


def teredo_server(v4: V4) -> V6:
    return V6(0x20010000 << 96 | int(v4) << 64 | (int(V4("8.8.8.8")) ^ 0xFFFFFFFF))


def nat64(v4: V4) -> V6:
    return V6(int(V6("64:ff9b::")) | int(v4))


def nat64_local(length: int) -> Callable[[V4], V6]:
    """RFC 6052 §2.2 embedding after a prefix of ``length`` bits in 64:ff9b:1::/48."""

    def embed(v4: V4) -> V6:
        octets = bytearray(V6("64:ff9b:1::").packed)
        start = length // 8
        positions = [i for i in range(start, 16) if i != 8][:4]
        for pos, byte in zip(positions, v4.packed, strict=True):
            octets[pos] = byte
        return V6(bytes(octets))

    return embed


EMBEDDINGS: dict[str, Callable[[V4], V6]] = {
    "mapped": mapped,
    "translated": translated,
    "compatible": compatible,
    "6to4": sixtofour,
    "teredo-client": teredo_client,
    "teredo-server": teredo_server,
    "nat64": nat64,
    **{f"nat64-local/{n}": nat64_local(n) for n in (48, 56, 64, 96)},
}


# -- the ways inet_aton reads an IPv4 address -----------------------------------


def dotted(v4: V4) -> str:
    return str(v4)


def decimal(v4: V4) -> str:
    return str(int(v4))


def octal(v4: V4) -> str:
    return ".".join(f"0{b:o}" for b in v4.packed)


def hexadecimal(v4: V4) -> str:
    return ".".join(f"0x{b:x}" for b in v4.packed)


def hex_whole(v4: V4) -> str:
    return f"0x{int(v4):X}"


def short(v4: V4) -> str:
    """a.b.c with c 16 bits, as ``127.1`` spells 127.0.0.1."""
    b = v4.packed
    return f"{b[0]}.{b[1]}.{b[2] << 8 | b[3]}"


def hex_short(v4: V4) -> str:
    """a.b with b 24 bits, in hex: ``0x7f.1``."""
    return f"0x{v4.packed[0]:x}.{int(v4) & 0xFFFFFF:#x}"


SPELLINGS: dict[str, Callable[[V4], str]] = {
    "dotted": dotted,
    "decimal": decimal,
    "octal": octal,
    "hex": hexadecimal,
    "hex-whole": hex_whole,
    "short": short,
    "hex-short": hex_short,
}


FORBIDDEN_V4 = {
    "loopback": V4("127.0.0.1"),
    "loopback-other": V4("127.53.0.9"),
    "unspecified": V4("0.0.0.0"),  # noqa: S104 (a destination, not a bind)
    "aws-metadata": V4("169.254.169.254"),
    "ecs-credentials": V4("169.254.170.2"),
    "alibaba-metadata": V4("100.100.100.200"),
    "azure-wireserver": V4("168.63.129.16"),
    "link-local": V4("169.254.1.1"),
    "broadcast": V4("255.255.255.255"),
    "multicast": V4("224.0.0.251"),
    "documentation": V4("192.0.2.10"),
}
PRIVATE_V4 = {"rfc1918": V4("10.1.2.3"), "shared-cgnat": V4("100.64.1.1")}


def test_the_tables_know_what_they_claim() -> None:
    assert classify_address(V4("100.100.100.200")) is AddressKind.METADATA
    assert classify_address(V6("fd00:ec2::254")) is AddressKind.METADATA
    assert classify_address(V6("fd20:ce::254")) is AddressKind.METADATA
    assert classify_address(V4("100.64.0.1")) is AddressKind.PRIVATE
    assert classify_address(V6("fec0::1")) is AddressKind.PRIVATE  # 3.11 says global
    assert classify_address(V6("fe80::1%eth0")) is AddressKind.LINK_LOCAL
    assert classify_address(V4("93.184.216.34")) is AddressKind.PUBLIC
    assert classify_address(V6("2606:4700:4700::1111")) is AddressKind.PUBLIC
    assert classify_address(V6("::1")) is AddressKind.LOOPBACK
    assert classify_address(V6("::")) is AddressKind.UNSPECIFIED


@pytest.mark.parametrize("embedding", sorted(EMBEDDINGS))
@pytest.mark.parametrize("target", sorted(FORBIDDEN_V4))
def test_every_embedding_of_a_forbidden_ipv4_address_is_refused_as_a_literal(
    embedding: str, target: str
) -> None:
    ip = EMBEDDINGS[embedding](FORBIDDEN_V4[target])
    # ::0.0.0.0 is :: itself, unspecified in its own right.
    assert FORBIDDEN_V4[target] in embedded_ipv4(ip) or ip == V6("::")
    verdict = check_realm(PUBLIC_REGISTRY, f"https://[{ip}]/token")
    assert verdict.decision is RealmDecision.REFUSE, (embedding, target, str(ip))
    assert "local or private" in verdict.reason


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("target", sorted(FORBIDDEN_V4))
def test_every_inet_aton_spelling_of_a_forbidden_address_is_refused_as_a_literal(
    spelling: str, target: str
) -> None:
    host = SPELLINGS[spelling](FORBIDDEN_V4[target])
    verdict = check_realm(PUBLIC_REGISTRY, f"https://{host}/token")
    assert verdict.decision is RealmDecision.REFUSE, (spelling, host)


@pytest.mark.parametrize("realm", ["https://[fd00:ec2::254]/", "https://100.100.100.200/"])
def test_metadata_literals_are_refused_even_when_private_realms_are_allowed(realm: str) -> None:
    policy = RealmPolicy(allow_private_realms=True)
    assert check_realm(PUBLIC_REGISTRY, realm, policy).decision is RealmDecision.REFUSE
    # The registry's own host is still its own, wherever it is.
    assert check_realm(yarl.URL(realm), realm + "token").decision is RealmDecision.CREDENTIALS


def test_private_literals_go_only_when_allowed_and_then_anonymously() -> None:
    for ip in [*PRIVATE_V4.values(), *(mapped(v) for v in PRIVATE_V4.values())]:
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        realm = f"https://{host}/token"
        assert check_realm(PUBLIC_REGISTRY, realm).decision is RealmDecision.REFUSE
        allowed = check_realm(PUBLIC_REGISTRY, realm, RealmPolicy(allow_private_realms=True))
        assert allowed.decision is RealmDecision.ANONYMOUS


# -- properties over every address -----------------------------------------------

ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(V4)
trusts = st.builds(TrustDecision, st.booleans(), st.booleans(), st.booleans())


@given(v4=ipv4s, embedding=st.sampled_from(sorted(EMBEDDINGS)), trust=trusts)
# Found by a soak run: the one IPv4-compatible form that is an address of its own.
@example(v4=V4(1), embedding="compatible", trust=TrustDecision(loopback=True))
@example(v4=V4(1), embedding="compatible", trust=TrustDecision())
def test_an_embedding_is_never_allowed_where_its_ipv4_address_is_not(
    v4: V4, embedding: str, trust: TrustDecision
) -> None:
    ip = EMBEDDINGS[embedding](v4)
    if ip == V6("::1"):
        # ::0.0.0.1 is ::1, the IPv6 loopback in its own right, not an embedding of
        # 0.0.0.1 (RFC 4291 2.5.5.1): it goes where loopback may, as a literal ::1 does.
        assert classify_address(ip) is AddressKind.LOOPBACK
        assert (forbidden_address(ip, trust) == "") is (trust.loopback or trust.unrestricted)
        return
    if forbidden_address(v4, trust):
        assert forbidden_address(ip, trust), (embedding, str(ip))


@given(v4=ipv4s, spelling=st.sampled_from(sorted(SPELLINGS)))
def test_inet_aton_spellings_read_as_the_operating_system_reads_them(v4: V4, spelling: str) -> None:
    text = SPELLINGS[spelling](v4)
    assert socket.inet_aton(text) == v4.packed  # what a connect() would reach
    assert parse_inet_aton(text) == v4
    assert parse_address(text) == v4


@given(ip=st.one_of(ipv4s, st.integers(min_value=0, max_value=2**128 - 1).map(V6)), trust=trusts)
def test_the_rule_is_monotonic_in_trust(ip: V4 | V6, trust: TrustDecision) -> None:
    """Granting more never refuses more; metadata is refused under every decision."""
    wider = TrustDecision(True, True, trust.unrestricted)
    if not forbidden_address(ip, trust):
        assert not forbidden_address(ip, wider)
    if classify_address(ip) is AddressKind.METADATA:
        assert forbidden_address(ip, UNRESTRICTED)
    if classify_address(ip) is AddressKind.PUBLIC:
        assert not forbidden_address(ip, TrustDecision())


# -- the same spellings as DNS answers -------------------------------------------


@pytest.mark.parametrize("embedding", sorted(EMBEDDINGS))
@pytest.mark.parametrize("target", sorted(FORBIDDEN_V4))
async def test_every_embedding_is_refused_as_a_dns_answer(embedding: str, target: str) -> None:
    ip = EMBEDDINGS[embedding](FORBIDDEN_V4[target])
    guard = RealmGuardResolver(TableResolver({"realm.test": [str(ip)]}), trust=PUBLIC_TRUST)
    with pytest.raises(RealmAddressError):
        await guard.resolve("realm.test", 443)


@pytest.mark.parametrize(
    "answer",
    ["169.254.169.254", "fd00:ec2::254", "fd20:ce::254", "100.100.100.200", "::ffff:a9fe:a9fe"],
)
async def test_metadata_answers_are_refused_under_every_decision(answer: str) -> None:
    for trust in (PUBLIC_TRUST, LOCAL_TRUST, UNRESTRICTED):
        guard = RealmGuardResolver(TableResolver({"m.test": [answer]}), trust=trust)
        with pytest.raises(RealmAddressError, match="metadata"):
            await guard.resolve("m.test", 80)


async def test_one_bad_answer_among_good_ones_refuses_the_name() -> None:
    table = {"rebind.test": ["93.184.216.34", "10.0.0.1", "::ffff:127.0.0.1"]}
    guard = RealmGuardResolver(TableResolver(table), trust=PUBLIC_TRUST)
    with pytest.raises(RealmAddressError, match="loopback"):
        await guard.resolve("rebind.test", 443)
    allowed = RealmGuardResolver(TableResolver(table), trust=LOCAL_TRUST)
    assert len(await allowed.resolve("rebind.test", 443)) == 3


async def test_an_answer_that_is_not_an_address_is_refused_not_skipped() -> None:
    guard = RealmGuardResolver(TableResolver({"odd.test": ["not-an-ip"]}), trust=PUBLIC_TRUST)
    with pytest.raises(RealmAddressError, match="not an IP address"):
        await guard.resolve("odd.test", 443)


async def test_private_answers_are_allowed_for_names() -> None:
    for ip in PRIVATE_V4.values():
        guard = RealmGuardResolver(TableResolver({"corp.test": [str(ip)]}), trust=PUBLIC_TRUST)
        assert [r["host"] for r in await guard.resolve("corp.test", 443)] == [str(ip)]


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
async def test_an_address_spelt_as_a_name_is_judged_before_any_lookup(spelling: str) -> None:
    host = SPELLINGS[spelling](V4("169.254.169.254"))
    table = TableResolver({host: ["93.184.216.34"]})  # a lying resolver cannot save it
    guard = RealmGuardResolver(table, trust=LOCAL_TRUST)
    with pytest.raises(RealmAddressError):
        await guard.resolve(host, 80)
    assert table.asked == []


async def test_the_system_resolver_reads_hex_spellings_and_the_guard_judges_its_answer() -> None:
    """``0x7f.1`` is not an address to yarl or to aiohttp's ``is_ip_address``, so it
    reaches the resolver, where getaddrinfo makes 127.0.0.1 of it."""
    infos = socket.getaddrinfo("0x7f.1", 80, type=socket.SOCK_STREAM)
    assert {info[4][0] for info in infos} == {"127.0.0.1"}
    with pytest.raises(RealmAddressError, match="loopback"):
        await RealmGuardResolver(trust=PUBLIC_TRUST).resolve("0x7f.1", 80)
    answers = await RealmGuardResolver(trust=LOCAL_TRUST).resolve("0x7f.1", 80)
    assert {a["host"] for a in answers} == {"127.0.0.1"}


def test_token_trust_follows_the_registry_and_the_policy() -> None:
    assert token_trust("127.0.0.1", RealmPolicy()) == LOCAL_TRUST
    assert token_trust("localhost", RealmPolicy()) == LOCAL_TRUST
    assert token_trust("ghcr.io", RealmPolicy()) == PUBLIC_TRUST
    assert token_trust("ghcr.io", RealmPolicy(allow_private_realms=True)) == UNRESTRICTED


@pytest.fixture
async def loopback_server() -> AsyncIterator[ScriptedServer]:
    """A token endpoint on 127.0.0.1 answering ``{"token": "t"}``, recording each request."""

    async def token(request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": "t"})

    async with ScriptedServer(token) as server:
        yield server


def hosts_asked(server: ScriptedServer) -> list[str]:
    """The Host header of every request the server received."""
    return [e.headers["Host"] for e in server.requests]


@pytest.mark.parametrize(
    "host", ["0x7f.1", "0x7f000001", "0x7f.0.0.1", "127.1", "2130706433", "0177.0.0.1"]
)
async def test_a_token_request_to_a_loopback_spelling_never_connects_for_a_public_registry(
    loopback_server: ScriptedServer, host: str
) -> None:
    url = f"http://{host}:{loopback_server.port}/token"
    async with TokenSessions() as sessions:
        with pytest.raises(aiohttp.ClientError):
            async with sessions.session_for(PUBLIC_TRUST).get(url, allow_redirects=False):
                pass
    assert hosts_asked(loopback_server) == []


async def test_hex_loopback_spelling_works_for_a_registry_on_this_machine(
    loopback_server: ScriptedServer,
) -> None:
    # The same request succeeds when loopback is allowed: the refusal above is the rule's.
    url = f"http://0x7f.1:{loopback_server.port}/token"
    async with TokenSessions() as sessions, sessions.session_for(LOCAL_TRUST).get(url) as resp:
        assert resp.status == 200
    assert hosts_asked(loopback_server) == [f"0x7f.1:{loopback_server.port}"]


# -- this machine: one rule for the realm guard and the command line ----------

#: (a URL's host, whether it names this machine)
THIS_MACHINE = [
    ("127.0.0.1", True),
    ("127.200.3.4", True),
    ("127.1", True),  # read as a resolver reads it
    ("0x7f.1", True),
    ("2130706433", True),
    ("::1", True),
    ("::ffff:127.0.0.1", True),
    ("localhost", True),
    ("LocalHost.", True),
    ("registry.localhost", True),
    ("localhost.example", False),
    ("mylocalhost", False),
    ("bad_name!.localhost", False),  # not a host name at all
    ("::", False),
    ("0.0.0.0", False),  # noqa: S104 - a string judged, not a bind
    ("10.0.0.1", False),
    ("2002:7f00:1::", False),  # 6to4 carrying 127.0.0.1 goes through a relay
    ("ghcr.io", False),
    ("", False),
    ("bad host", False),
]


@pytest.mark.parametrize(("host", "local"), THIS_MACHINE)
def test_which_hosts_are_this_machine(host: str, local: bool) -> None:
    assert on_this_machine(host) is local


@pytest.mark.parametrize(("host", "local"), THIS_MACHINE)
def test_the_command_line_calls_loopback_what_the_realm_guard_calls_this_machine(
    host: str, local: bool
) -> None:
    written = f"[{host}]" if ":" in host else host
    assert is_loopback(written) is local
    assert is_loopback(f"{written}:5000") is local
    if (local and written and "." in written.strip(".")) or written.startswith("["):
        scheme = parse_reference(f"{written}:5000/team/app").scheme
        assert scheme == ("http" if local else "https")
