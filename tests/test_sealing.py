"""The shared cache's cryptography: keys, names and sealed entries (pure code, no I/O)."""

from __future__ import annotations

import json
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("cryptography", reason="the shared cache needs cryptography (extra redis)")

from aociauth import OCIAuthError, parse_scope
from aociauth._sealing import KEY_LENGTH, FleetKeys
from aociauth.shared_cache import SharedCacheError, SharedIdentity, SharedToken

KEY = bytes(range(32))
TOKEN = SharedToken("eyJ.tok.en", parse_scope("repository:team/app:pull,push"), 2e9, 1.9e9)
PLACE = FleetKeys.place("aociauth:{x}:b:y", b"1:ab")


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_key_of_any_other_length_is_refused_without_echoing_it(size: int) -> None:
    # Bytes no message can hold by chance ("be" of "must be" is a one-byte key's hex).
    key = bytes([0xF7] * size)
    with pytest.raises(SharedCacheError) as caught:
        FleetKeys(key)
    assert isinstance(caught.value, OCIAuthError)
    assert str(KEY_LENGTH) in str(caught.value)
    for shown in (str(caught.value), repr(caught.value)):
        assert key.hex() not in shown or not key
        assert repr(key) not in shown or not key


def test_text_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(SharedCacheError) as caught:
        FleetKeys("x" * 32)  # type: ignore[arg-type]
    assert "x" * 8 not in str(caught.value)


def test_repr_shows_no_key() -> None:
    assert repr(FleetKeys(KEY)) == "<FleetKeys>"


def test_sealed_token_opens_at_its_place_only() -> None:
    keys = FleetKeys(KEY)
    blob = keys.seal(TOKEN, PLACE)
    assert keys.open(blob, PLACE) == TOKEN
    assert keys.open(blob, FleetKeys.place("aociauth:{x}:b:y", b"2:ab")) is None
    assert keys.open(blob, FleetKeys.place("aociauth:{x}:b:z", b"1:ab")) is None


def test_sealed_token_does_not_open_with_another_key() -> None:
    blob = FleetKeys(KEY).seal(TOKEN, PLACE)
    assert FleetKeys(secrets.token_bytes(32)).open(blob, PLACE) is None


def test_seal_holds_nothing_in_the_clear() -> None:
    blob = FleetKeys(KEY).seal(TOKEN, PLACE)
    for clear in (b"eyJ.tok.en", b"team/app", b"pull"):
        assert clear not in blob


def test_each_seal_is_fresh() -> None:
    keys = FleetKeys(KEY)
    assert keys.seal(TOKEN, PLACE) != keys.seal(TOKEN, PLACE)


@pytest.mark.parametrize("index", [0, 1, 12, 13, -1])
def test_any_flipped_byte_is_refused(index: int) -> None:
    keys = FleetKeys(KEY)
    blob = bytearray(keys.seal(TOKEN, PLACE))
    blob[index] ^= 0x01
    assert keys.open(bytes(blob), PLACE) is None


def test_names_depend_on_key_and_every_part() -> None:
    a, b = FleetKeys(KEY), FleetKeys(secrets.token_bytes(32))
    assert a.name("bucket", "x", "y") == a.name("bucket", "x", "y")
    assert a.name("bucket", "x", "y") != b.name("bucket", "x", "y")
    # Framed, not joined: moving a boundary gives another name.
    assert a.name("bucket", "xy", "") != a.name("bucket", "x", "y")
    assert len(a.name("bucket")) == 32


def test_identity_names_differ_in_every_field() -> None:
    keys = FleetKeys(KEY)
    base = SharedIdentity("ghcr.io", "alice", "s3cret")
    others = [
        SharedIdentity("docker.io", "alice", "s3cret"),
        SharedIdentity("ghcr.io", "bob", "s3cret"),
        SharedIdentity("ghcr.io", "alice", "other"),
        SharedIdentity("ghcr.io", "", ""),
    ]
    names = {keys.identity_name(i) for i in [base, *others]}
    assert len(names) == 5
    # Host names are case-insensitive (RFC 4343).
    assert keys.identity_name(SharedIdentity("GHCR.io", "alice", "s3cret")) == keys.identity_name(
        base
    )


def _sealed_plain(keys: FleetKeys, plain: bytes) -> bytes:
    # Seal arbitrary plaintext the way seal() does, to test what open() accepts.
    nonce = secrets.token_bytes(12)
    return b"\x01" + nonce + keys._aead.encrypt(nonce, plain, b"\x01" + PLACE)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1]",
        json.dumps({"v": "", "s": "repository:a:pull", "e": 2e9}).encode(),
        json.dumps({"v": "t", "s": 5, "e": 2e9}).encode(),
        json.dumps({"v": "t", "s": "x", "e": True}).encode(),
        json.dumps({"v": "t", "s": "x", "e": "2e9"}).encode(),
        b'{"v": "t", "s": "x", "e": 1' + b"0" * 400 + b"}",
        b'{"v": "t", "s": "x", "e": NaN}',
    ],
)
def test_authentic_but_malformed_payloads_are_refused(payload: bytes) -> None:
    keys = FleetKeys(KEY)
    assert keys.open(_sealed_plain(keys, payload), PLACE) is None


@given(st.binary(max_size=200))
def test_open_never_raises(blob: bytes) -> None:
    assert FleetKeys(KEY).open(blob, PLACE) is None


def test_shared_values_hide_their_secrets() -> None:
    identity = SharedIdentity("ghcr.io", "alice", "hunter2-secret")
    assert "hunter2" not in repr(identity)
    assert "hunter2" not in str(identity)
    assert "eyJ.tok.en" not in repr(TOKEN)
