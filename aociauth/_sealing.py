"""The shared cache's cryptography: naming entries and sealing them, with a fleet's key.

Pure code, no I/O. From the fleet's 32-byte key, HKDF-SHA256 derives two
independent subkeys: one names things (HMAC-SHA256 of an identity, realm and
resource, so nobody without the key can tell whose entries they are), one
seals entries (AES-256-GCM, with the entry's storage name as associated data,
so an entry moved to another name, or sealed with another key, fails to open).
The sealed payload carries the token, its scope and its expiry: what a token
grants cannot be widened by editing the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aociauth.scope import parse_scope
from aociauth.shared_cache import SharedCacheError, SharedIdentity, SharedToken
from aociauth.tokens import MAX_TOKEN_LENGTH

__all__ = ["KEY_LENGTH", "FleetKeys"]

#: AES-256 and HMAC-SHA256 both want 32 bytes; a fleet key is exactly that.
KEY_LENGTH = 32
_VERSION = b"\x01"
_NONCE_LENGTH = 12  # AES-GCM's standard nonce; random per seal (NIST SP 800-38D 8.2.2)
_NAME_BYTES = 16  # 128 bits of HMAC output: collisions are out of reach
_ENCRYPTION_INFO = b"aociauth shared token cache v1: encryption"
_NAMING_INFO = b"aociauth shared token cache v1: naming"
#: A payload's token, scope and times; scopes run to a few KiB at most.
_MAX_PAYLOAD = MAX_TOKEN_LENGTH + 64 * 1024


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None, info=info).derive(key)


def _frame(*parts: str | bytes) -> bytes:
    """Length-prefixed concatenation: no two different part lists frame alike."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


class FleetKeys:
    """The two subkeys derived from a fleet's key, and what is done with them.

    ``FleetKeys(key)`` refuses a key that is not exactly :data:`KEY_LENGTH`
    bytes with :class:`~aociauth.shared_cache.SharedCacheError`, whose message
    says only the length it got.
    """

    __slots__ = ("_aead", "_naming")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise SharedCacheError(
                f"the shared cache key must be {KEY_LENGTH} bytes, not {type(key).__name__}"
            )
        if len(key) != KEY_LENGTH:
            raise SharedCacheError(
                f"the shared cache key must be exactly {KEY_LENGTH} bytes, not {len(key)}"
            )
        self._aead = AESGCM(_derive(bytes(key), _ENCRYPTION_INFO))
        self._naming = _derive(bytes(key), _NAMING_INFO)

    def __repr__(self) -> str:
        return "<FleetKeys>"

    def name(self, *parts: str | bytes) -> str:
        """A hex name for ``parts``: the same for the same key and parts, opaque to others."""
        mac = hmac.new(self._naming, _frame(*parts), hashlib.sha256).digest()
        return mac[:_NAME_BYTES].hex()

    @staticmethod
    def place(key: str, field: str | bytes) -> bytes:
        """The associated data binding an entry to its key and field in the store."""
        return _frame("entry", key, field)

    def identity_name(self, identity: SharedIdentity) -> str:
        """The name of an identity's partition. Of the secret, only its SHA-256 goes in."""
        digest = hashlib.sha256(identity.secret.encode("utf-8", "surrogatepass")).digest()
        return self.name("identity", identity.registry.lower(), identity.username, digest)

    def seal(self, token: SharedToken, where: bytes) -> bytes:
        """``token`` encrypted and authenticated for storage under the name ``where``."""
        payload = {"v": token.value, "s": str(token.scope), "e": token.expires_at}
        if token.issued_at is not None:
            payload["i"] = token.issued_at
        plain = json.dumps(payload, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_LENGTH)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, _VERSION + where)

    def open(self, blob: bytes, where: bytes) -> SharedToken | None:
        """The token sealed in ``blob`` for the name ``where``, or None when it does not
        authenticate or does not hold a well-formed token."""
        if len(blob) > _MAX_PAYLOAD or not blob.startswith(_VERSION):
            return None
        nonce = blob[1 : 1 + _NONCE_LENGTH]
        if len(nonce) != _NONCE_LENGTH:
            return None
        try:
            plain = self._aead.decrypt(nonce, blob[1 + _NONCE_LENGTH :], _VERSION + where)
        except InvalidTag:
            return None
        return _token(plain)


def _token(plain: bytes) -> SharedToken | None:
    # Authenticated, so written by a holder of the key; still checked, so a
    # bug of another version cannot hand the middleware something unusable.
    try:
        data = json.loads(plain)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    value, scope = data.get("v"), data.get("s")
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_LENGTH:
        return None
    expires = _finite(data.get("e"))
    if not isinstance(scope, str) or expires is None:
        return None
    issued = _finite(data.get("i"))
    return SharedToken(value, parse_scope(scope), expires, issued)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None
