"""The realm policy: who gets credentials, who is asked anonymously, who is never asked.

First the decisions themselves (pure code); then the same policy seen through
the middleware, against loopback servers reached by name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import yarl
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

import aociauth
from aociauth import RealmPolicyError
from aociauth.realm import (
    DEFAULT_TRUSTED_REALMS,
    RealmDecision,
    RealmPolicy,
    RealmVerdict,
    check_realm,
)
from aociauth.testing import Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts
from aociauth.testing.registry import OCI_MANIFEST
from aociauth.testing.scripted import ScriptedServer
from aociauth.testing.tls import TLSContexts

CREDENTIALS = RealmDecision.CREDENTIALS
ANONYMOUS = RealmDecision.ANONYMOUS
REFUSE = RealmDecision.REFUSE
STRICT = RealmPolicy(strict=True)


def decide(registry: str, realm: str, policy: RealmPolicy | None = None) -> RealmDecision:
    verdict = check_realm(yarl.URL(registry), realm, policy or RealmPolicy())
    return verdict.decision


# --- real registries --------------------------------------------------------------------------


@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_names_trust_auth_docker_io(registry: str) -> None:
    verdict = check_realm(yarl.URL(f"https://{registry}"), "https://auth.docker.io/token")
    assert verdict.decision is CREDENTIALS
    assert "auth.docker.io" in verdict.reason
    assert verdict.url == yarl.URL("https://auth.docker.io/token")


def test_docker_hub_pair_holds_without_same_site() -> None:
    policy = RealmPolicy(allow_same_site=False, strict=True)
    assert decide("https://registry-1.docker.io", "https://auth.docker.io/token", policy) is (
        CREDENTIALS
    )


@pytest.mark.parametrize(
    ("registry", "realm"),
    [
        ("https://ghcr.io", "https://ghcr.io/token"),
        ("https://quay.io", "https://quay.io/v2/auth"),
        ("https://gcr.io", "https://gcr.io/v2/token"),
        ("https://us-docker.pkg.dev", "https://us-docker.pkg.dev/v2/token"),
        ("https://myreg.azurecr.io", "https://myreg.azurecr.io/oauth2/token"),
        ("https://harbor.example", "https://harbor.example/service/token"),
        ("https://reg.example:5000", "https://reg.example/token"),
        ("https://reg.example", "https://reg.example:8443/token"),
    ],
)
def test_realm_on_the_registry_host_gets_credentials(registry: str, realm: str) -> None:
    verdict = check_realm(yarl.URL(registry), realm, STRICT)
    assert verdict.decision is CREDENTIALS
    assert "registry's host" in verdict.reason


def test_gitlab_realm_is_the_same_site() -> None:
    verdict = check_realm(yarl.URL("https://registry.gitlab.com"), "https://gitlab.com/jwt/auth")
    assert verdict.decision is CREDENTIALS
    assert "gitlab.com" in verdict.reason


def test_same_site_can_be_turned_off() -> None:
    policy = RealmPolicy(allow_same_site=False)
    assert decide("https://registry.gitlab.com", "https://gitlab.com/jwt/auth", policy) is (
        ANONYMOUS
    )


def test_azurecr_io_is_one_site_in_the_bundled_list() -> None:
    # azurecr.io is not on the public suffix list (neither in its ICANN nor in
    # its private section), so every ACR registry shares the registrable
    # domain azurecr.io, and a same-site realm rule lets foo.azurecr.io aim
    # its own users' credentials at evil.azurecr.io. Only foo's operator (or
    # whoever controls foo's responses, which https rules out) can do that,
    # and ACR's realms are same-host anyway; strict pairs-only users turn
    # allow_same_site off. If a later list adds azurecr.io, this flips to
    # ANONYMOUS and this test says so.
    psl = PublicSuffixList()
    assert psl.privatesuffix("foo.azurecr.io") == "azurecr.io"
    assert psl.privatesuffix("evil.azurecr.io") == "azurecr.io"
    assert decide("https://foo.azurecr.io", "https://evil.azurecr.io/oauth2/token") is CREDENTIALS
    assert (
        decide(
            "https://foo.azurecr.io",
            "https://evil.azurecr.io/oauth2/token",
            RealmPolicy(allow_same_site=False),
        )
        is ANONYMOUS
    )


def test_s3_buckets_are_different_sites() -> None:
    # s3.amazonaws.com is a public suffix (private section): each bucket host
    # is its own site.
    assert PublicSuffixList().publicsuffix("x.s3.amazonaws.com") == "s3.amazonaws.com"
    assert decide("https://x.s3.amazonaws.com", "https://y.s3.amazonaws.com/token") is ANONYMOUS
    assert decide("https://x.s3.amazonaws.com", "https://x.s3.amazonaws.com/token") is CREDENTIALS


def test_private_section_suffixes_separate_sites() -> None:
    assert decide("https://alice.github.io", "https://mallory.github.io/token") is ANONYMOUS


def test_unlisted_suffix_still_has_a_registrable_domain() -> None:
    # "*" is the list's default rule: reg.test's site is reg.test.
    assert decide("https://reg.test", "https://auth.reg.test/token") is CREDENTIALS
    assert decide("https://reg.test", "https://other.test/token") is ANONYMOUS


def test_single_label_names_are_only_their_own_site() -> None:
    assert decide("http://registry", "http://registry:5001/token") is CREDENTIALS
    assert decide("https://registry", "https://auth/token") is ANONYMOUS


def test_ecr_basic_realm_is_its_own_host() -> None:
    registry = "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert decide(registry, f"{registry}/") is CREDENTIALS


# --- security.md (c) group R ------------------------------------------------------------------


def test_t_r1_foreign_realm_is_asked_anonymously_or_refused_in_strict_mode() -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), "https://evil.test/token")
    assert verdict.decision is ANONYMOUS
    assert "evil.test" in verdict.reason
    strict = check_realm(yarl.URL("https://reg.test"), "https://evil.test/token", STRICT)
    assert strict.decision is REFUSE
    assert "evil.test" in strict.reason


def test_t_r2_https_registry_http_realm_never_gets_credentials() -> None:
    # security.md asks for no request at all; BEHAVIOUR.md part 2 goes
    # anonymous by default, and strict refuses.
    verdict = check_realm(yarl.URL("https://reg.test"), "http://reg.test/token")
    assert verdict.decision is ANONYMOUS
    assert "plain http" in verdict.reason
    assert decide("https://reg.test", "http://reg.test/token", STRICT) is REFUSE


@pytest.mark.parametrize(
    "realm",
    [
        # T-R3 as listed.
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest",
        "https://127.0.0.1:9999/",
        "https://[::1]/",
        "http://[::1]:80/",
        "https://0.0.0.0:9999/",
        "http://0.0.0.0/",
        "https://10.0.0.5/",
        "http://10.0.0.1/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:127.0.0.1]/",
        # The same addresses spelt the ways inet_aton reads them.
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0x7F.0.0.1/",
        "https://0177.0.0.1/",
        "https://127.0.0.1./",
        "https://0/",
        "https://0x0/",
        # Other non-public ranges.
        "https://192.168.1.1/",
        "https://172.16.0.1/",
        "https://100.64.0.1/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://[fe80::1]/",
        "https://[fe80::1%25eth0]/",
        "https://[fc00::1]/",
        "https://[::]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[2002:7f00:1::]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[ff02::1]/",
        # Names that are loopback by definition (RFC 6761).
        "https://localhost/",
        "https://LOCALHOST./token",
        "https://api.localhost/token",
    ],
)
def test_t_r3_internal_addresses_are_refused(realm: str) -> None:
    for policy in (RealmPolicy(), STRICT):
        verdict = check_realm(yarl.URL("https://reg.test"), realm, policy)
        assert verdict.decision is REFUSE, realm
        assert "local or private" in verdict.reason


@pytest.mark.parametrize(
    "realm",
    [
        "https://256.1.1.1/",
        "https://1.2.3.4.5/",
        "https://08.0.0.1/",
        "https://0x1g.0.0.1/",
        "https://example.123/",
        "https://4294967296/",
        "https://a b/",
        "https://-reg.example/",
        "https://" + "a" * 64 + ".example/",
        "https://" + ".".join(["a" * 60] * 5) + "/",
    ],
)
def test_hosts_no_resolver_agrees_on_are_refused(realm: str) -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), realm)
    assert verdict.decision is REFUSE
    assert "invalid host" in verdict.reason


@pytest.mark.parametrize(
    "realm",
    [
        "file:///etc/passwd",
        "ftp://reg.test/token",
        "data:text/plain,token",
        "javascript:alert(1)",
        "gopher://reg.test/",
        "ws://reg.test/token",
        "HTTPS+evil://reg.test/",
    ],
)
def test_t_r5_other_schemes_are_refused(realm: str) -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), realm)
    assert verdict.decision is REFUSE
    assert "not http or https" in verdict.reason


@pytest.mark.parametrize("realm", ["", "   ", "/token", "token", "//reg.test/token", "?a=b"])
def test_empty_and_relative_realms_are_refused(realm: str) -> None:
    # A relative realm is resolved by the caller against the registry URL, if
    # at all, before it comes here.
    verdict = check_realm(yarl.URL("https://reg.test"), realm)
    assert verdict.decision is REFUSE
    assert verdict.url == yarl.URL()


@pytest.mark.parametrize(
    "realm",
    [
        "https://alice:pw@auth.test/token",
        "https://user:pw@reg.test/token",
        "https://alice@reg.test/token",
        "https://:pw@reg.test/token",
        "http://alice:pw@127.0.0.1:5000/token",
    ],
)
def test_t_r6_userinfo_is_refused_without_showing_it(realm: str) -> None:
    for policy in (RealmPolicy(), RealmPolicy(allow_private_realms=True)):
        verdict = check_realm(yarl.URL("http://127.0.0.1:5000"), realm, policy)
        assert verdict.decision is REFUSE
        assert "userinfo" in verdict.reason
        assert "pw" not in verdict.reason
        assert "alice" not in verdict.reason


def test_t_r7_loopback_registry_with_its_own_realm() -> None:
    assert decide("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", STRICT) is CREDENTIALS


def test_same_loopback_host_other_port_gets_credentials_over_http() -> None:
    # The distribution harness runs registry and token server on two ports of
    # one loopback address. BEHAVIOUR.md part 2 binds the realm to the host
    # name, any port; security.md's T-R8 would bind host:port instead.
    verdict = check_realm(yarl.URL("http://127.0.0.1:5000"), "http://127.0.0.1:5001/token")
    assert verdict.decision is CREDENTIALS
    assert decide("http://127.0.0.1:5000", "http://127.0.0.1:6379/", STRICT) is CREDENTIALS


def test_internal_realm_of_the_registry_host_itself_is_allowed() -> None:
    assert decide("http://10.0.0.5:5000", "http://10.0.0.5:5001/token") is CREDENTIALS
    assert decide("https://[::1]:5000", "https://[::1]:5001/token") is CREDENTIALS
    assert decide("http://localhost:5000", "http://localhost:5001/token") is CREDENTIALS


def test_same_host_means_the_same_name_not_the_same_address() -> None:
    assert decide("http://localhost:5000", "http://127.0.0.1:5001/token") is REFUSE
    assert decide("http://127.0.0.1:5000", "http://localhost:5001/token") is REFUSE
    assert decide("http://10.0.0.5:5000", "http://10.0.0.6/token") is REFUSE


def test_addresses_are_compared_as_addresses() -> None:
    assert decide("http://127.0.0.1:5000", "http://2130706433:5001/token") is CREDENTIALS
    assert decide("https://[::1]", "https://[0:0::1]/token") is CREDENTIALS


def test_allow_private_realms_lets_the_request_go_but_without_credentials() -> None:
    policy = RealmPolicy(allow_private_realms=True)
    assert decide("https://reg.test", "https://10.0.0.5/token", policy) is ANONYMOUS
    assert decide("http://10.0.0.5:5000", "http://10.0.0.6/token", policy) is ANONYMOUS
    strict_private = RealmPolicy(allow_private_realms=True, strict=True)
    assert decide("https://reg.test", "https://10.0.0.5/token", strict_private) is REFUSE


def test_internal_registry_name_with_same_site_realm() -> None:
    assert decide("https://registry.corp.example", "https://auth.corp.example/token") is (
        CREDENTIALS
    )


def test_t_r9_trusted_pair_gets_credentials() -> None:
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    assert decide("https://reg.test", "https://auth.test/token", policy) is CREDENTIALS


def test_t_r10_trusted_pair_is_not_a_global_allow_list() -> None:
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    assert decide("https://other.test", "https://auth.test/token", policy) is ANONYMOUS
    assert decide("https://evil.example", "https://auth.docker.io/token") is ANONYMOUS
    assert decide("https://evil.example", "https://auth.docker.io/token", STRICT) is REFUSE


def test_trusted_pair_still_needs_https() -> None:
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    assert decide("https://reg.test", "http://auth.test/token", policy) is ANONYMOUS
    assert decide("http://reg.test", "http://auth.test/token", policy) is ANONYMOUS


def test_trusted_pair_does_not_open_internal_addresses() -> None:
    policy = RealmPolicy().with_trusted("reg.test", "127.0.0.1")
    assert decide("https://reg.test", "https://127.0.0.1/token", policy) is REFUSE


# --- http and https ---------------------------------------------------------------------------


def test_plain_http_registry_may_send_credentials_to_its_own_host_over_http() -> None:
    assert decide("http://reg.test:5000", "http://reg.test:5001/token", STRICT) is CREDENTIALS


def test_plain_http_registry_realm_on_another_host_over_http_is_anonymous() -> None:
    verdict = check_realm(yarl.URL("http://reg.test"), "http://auth.reg.test/token")
    assert verdict.decision is ANONYMOUS
    assert "plain http" in verdict.reason


def test_plain_http_registry_with_https_realm_follows_the_host_rules() -> None:
    assert decide("http://reg.test", "https://auth.reg.test/token") is CREDENTIALS
    assert decide("http://reg.test", "https://evil.example/token") is ANONYMOUS


def test_http_realm_for_https_registry_even_on_the_same_host() -> None:
    verdict = check_realm(yarl.URL("https://reg.example"), "http://reg.example/token")
    assert verdict.decision is ANONYMOUS
    assert (
        verdict.reason
        == "realm http://reg.example is plain http but the registry reg.example is not"
    )


# --- host names -------------------------------------------------------------------------------


def test_host_names_compare_without_case_or_trailing_dot() -> None:
    assert decide("https://reg.example", "HTTPS://REG.Example.:443/token", STRICT) is CREDENTIALS
    assert decide("https://REG.example.", "https://reg.example/token", STRICT) is CREDENTIALS


def test_international_names_compare_in_idna_form() -> None:
    assert decide("https://bücher.example", "https://xn--bcher-kva.example/t", STRICT) is (
        CREDENTIALS
    )
    assert decide("https://xn--bcher-kva.example", "https://auth.bücher.example/t") is CREDENTIALS


def test_ip_literals_are_never_same_site_unless_identical() -> None:
    assert decide("https://93.184.216.34", "https://93.184.216.35/token") is ANONYMOUS
    assert decide("https://93.184.216.34", "https://93.184.216.34:8443/token") is CREDENTIALS
    assert decide("https://[2606:2800::1]", "https://[2606:2800::2]/token") is ANONYMOUS


def test_name_and_address_of_a_registry_are_different_hosts() -> None:
    assert decide("https://reg.example", "https://93.184.216.34/token") is ANONYMOUS


# --- the verdict ------------------------------------------------------------------------------


def test_verdict_url_is_the_parsed_realm_with_its_query() -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), "https://reg.test/token?account=a&x=1")
    assert verdict.url == yarl.URL("https://reg.test/token?account=a&x=1")
    assert verdict.url.query["account"] == "a"


def test_verdict_repr_and_reason_hide_path_query_and_userinfo() -> None:
    for realm in (
        "https://evil.test/path-s3cret?token=s3cret#s3cret",
        "https://alice:s3cret@evil.test/t",
        "http://alice:s3cret@169.254.169.254/s3cret",
        "http://169.254.169.254/latest/s3cret?s3cret=1",
    ):
        verdict = check_realm(yarl.URL("https://reg.test"), realm)
        assert "s3cret" not in verdict.reason
        assert "s3cret" not in repr(verdict)


def test_verdict_is_immutable() -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), "https://reg.test/token")
    assert isinstance(verdict, RealmVerdict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.decision = REFUSE


def test_registry_without_host_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="registry URL has no host"):
        check_realm(yarl.URL("/v2/"), "https://reg.test/token")


def test_realm_that_yarl_cannot_parse_is_refused() -> None:
    # "http://[]@" made yarl raise IndexError rather than ValueError.
    for realm in ("https://reg.test:99999/token", "http://[::1/token", "http://[]@"):
        verdict = check_realm(yarl.URL("https://reg.test"), realm)
        assert verdict.decision is REFUSE
        assert verdict.reason == "realm is not a valid URL"


# --- the policy value -------------------------------------------------------------------------


def test_default_policy_is_secure() -> None:
    policy = RealmPolicy()
    assert policy.allow_same_site is True
    assert policy.strict is False
    assert policy.allow_private_realms is False
    assert dict(policy.trusted_realms) == dict(DEFAULT_TRUSTED_REALMS)
    assert policy.trusts("registry-1.docker.io", "auth.docker.io")
    assert not policy.trusts("auth.docker.io", "registry-1.docker.io")


def test_with_trusted_returns_a_new_policy_and_keeps_the_rest() -> None:
    base = RealmPolicy(strict=True, allow_private_realms=True, allow_same_site=False)
    extended = base.with_trusted("Registry.Example.NET.", "gitlab.example.org", "b.example.org")
    assert not base.trusts("registry.example.net", "gitlab.example.org")
    assert extended.trusts("registry.example.net", "GitLab.Example.org.")
    assert extended.trusts("registry.example.net", "b.example.org")
    assert extended.trusts("docker.io", "auth.docker.io")
    assert (extended.strict, extended.allow_private_realms, extended.allow_same_site) == (
        True,
        True,
        False,
    )
    again = extended.with_trusted("registry.example.net", "c.example.org")
    assert again.trusted_realms["registry.example.net"] == frozenset(
        {"gitlab.example.org", "b.example.org", "c.example.org"}
    )


def test_with_trusted_normalises_unicode_names() -> None:
    policy = RealmPolicy().with_trusted("bücher.example", "auth.bücher.example")
    assert policy.trusts("xn--bcher-kva.example", "auth.xn--bcher-kva.example")


@pytest.mark.parametrize("bad", ["", "reg.test:5000", "https://reg.test", "reg.test/path"])
def test_with_trusted_rejects_what_is_not_a_host_name(bad: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        RealmPolicy().with_trusted(bad, "auth.test")
    with pytest.raises(ValueError, match="host name"):
        RealmPolicy().with_trusted("reg.test", bad)


def test_with_trusted_needs_a_realm() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RealmPolicy().with_trusted("reg.test")


def test_trusted_realms_as_a_bare_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set of host names"):
        RealmPolicy(trusted_realms={"reg.test": "auth.test"})


def test_custom_trusted_realms_replace_the_default() -> None:
    policy = RealmPolicy(trusted_realms={"reg.test": {"auth.test"}}, allow_same_site=False)
    assert policy.trusts("reg.test", "auth.test")
    assert not policy.trusts("docker.io", "auth.docker.io")
    assert decide("https://registry-1.docker.io", "https://auth.docker.io/token", policy) is (
        ANONYMOUS
    )


def test_policy_is_an_immutable_hashable_value() -> None:
    a = RealmPolicy().with_trusted("reg.test", "auth.test")
    b = RealmPolicy().with_trusted("REG.test", "auth.test.")
    assert a == b
    assert hash(a) == hash(b)
    assert a != RealmPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.strict = True
    with pytest.raises(TypeError):
        a.trusted_realms["evil.test"] = frozenset({"x"})


def test_policy_does_not_alias_the_callers_mapping() -> None:
    pairs = {"reg.test": {"auth.test"}}
    policy = RealmPolicy(trusted_realms=pairs)
    pairs["reg.test"].add("evil.test")
    pairs["other.test"] = {"evil.test"}
    assert policy.trusted_realms == {"reg.test": frozenset({"auth.test"})}


# --- properties -------------------------------------------------------------------------------

hosts = st.sampled_from(
    [
        "reg.test",
        "auth.reg.test",
        "evil.test",
        "registry-1.docker.io",
        "auth.docker.io",
        "gitlab.com",
        "registry.gitlab.com",
        "127.0.0.1",
        "10.0.0.5",
        "[::1]",
        "169.254.169.254",
        "localhost",
        "93.184.216.34",
        "0x7f.1",
    ]
)
schemes = st.sampled_from(["http", "https"])
ports = st.sampled_from(["", ":5000", ":443"])
policies = st.builds(
    RealmPolicy,
    allow_same_site=st.booleans(),
    strict=st.booleans(),
    allow_private_realms=st.booleans(),
)


@settings(max_examples=400, deadline=1000)
@given(schemes, hosts, ports, schemes, hosts, ports, policies)
def test_invariants_of_every_decision(
    reg_scheme: str,
    reg_host: str,
    reg_port: str,
    realm_scheme: str,
    realm_host: str,
    realm_port: str,
    policy: RealmPolicy,
) -> None:
    registry = yarl.URL(f"{reg_scheme}://{reg_host}{reg_port}/v2/")
    verdict = check_realm(registry, f"{realm_scheme}://{realm_host}{realm_port}/token", policy)
    if policy.strict:
        assert verdict.decision is not ANONYMOUS
    if verdict.decision is CREDENTIALS:
        # Credentials never travel in clear unless the registry itself does,
        # and then only to its own host.
        same_address = {realm_host, reg_host} <= {"127.0.0.1", "0x7f.1"}
        same_host = realm_host == reg_host or same_address
        assert realm_scheme == "https" or (reg_scheme == "http" and same_host)
    if verdict.decision is not REFUSE:
        assert verdict.url.path == "/token"
    assert verdict.reason


@settings(max_examples=500, deadline=1000)
@given(st.text(max_size=200), policies)
def test_arbitrary_realm_text_gets_a_verdict(realm: str, policy: RealmPolicy) -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), realm, policy)
    assert isinstance(verdict.decision, RealmDecision)
    assert len(verdict.reason) < 400


@settings(max_examples=500, deadline=1000)
@given(schemes, st.text(max_size=100), policies)
def test_arbitrary_authority_text_gets_a_verdict(
    scheme: str, rest: str, policy: RealmPolicy
) -> None:
    verdict = check_realm(yarl.URL("https://reg.test"), f"{scheme}://{rest}", policy)
    assert isinstance(verdict.decision, RealmDecision)
    if verdict.decision is not REFUSE:
        assert verdict.url.scheme == scheme
        assert verdict.url.raw_host


CANARY = "Zq9secretZq9"


@settings(max_examples=300, deadline=1000)
@given(
    schemes,
    hosts,
    st.sampled_from(["", f"{CANARY}@", f"u:{CANARY}@", f"{CANARY}:p@"]),
    st.sampled_from(["/token", f"/{CANARY}", f"/t;{CANARY}"]),
    st.sampled_from(["", f"?q={CANARY}", f"?{CANARY}", f"?a=1&b={CANARY}"]),
    st.sampled_from(["", f"#{CANARY}"]),
    policies,
)
def test_reason_never_shows_userinfo_path_or_query(
    scheme: str,
    host: str,
    userinfo: str,
    path: str,
    query: str,
    fragment: str,
    policy: RealmPolicy,
) -> None:
    realm = f"{scheme}://{userinfo}{host}{path}{query}{fragment}"
    verdict = check_realm(yarl.URL("https://reg.test"), realm, policy)
    assert CANARY not in verdict.reason
    assert CANARY not in repr(verdict)
    if userinfo:
        assert verdict.decision is REFUSE


# -- the realm policy through the middleware ------------------------------------------------------
# The realm policy, seen through the middleware: where a challenge may send credentials.
#
# A Bearer challenge names its token endpoint; a hostile registry can name any
# URL. Every server here is 127.0.0.1, reached by the names the test gives it
# (``aociauth.testing.client.LoopbackResolver``), so each test sets up the host relation it
# is about: another host (``reg.test`` -> ``auth.test``), the same site
# (``reg.example.com`` -> ``auth.example.com``), a trusted pair, a downgrade
# to http, an internal address. Each test says what it shows.
# (security.md T-R1..T-R10; BEHAVIOUR.md part 2 "Hardening".)


USER = "alice"
MANIFEST = "/v2/team/app/manifests/latest"

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


@pytest.fixture
async def ts() -> AsyncIterator[TokenServer]:
    async with TokenServer(users={USER: PASSWORD}) as server:
        yield server


async def pull_through(
    ts: TokenServer, realm: str, registry_name: str = "reg.test", **params: object
) -> tuple[int | None, BaseException | None, aociauth.AuthMiddleware, str]:
    """Pull a manifest from a bearer registry on ``registry_name`` whose challenge names ``realm``.

    Returns the status (or the error), the middleware and the registry's ``host:port``.
    """
    async with Registry(auth="bearer", token_server=ts, realm=realm) as reg:
        reg.seed_image("team/app")
        host = f"{registry_name}:{reg.port}"
        config = aociauth.ConfigFile.from_dict(
            {"auths": {host: {"username": USER, "password": PASSWORD}}}
        )
        url = f"http://{host}{MANIFEST}"
        async with loopback_client(config, **params) as (mw, session):
            try:
                async with await asyncio.wait_for(
                    session.get(url, headers={"Accept": OCI_MANIFEST}), BOUND
                ) as r:
                    return r.status, None, mw, host
            except aiohttp.ClientError as exc:
                return None, exc, mw, host


async def test_realm_on_another_host_is_asked_anonymously_with_a_warning(
    ts: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aociauth")
    status, exc, mw, host = await pull_through(ts, f"http://auth.test:{ts.port}/token")
    assert exc is None
    # Anonymous pull is granted, so the pull still works, without alice's password.
    assert status == 200
    assert [(r.kind, r.username) for r in ts.requests] == [("get_anonymous", None)]
    assert mw.stats.anonymous_realm_downgrades == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert host in message
    assert "auth.test" in message
    assert PASSWORD not in caplog.text


async def test_strict_policy_refuses_a_realm_on_another_host(ts: TokenServer) -> None:
    status, exc, _, host = await pull_through(
        ts, f"http://auth.test:{ts.port}/token", realm_policy=RealmPolicy(strict=True)
    )
    assert status is None
    assert isinstance(exc, RealmPolicyError)
    assert isinstance(exc, aociauth.OCIAuthError)
    assert isinstance(exc, aiohttp.ClientError)
    assert exc.registry == host
    assert exc.step == "realm"
    assert "auth.test" in str(exc)
    assert ts.counters.requests == 0
    assert_clean(exception_texts(exc))


@pytest.mark.parametrize(
    ("realm", "why"),
    [
        ("http://alice:{pw}@reg.test:{port}/token", "userinfo"),
        ("http://{pw}@reg.test:{port}/token", "userinfo"),
        ("ftp://reg.test:{port}/token", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:application/json,{{}}", "scheme"),
        ("//reg.test:{port}/token", "absolute"),
    ],
)
async def test_unusable_realms_get_no_request_at_all(ts: TokenServer, realm: str, why: str) -> None:
    """Userinfo (it would be sent as Basic by some clients) and non-http realms are refused.

    The token server behind ``reg.test`` records nothing, and the error names
    the problem without repeating the userinfo.
    """
    status, exc, _, _ = await pull_through(ts, realm.format(pw=PASSWORD, port=ts.port))
    assert isinstance(exc, RealmPolicyError), (status, exc)
    assert why in str(exc)
    assert ts.counters.requests == 0
    assert_clean(exception_texts(exc))


@pytest.mark.parametrize(
    "realm",
    [
        # This one is the real token server: only the refusal keeps the request from it.
        "http://127.0.0.1:{port}/token",
        "http://localhost:{port}/token",
        "http://2130706433:{port}/token",  # 127.0.0.1 as inet_aton reads it
        "http://[::ffff:127.0.0.1]:{port}/token",
        "http://0.0.0.0:{port}/token",
        "http://10.0.0.5/token",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/token",
        "http://[fd00:ec2::254]/token",
    ],
)
async def test_internal_realm_from_a_public_registry_is_refused(
    ts: TokenServer, realm: str
) -> None:
    """reg.example.com is a public name; its challenge may not aim at internal addresses (SSRF).

    Refused before connecting: a RealmPolicyError (not a connection error),
    and the token server listening at 127.0.0.1 records nothing.
    """
    status, exc, _, _ = await pull_through(
        ts, realm.format(port=ts.port), registry_name="reg.example.com"
    )
    assert isinstance(exc, RealmPolicyError), (status, exc)
    assert "local or private" in str(exc)
    assert ts.counters.requests == 0


async def test_relative_realm_is_the_registrys_own_origin() -> None:
    """``realm="/token"`` resolves against the registry (same origin by construction)."""

    async def registry(req: web.Request) -> web.StreamResponse:
        if req.path == "/token":
            return await token_endpoint()(req)
        if req.headers.get("Authorization") == "Bearer tok-alice":
            return web.Response(text="ok")
        challenge = 'Bearer realm="/token",service="svc",scope="repository:team/app:pull"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with ScriptedServer(registry) as reg:
        config = aociauth.ConfigFile.from_dict(
            {"auths": {f"reg.test:{reg.port}": {"username": USER, "password": PASSWORD}}}
        )
        async with (
            loopback_client(config) as (_, session),
            session.get(reg.url_for(MANIFEST, "reg.test")) as r,
        ):
            assert r.status == 200
    assert [s.path for s in reg.requests] == [MANIFEST, "/token", MANIFEST]


async def test_loopback_registry_may_use_its_own_host_but_not_localhost(ts: TokenServer) -> None:
    """A registry at 127.0.0.1 may send its clients to 127.0.0.1 on another port (ggcr #2302),
    not to ``localhost``: a name is not the registry's address, however it resolves."""
    status, exc, _, _ = await pull_through(
        ts, f"http://127.0.0.1:{ts.port}/token", registry_name="127.0.0.1"
    )
    assert (status, exc) == (200, None)
    assert [r.kind for r in ts.requests] == ["get_basic"]
    ts.reset_counters()
    status, exc, _, _ = await pull_through(
        ts, f"http://localhost:{ts.port}/token", registry_name="127.0.0.1"
    )
    assert isinstance(exc, RealmPolicyError)
    assert ts.counters.requests == 0
    # allow_private_realms lifts the address rule only: localhost is still another
    # host over http, so it is asked without credentials.
    status, exc, mw, _ = await pull_through(
        ts,
        f"http://localhost:{ts.port}/token",
        registry_name="127.0.0.1",
        realm_policy=RealmPolicy(allow_private_realms=True),
    )
    assert (status, exc) == (200, None)
    assert [(r.kind, r.username) for r in ts.requests] == [("get_anonymous", None)]
    assert mw.stats.anonymous_realm_downgrades == 1


# -- over https: trusted pairs, same site, downgrades ----------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_endpoint() -> Handler:
    """Hands out ``tok-alice`` for alice's Basic credentials, ``tok-anon`` otherwise."""

    async def handler(req: web.Request) -> web.StreamResponse:
        auth = (
            aiohttp.BasicAuth.decode(req.headers["Authorization"])
            if "Authorization" in req.headers
            else None
        )
        who = (
            "alice"
            if auth is not None and (auth.login, auth.password) == (USER, PASSWORD)
            else "anon"
        )
        return web.json_response({"token": f"tok-{who}"})

    return handler


async def https_pull(
    tls: TLSContexts,
    registry_name: str,
    realm_of: Callable[[int], str],
    config_hosts: dict[str, str] | None = None,
    **params: object,
) -> tuple[int | None, BaseException | None, list[str | None], aociauth.AuthMiddleware]:
    """Pull over https from ``registry_name``; return what the token endpoint was sent.

    The registry answers 200 to any bearer token and 401 with a challenge
    naming ``realm_of(token_port)`` otherwise; the answer is the list of
    Basic users the token endpoint saw (None: anonymous).
    """

    async def registry(req: web.Request) -> web.StreamResponse:
        if req.headers.get("Authorization", "").startswith("Bearer tok-"):
            return web.Response(text=req.headers["Authorization"])
        challenge = (
            f'Bearer realm="{realm_of(tokens.port)}",service="svc",scope="repository:team/app:pull"'
        )
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with (
        ScriptedServer(token_endpoint(), ssl_context=tls.server) as tokens,
        ScriptedServer(registry, ssl_context=tls.server) as reg,
    ):
        host = f"{registry_name}:{reg.port}"
        hosts = config_hosts or {host: PASSWORD}
        config = aociauth.ConfigFile.from_dict(
            {"auths": {h: {"username": USER, "password": pw} for h, pw in hosts.items()}}
        )
        async with loopback_client(config, ssl_context=tls.client, **params) as (mw, session):
            try:
                async with await asyncio.wait_for(
                    session.get(f"https://{host}{MANIFEST}"), BOUND
                ) as r:
                    status: int | None = r.status
                    exc: BaseException | None = None
            except aiohttp.ClientError as e:
                status, exc = None, e
    users = []
    for s in tokens.requests:
        basic = s.header("Authorization")
        users.append(aiohttp.BasicAuth.decode(basic[0]).login if basic else None)
    return status, exc, users, mw


async def test_trusted_pair_gets_credentials_only_when_configured(tls: TLSContexts) -> None:
    realm = lambda port: f"https://auth.test:{port}/token"  # noqa: E731
    status, _, users, _ = await https_pull(tls, "reg.test", realm)
    assert (status, users) == (200, [None])
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    status, _, users, mw = await https_pull(tls, "reg.test", realm, realm_policy=policy)
    assert (status, users) == (200, ["alice"])
    assert mw.stats.anonymous_realm_downgrades == 0


async def test_trusted_pair_is_not_a_trusted_realm_for_other_registries(tls: TLSContexts) -> None:
    """evil.test names reg.test's trusted auth.test: evil.test's own credentials do not go
    there (the confused deputy of oras-dotnet#393); the pair is reg.test's alone."""
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    status, _, users, mw = await https_pull(
        tls, "evil.test", lambda port: f"https://auth.test:{port}/token", realm_policy=policy
    )
    assert (status, users) == (200, [None])
    assert mw.stats.anonymous_realm_downgrades == 1


async def test_same_site_realm_gets_credentials_unless_turned_off(tls: TLSContexts) -> None:
    realm = lambda port: f"https://auth.example.com:{port}/token"  # noqa: E731
    status, _, users, _ = await https_pull(tls, "reg.example.com", realm)
    assert (status, users) == (200, ["alice"])
    status, _, users, _ = await https_pull(
        tls, "reg.example.com", realm, realm_policy=RealmPolicy(allow_same_site=False)
    )
    assert (status, users) == (200, [None])


async def test_http_realm_for_an_https_registry_is_a_downgrade(tls: TLSContexts) -> None:
    """Same host name, but plain http: anonymous (T-R2), or refused in strict mode."""

    async def plain_tokens(req: web.Request) -> web.StreamResponse:
        return await token_endpoint()(req)

    async with ScriptedServer(plain_tokens) as plain:
        realm = lambda _port: f"http://reg.test:{plain.port}/token"  # noqa: E731
        status, _, _, mw = await https_pull(tls, "reg.test", realm)
        assert status == 200
        assert [s.header("Authorization") for s in plain.requests] == [[]]
        assert mw.stats.anonymous_realm_downgrades == 1
        status, exc, _, _ = await https_pull(
            tls, "reg.test", realm, realm_policy=RealmPolicy(strict=True)
        )
        assert isinstance(exc, RealmPolicyError)
        assert "plain http" in str(exc)
        assert len(plain.requests) == 1
