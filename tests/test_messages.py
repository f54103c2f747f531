"""What a refusal tells the user: whose credentials, from where, or that there were none.

Through the aiohttp middleware, the httpx adapter and the command line, against
a loopback token server and registry, with real config files in a temporary
directory, a credential helper script, and the real ``docker-credential-pass``.
Every test also checks that the password never shows.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio
from test_cli import run_cli

from aociauth import (
    Config,
    ConfigEntry,
    ConfigFile,
    StdTransportParams,
    TokenServerError,
    load_with_env,
    new_std_transport,
)
from aociauth.cli import _login_hint
from aociauth.httpx import RegistryAuth
from aociauth.testing import Registry, TokenServer
from aociauth.testing.passstore import PassStore

PASSWORD = "alice-msgs-password"
WRONG = "wrong-msgs-password"
MANIFEST = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
#: alice may pull and push team/*; anonymous may do nothing.
GRANTS = {"alice": {"repository:team/*": {"pull", "push"}}}
DENIED = "unauthorized response with freshly acquired auth token; "


@dataclass
class Site:
    """A token server and registry, and a directory for the Docker config."""

    ts: TokenServer
    registry: Registry
    home: Path

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def realm_host(self) -> str:
        """The token server as messages name it: host and port."""
        return self.ts.url.split("://", 1)[1]

    @property
    def config_path(self) -> Path:
        return self.home / "docker" / "config.json"

    @property
    def env(self) -> dict[str, str]:
        """An environment whose only configuration source is :attr:`config_path`."""
        drop = {"DOCKER_AUTH_CONFIG", "XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(DOCKER_CONFIG=str(self.config_path.parent), HOME=str(self.home / "home"))
        return env

    def write(self, document: Mapping[str, Any]) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(document))

    def config(self, env: Mapping[str, str] | None = None) -> ConfigFile:
        return load_with_env(env=self.env if env is None else env)

    def manifest_url(self, repository: str = "team/app") -> str:
        return f"{self.registry.url}/v2/{repository}/manifests/v1"


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def _site(tmp_path: Path, *, picky: bool) -> AsyncIterator[Site]:
    # picky: the token server answers 401 to a request for more than it grants (the
    # spec's way); otherwise it grants nothing, and the registry refuses that token.
    async with (
        TokenServer(users={"alice": PASSWORD}, grants=GRANTS, picky=picky) as ts,
        Registry(auth="bearer", token_server=ts) as registry,
    ):
        registry.seed_image("team/app", "v1")
        registry.seed_image("secret/app", "v1")
        yield Site(ts, registry, tmp_path)


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path, picky=False):
        yield s


@pytest_asyncio.fixture
async def picky(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path, picky=True):
        yield s


async def aiohttp_get(config: Config, url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url`` through the middleware: the status and the JSON body."""
    async with (
        new_std_transport(StdTransportParams(config=config)) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
        session.get(url, headers=MANIFEST) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def aiohttp_refusal(config: Config, url: str) -> TokenServerError:
    with pytest.raises(TokenServerError) as info:
        await aiohttp_get(config, url)
    return info.value


def looked_in(config: ConfigFile) -> str:
    return f"looked in {', '.join(config.sources)}"


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert PASSWORD not in str(text)
        assert WRONG not in str(text)


# -- no credentials --------------------------------------------------------------------


async def test_a_denied_token_says_it_was_asked_for_anonymously_for_want_of_credentials(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.write({})
    config = site.config()
    with caplog.at_level(logging.INFO, logger="aociauth"):
        status, body = await aiohttp_get(config, site.manifest_url())
    assert status == 403
    (error,) = body["errors"]
    reason = (
        f"registry {site.host} refused a token asked for anonymously: "
        f"no credentials were found ({looked_in(config)})"
    )
    assert error == {
        "code": "DENIED",
        "message": DENIED + reason,
        "detail": {
            "registry": site.host,
            "anonymous": True,
            "credentials_found": False,
            "username": "",
            "credential_source": looked_in(config),
        },
    }
    assert f"answering 403 DENIED: {reason}" in caplog.messages
    assert site.ts.counters.get_anonymous == 1


async def test_a_token_server_refusing_an_anonymous_request_says_no_credentials_were_found(
    picky: Site,
) -> None:
    picky.write({"auths": {"other.example": {"auth": _auth("alice", PASSWORD)}}})
    config = picky.config()
    exc = await aiohttp_refusal(config, picky.manifest_url())
    assert str(exc) == (
        f"token server {picky.realm_host} answered 401 to an anonymous request for registry "
        f"{picky.host}: no credentials were found ({looked_in(config)})"
    )
    assert (exc.anonymous, exc.credentials_found, exc.username) == (True, False, "")
    assert exc.credential_source == looked_in(config)
    assert (exc.status, exc.registry) == (401, picky.host)


async def test_without_any_config_file_the_message_says_so(picky: Site) -> None:
    config = picky.config()  # nothing written
    assert config.sources == ()
    exc = await aiohttp_refusal(config, picky.manifest_url())
    assert str(exc).endswith(
        "no credentials were found (no Docker or podman config file was found)"
    )


async def test_a_config_of_ones_own_is_named(picky: Site) -> None:
    class Vault:
        async def entry_for_registry(self, host: str) -> ConfigEntry:
            return ConfigEntry()

    exc = await aiohttp_refusal(Vault(), picky.manifest_url())
    assert str(exc).endswith("no credentials were found (the configured Vault had none)")


async def test_an_unreachable_token_server_is_named_with_its_port(tmp_path: Path) -> None:
    async with (
        TokenServer() as ts,
        # The challenge names a realm where nothing listens (port 9, discard).
        Registry(auth="bearer", token_server=ts, realm="http://127.0.0.1:9/token") as registry,
    ):
        exc = await aiohttp_refusal(ConfigFile(), f"{registry.url}/v2/team/app/manifests/v1")
        where = f"token server 127.0.0.1:9 for {registry.host}"
    assert str(exc).startswith(f"{where} could not be reached")
    assert exc.status is None


# -- credentials refused ---------------------------------------------------------------


async def test_a_wrong_password_names_the_user_the_file_the_key_and_the_realms_port(
    site: Site,
) -> None:
    site.write({"auths": {site.host: {"auth": _auth("alice", WRONG)}}})
    exc = await aiohttp_refusal(site.config(), site.manifest_url())
    source = f"config file {site.config_path}, key '{site.host}'"
    assert str(exc) == (
        f"token server {site.realm_host} refused the credentials of user 'alice' for registry "
        f"{site.host} (from {source}): 401"
    )
    assert (exc.username, exc.credential_source) == ("alice", source)
    assert (exc.anonymous, exc.credentials_found) == (False, True)
    assert_no_secret(str(exc), repr(exc), exc.credential_source)
    assert site.ts.counters.unauthorized == site.ts.counters.get_basic == 1


async def test_a_refused_identity_token_is_named_a_refresh_token(site: Site) -> None:
    site.write({"auths": {site.host: {"identitytoken": WRONG}}})
    exc = await aiohttp_refusal(site.config(), site.manifest_url())
    assert str(exc) == (
        f"token server {site.realm_host} refused the refresh token for registry {site.host} "
        f"(from config file {site.config_path}, key '{site.host}'): 401"
    )
    assert_no_secret(str(exc))


async def test_credentials_from_docker_auth_config_are_named_by_the_variable(
    site: Site,
) -> None:
    document = {"auths": {site.host: {"auth": _auth("alice", WRONG)}}}
    env = {**site.env, "DOCKER_AUTH_CONFIG": json.dumps(document)}
    exc = await aiohttp_refusal(site.config(env), site.manifest_url())
    assert f"(from DOCKER_AUTH_CONFIG, key '{site.host}'): 401" in str(exc)
    assert_no_secret(str(exc))


async def test_a_helpers_answer_refused_names_the_helper_and_its_key(
    site: Site, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-msgs"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "url = sys.stdin.read()\n"
        f"print(json.dumps({{'ServerURL': url, 'Username': 'carol', 'Secret': {WRONG!r}}}))\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    site.write({"credHelpers": {site.host: "msgs"}})
    env = {**site.env, "PATH": f"{bin_dir}{os.pathsep}{site.env.get('PATH', '')}"}
    exc = await aiohttp_refusal(site.config(env), site.manifest_url())
    source = f"helper docker-credential-msgs, credHelpers key '{site.host}' of config file " + str(
        site.config_path
    )
    assert str(exc) == (
        f"token server {site.realm_host} refused the credentials of user 'carol' for registry "
        f"{site.host} (from {source}): 401"
    )
    assert exc.credential_source == source
    assert_no_secret(str(exc))


async def test_a_denied_token_issued_to_credentials_names_whose_and_where_from(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.write({"auths": {site.host: {"auth": _auth("alice", PASSWORD)}}})
    with caplog.at_level(logging.INFO, logger="aociauth"):
        status, body = await aiohttp_get(site.config(), site.manifest_url("secret/app"))
    assert status == 403
    (error,) = body["errors"]
    reason = (
        f"registry {site.host} refused a token issued to the credentials of user 'alice' "
        f"(from config file {site.config_path}, key '{site.host}')"
    )
    assert error["message"] == DENIED + reason
    assert error["detail"]["anonymous"] is False
    assert error["detail"]["username"] == "alice"
    assert f"answering 403 DENIED: {reason}" in caplog.messages
    assert_no_secret(json.dumps(body), caplog.text)


# -- the same through httpx --------------------------------------------------------------


async def httpx_get(config: Config, url: str) -> httpx.Response:
    async with (
        RegistryAuth(StdTransportParams(config=config)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        response = await client.get(url, headers=MANIFEST)
        await response.aread()
        return response


async def test_httpx_says_the_same_of_a_token_asked_for_anonymously(site: Site) -> None:
    site.write({})
    config = site.config()
    response = await httpx_get(config, site.manifest_url())
    assert response.status_code == 403
    (error,) = response.json()["errors"]
    assert error["message"] == DENIED + (
        f"registry {site.host} refused a token asked for anonymously: "
        f"no credentials were found ({looked_in(config)})"
    )
    assert error["detail"]["credentials_found"] is False


async def test_httpx_says_the_same_of_a_wrong_password(site: Site) -> None:
    site.write({"auths": {site.host: {"auth": _auth("alice", WRONG)}}})
    with pytest.raises(TokenServerError) as info:
        await httpx_get(site.config(), site.manifest_url())
    assert str(info.value) == (
        f"token server {site.realm_host} refused the credentials of user 'alice' for registry "
        f"{site.host} (from config file {site.config_path}, key '{site.host}'): 401"
    )


# -- the command line -------------------------------------------------------------------


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("aociauth: waiting for ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("aociauth: error: ")
    return lines[0]


async def test_cli_fetch_without_credentials_says_anonymous_and_how_to_log_in(site: Site) -> None:
    site.write({})
    run = await run_cli("fetch", f"{site.host}/team/app:v1", env=site.env)
    assert run.code == 1
    hint = f"; to log in, run `aociauth login {site.host}` or `docker login {site.host}`"
    assert error_line(run.err) == (
        f"aociauth: error: GET {site.manifest_url()}: 403 Forbidden (DENIED: {DENIED}"
        f"registry {site.host} refused a token asked for anonymously: no credentials were "
        f"found (looked in {site.config_path})){hint}"
    )


async def test_cli_token_refused_anonymously_says_how_to_log_in(picky: Site) -> None:
    run = await run_cli("token", f"{picky.host}/team/app", env=picky.env)
    assert run.code == 1
    assert error_line(run.err) == (
        f"aociauth: error: token server {picky.realm_host} answered 401 to an anonymous request "
        f"for registry {picky.host}: no credentials were found (no Docker or podman config file "
        f"was found); to log in, run `aociauth login {picky.host}` or `docker login {picky.host}`"
    )


@pytest.mark.parametrize("command", ["fetch", "token"])
async def test_cli_wrong_password_names_user_file_key_and_realm_port(
    site: Site, command: str
) -> None:
    site.write({"auths": {site.host: {"auth": _auth("alice", WRONG)}}})
    target = f"{site.host}/team/app" + (":v1" if command == "fetch" else "")
    run = await run_cli(command, target, env=site.env)
    assert run.code == 1
    assert error_line(run.err) == (
        f"aociauth: error: token server {site.realm_host} refused the credentials of user "
        f"'alice' for registry {site.host} (from config file {site.config_path}, key "
        f"'{site.host}'): 401"
    )
    assert_no_secret(run.out, run.err)


async def test_cli_credentials_that_lack_access_are_named_without_a_login_hint(
    site: Site,
) -> None:
    site.write({"auths": {site.host: {"auth": _auth("alice", PASSWORD)}}})
    run = await run_cli("fetch", f"{site.host}/secret/app:v1", env=site.env)
    assert run.code == 1
    line = error_line(run.err)
    assert line.endswith(
        f"refused a token issued to the credentials of user 'alice' (from config file "
        f"{site.config_path}, key '{site.host}'))"
    )
    assert "login" not in line
    assert_no_secret(run.out, run.err)


# -- the real docker-credential-pass ---------------------------------------------------------


@pytest.mark.helper_pass
async def test_a_password_from_the_real_docker_credential_pass_refused_names_the_helper(
    site: Site, pass_store: PassStore
) -> None:
    pass_store.store(site.host, "alice", WRONG)
    site.write({"credsStore": "pass"})
    env = {**site.env, **{k: v for k, v in pass_store.env.items() if k != "HOME"}}
    source = f"helper docker-credential-pass, credsStore of config file {site.config_path}"
    exc = await aiohttp_refusal(site.config(env), site.manifest_url())
    assert str(exc) == (
        f"token server {site.realm_host} refused the credentials of user 'alice' for registry "
        f"{site.host} (from {source}): 401"
    )
    assert_no_secret(str(exc))
    # And as the command line says it.
    run = await run_cli("fetch", f"{site.host}/team/app:v1", env=env)
    assert run.code == 1
    assert error_line(run.err).endswith(f"(from {source}): 401")
    assert_no_secret(run.out, run.err)


@pytest.mark.parametrize(
    ("registry", "hint"),
    [
        (
            "reg.example:5000",
            "; to log in, run `aociauth login reg.example:5000` or `docker login reg.example:5000`",
        ),
        ("[::1]:5000", "; to log in, run `aociauth login [::1]:5000` or `docker login [::1]:5000`"),
        # Docker Hub is what both commands log in to without a name.
        ("registry-1.docker.io", "; to log in, run `aociauth login` or `docker login`"),
        # Not a host to put in a command line: no hint rather than a shell line.
        ("reg.example;rm -rf ~", ""),
        ("", ""),
    ],
)
def test_the_login_hint_names_the_registry_as_the_commands_take_it(
    registry: str, hint: str
) -> None:
    assert _login_hint(registry) == hint
