"""The registry zoo: every flow against every emulated registry, each audited.

Each case starts a zoo of one registry (its registry, token server and CDN,
over https on loopback under their real names), runs one flow through the
middleware, and audits every request the zoo received: credentials and
tokens reach only their own registry's hosts, never a CDN.

Flows an open issue explains are strict xfails: they fail today, and turn
into failures the moment the fix lands, so the mark is then removed.
"""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest

from aociauth.testing.zoo import (
    DOCKER_HUB,
    ECR,
    FLOWS,
    GHCR,
    GITLAB,
    HARBOR,
    PROFILES,
    QUAY,
    Flow,
    RegistryProfile,
    Zoo,
    ZooHostError,
    audit,
    format_table,
    pull,
    run_flow,
    run_zoo,
    summarize,
)
from aociauth.testing.zoo.__main__ import main


def _cases() -> list[object]:
    cases: list[object] = []
    for profile in PROFILES:
        for flow in FLOWS:
            if not flow.applies(profile):
                continue
            issue = flow.known_issue(profile)
            marks = [pytest.mark.xfail(strict=True, reason=issue)] if issue else []
            cases.append(pytest.param(profile, flow, id=f"{profile.key}-{flow.name}", marks=marks))
    return cases


@pytest.mark.parametrize("adapter", ["aiohttp", "httpx"])
@pytest.mark.parametrize(("profile", "flow"), _cases())
async def test_flow(profile: RegistryProfile, flow: Flow, adapter: str, tmp_path: Path) -> None:
    async with Zoo([profile], workdir=tmp_path) as zoo:
        outcome = await run_flow(zoo, profile.key, flow, adapter)
        leaks = audit(zoo)
    assert leaks == []
    assert outcome.passed, outcome.detail


def test_no_flow_is_known_to_fail() -> None:
    # Issue 11 items 1 and 2 and the Harbor finding are fixed: a flow that fails again
    # gets a known_issue (and a strict xfail) only with its leaks audited.
    known = [(p.key, f.name) for p in PROFILES for f in FLOWS if f.applies(p) and f.known_issue(p)]
    assert known == []


@pytest.mark.parametrize(
    "profile", [p for p in PROFILES if p.helper_credential is not None], ids=lambda p: p.key
)
async def test_one_middleware_recovers_from_an_expired_helper_credential_without_a_restart(
    profile: RegistryProfile, tmp_path: Path
) -> None:
    # The helper hands out a new credential once the old one expired: the middleware
    # runs it again when the old one is refused, once, and the pull goes through.
    form = profile.helper_credential
    assert form is not None
    namespace = profile.namespaces[0]
    async with Zoo([profile], workdir=tmp_path) as zoo:
        zr = zoo[profile.key]
        config = zoo.load_config(zoo.config_document(profile.key, form))
        zr.seed(f"{namespace}/before")
        zr.seed(f"{namespace}/after")
        async with zoo.client(config) as (mw, session):
            await pull(session, zr, f"{namespace}/before")
            old = zoo.helper_answer(form.helper, form.key)[1]
            zoo.set_helper_answer(form.helper, form.key, form.user, zr.expire(form.user, old))
            await pull(session, zr, f"{namespace}/after")
            await pull(session, zr, f"{namespace}/before")
            assert (mw.stats.helper_runs, mw.stats.credentials_renewed) == (2, 1)
        assert audit(zoo) == []
    assert zoo.helper_runs() == [f"{form.helper} {form.key}"] * 2


async def test_every_zoo_host_is_reached_by_its_real_name_over_verified_tls(
    tmp_path: Path,
) -> None:
    async with Zoo(workdir=tmp_path) as zoo, aiohttp.ClientSession(connector=zoo.connector()) as s:
        for host in zoo.ports:
            async with s.get(f"https://{host}/v2/") as resp:
                assert resp.url.port == 443
                assert resp.status in (200, 401, 404)
        assert {e.host for e in zoo.exchanges} == set(zoo.ports)


async def test_a_client_without_the_zoo_ca_is_refused(tmp_path: Path) -> None:
    async with Zoo([GHCR], workdir=tmp_path) as zoo:
        connector = aiohttp.TCPConnector(resolver=zoo.resolver())
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get("https://ghcr.io/v2/")
        assert zoo.exchanges == []


async def test_the_resolver_refuses_every_name_outside_the_zoo(tmp_path: Path) -> None:
    async with Zoo([GHCR], workdir=tmp_path) as zoo:
        resolver = zoo.resolver()
        connector = aiohttp.TCPConnector(resolver=resolver, ssl=zoo.tls.client if zoo.tls else True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for url in ("https://example.org/", "https://quay.io/v2/", "https://ghcr.io.evil/"):
                with pytest.raises(aiohttp.ClientConnectorError) as caught:
                    await session.get(url)
                assert isinstance(caught.value.os_error, ZooHostError)
        assert resolver.asked == ["example.org", "quay.io", "ghcr.io.evil"]
        with pytest.raises(ZooHostError):
            await resolver.resolve("localhost", 443)


async def test_the_audit_finds_credentials_and_tokens_where_they_must_not_be(
    tmp_path: Path,
) -> None:
    async with Zoo([DOCKER_HUB, GHCR, QUAY], workdir=tmp_path) as zoo:
        hub, ghcr = zoo["dockerhub"], zoo["ghcr"]
        hub_password = hub.users["acmebot"]
        basic = base64.b64encode(f"acmebot:{hub_password}".encode()).decode()
        token = "not-a-token-of-anyone"
        async with aiohttp.ClientSession(connector=zoo.connector()) as s:
            # Docker Hub's password to GHCR's registry, a bearer nobody issued to Quay,
            # a cookie and a secret in the query to the CDN.
            await (
                await s.get("https://ghcr.io/v2/", headers={"Authorization": f"Basic {basic}"})
            ).read()
            await (
                await s.get("https://quay.io/v2/", headers={"Authorization": f"Bearer {token}"})
            ).read()
            cdn = f"https://{DOCKER_HUB.blob_host}/x?sig={hub_password}"
            await (await s.get(cdn, headers={"Cookie": "session=1"})).read()
            # And what is allowed: GHCR's own password to GHCR's token endpoint.
            own = base64.b64encode(f"acme-bot:{ghcr.users['acme-bot']}".encode()).decode()
            await (
                await s.get("https://ghcr.io/token", headers={"Authorization": f"Basic {own}"})
            ).read()
        problems = audit(zoo)
    assert len(problems) == 4, problems
    assert any("ghcr.io/v2/" in p and "Basic credentials of dockerhub" in p for p in problems)
    assert any("quay.io/v2/" in p and "did not issue" in p for p in problems)
    assert any("(a CDN) received Cookie" in p for p in problems)
    assert any("docker.com/x received a secret of dockerhub" in p for p in problems)
    assert not any(hub_password in p for p in problems)


def test_every_registry_cites_its_quirks() -> None:
    assert {p.name for p in PROFILES} == {
        "Docker Hub",
        "GHCR",
        "GCR",
        "Artifact Registry",
        "ECR",
        "ACR",
        "Quay",
        "Harbor",
        "GitLab",
    }
    for profile in PROFILES:
        assert len(profile.quirks) >= 4, profile.name
        assert all(q.what and q.source for q in profile.quirks), profile.name
    assert "no public instance" in HARBOR.note
    assert ECR.auth == "basic"
    assert GITLAB.scope_reading == "last"
    assert QUAY.challenge_scope is False


async def test_the_report_counts_what_the_flows_did(tmp_path: Path) -> None:
    outcomes = await run_zoo(tmp_path, [GHCR, ECR])
    reports = summarize(outcomes, [GHCR, ECR])
    assert [r.registry for r in reports] == ["GHCR", "ECR"]
    ghcr, ecr = reports
    assert (ghcr.passed, ghcr.flows, ghcr.failures, ghcr.leaks) == (6, 6, (), 0)
    assert ghcr.token_requests == sum(o.token_requests for o in outcomes if o.registry == "ghcr")
    # ECR authenticates with Basic on the registry: no token request at all.
    assert (ecr.passed, ecr.flows, ecr.token_requests) == (5, 5, 0)
    assert ecr.failures == ()
    table = format_table(reports)
    assert "| GHCR | 6/6 |" in table
    assert "| ECR | 5/5 |" in table


def test_the_cli_prints_the_table_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--registry", "ecr"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| registry | flows passed | 401s | token requests |")
    assert "| ECR | 5/5 |" in out


def test_the_cli_runs_the_flows_through_both_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--registry", "quay", "--adapter", "both"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Quay")]
    assert [row.split("|")[1].strip() for row in rows] == ["Quay", "Quay (httpx)"]
    # The same flows cost the same through either adapter.
    assert rows[0].split("|")[2:] == rows[1].split("|")[2:]
