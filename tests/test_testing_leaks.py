"""The leak checks find every planted canary and credential, and pass on clean traffic."""

from __future__ import annotations

import aiohttp
import pytest

from aociauth.testing import RecordingServer, Reply, ScriptedServer
from aociauth.testing.leaks import (
    CANARIES,
    PASSWORD,
    REFRESH_TOKEN,
    assert_clean,
    assert_no_credentials,
    exception_texts,
)


async def test_assert_no_credentials_passes_clean_requests_and_names_each_kind_of_leak() -> None:
    async with (
        ScriptedServer([Reply(200)] * 8) as scripted,
        RecordingServer() as recording,
        aiohttp.ClientSession() as session,
    ):
        for server in (scripted.url_for("/clean"), f"{recording.url}/clean"):
            async with session.get(server, headers={"Accept": "*/*"}):
                pass
        assert_no_credentials(scripted.requests)
        assert_no_credentials(recording.requests)
        leaks = [
            ({"headers": {"Authorization": "Bearer x"}}, "received authorization on GET /a"),
            ({"headers": {"Cookie": "s=1"}}, "received cookie on GET /a"),
            ({"params": {"q": PASSWORD}}, "received a secret on GET /a"),
            ({"data": f"refresh_token={REFRESH_TOKEN[:3]}"}, "received refresh_token="),
        ]
        for kwargs, message in leaks:
            async with session.get(scripted.url_for("/a"), **kwargs):  # type: ignore[arg-type]
                pass
            async with session.get(f"{recording.url}/a", **kwargs):  # type: ignore[arg-type]
                pass
            for requests in (scripted.requests[-1:], recording.requests[-1:]):
                with pytest.raises(AssertionError, match=message) as info:
                    assert_no_credentials(requests, where="the CDN")
                assert str(info.value).startswith("the CDN ")
                assert PASSWORD not in str(info.value)


def test_exception_texts_follow_the_chain_and_assert_clean_finds_any_canary() -> None:
    try:
        try:
            raise KeyError(PASSWORD)
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        text = exception_texts(exc)
    assert "outer" in text
    assert PASSWORD in text  # from the cause
    assert "Traceback" in text
    for canary in CANARIES:
        with pytest.raises(AssertionError, match="a secret") as info:
            assert_clean(f"log line {canary} end")
        assert canary not in str(info.value)
    with pytest.raises(AssertionError):
        assert_clean("the token is tok-123", "tok-123")
    assert_clean("nothing to see", "", "tok-123")
