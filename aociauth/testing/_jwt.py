"""Key material and JWTs that the distribution 2.8 registry accepts.

The reference registry (``registry/auth/token/token.go`` in distribution 2.8)
takes the signing key from the token header's ``x5c`` chain, which must chain
to a root in its ``rootcertbundle``. :class:`TokenIssuer` therefore makes a
self-signed root and a leaf signed by it, signs tokens with the leaf key and
puts the leaf certificate in ``x5c``. :meth:`TokenIssuer.verify` checks a token
the way that registry does, so the in-process fakes and the real registry
agree on what a valid token is.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from aociauth.tokens import decode_jwt_segment

__all__ = ["Algorithm", "TokenIssuer"]

Algorithm = Literal["ES256", "RS256"]

# distribution's token.Leeway: exp and nbf are each allowed this much slack.
DEFAULT_LEEWAY = 60.0

_P256_COORDINATE_BYTES = 32
_VERIFIED_CACHE_LIMIT = 10_000

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(part: str) -> bytes:
    try:
        return decode_jwt_segment(part)
    except ValueError as exc:
        raise ValueError("token segment is not base64url") from exc


def _json_segment(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(part))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise ValueError(f"token {what} is not a JSON object")
    return value


def _new_key(algorithm: Algorithm) -> _PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signature, plus certificate and CRL signing for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_certificates(
    root_key: _PrivateKey, leaf_key: _PrivateKey
) -> tuple[x509.Certificate, x509.Certificate]:
    # notBefore a day back so that clock skew between this process and a
    # registry subprocess can never make the chain "not yet valid".
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=365)
    root_name = _name("aociauth test root CA")
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            key_usage(ca=True),
            critical=True,
        )
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("aociauth test token signer"))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(ca=False),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return root, leaf


class TokenIssuer:
    """Signs and verifies registry bearer tokens (JWTs) with fresh test keys.

    Each instance makes a new self-signed root CA and a leaf signing
    certificate issued by it. Give :attr:`root_cert_pem` to a registry as its
    ``rootcertbundle``, with :attr:`issuer` and :attr:`service` as its
    ``issuer`` and ``service``; it then accepts every token :meth:`issue`
    makes. ``algorithm`` picks the key type: ``"ES256"`` (P-256) or
    ``"RS256"`` (RSA 2048).
    """

    def __init__(
        self,
        *,
        issuer: str = "aociauth-test-issuer",
        service: str = "aociauth-test-registry",
        algorithm: Algorithm = "ES256",
    ) -> None:
        if algorithm not in ("ES256", "RS256"):
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        self.issuer = issuer
        self.service = service
        self.algorithm: Algorithm = algorithm
        root_key = _new_key(algorithm)
        self._leaf_key = _new_key(algorithm)
        self._root_cert, self._leaf_cert = _make_certificates(root_key, self._leaf_key)
        self.root_cert_pem: bytes = self._root_cert.public_bytes(serialization.Encoding.PEM)
        """The root CA certificate in PEM: the registry's ``rootcertbundle``."""
        self.leaf_cert_pem: bytes = self._leaf_cert.public_bytes(serialization.Encoding.PEM)
        """The leaf (signing) certificate in PEM."""
        leaf_der = self._leaf_cert.public_bytes(serialization.Encoding.DER)
        self._x5c = [base64.b64encode(leaf_der).decode("ascii")]
        self._verified: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(issuer={self.issuer!r}, service={self.service!r}, "
            f"algorithm={self.algorithm!r})"
        )

    def issue(
        self,
        *,
        subject: str,
        access: Sequence[Mapping[str, object]],
        expires_in: int,
        audience: str | None = None,
        now: float | None = None,
    ) -> str:
        """Return a signed compact JWS granting ``access`` to ``subject``.

        ``access`` is the token spec's list of ``{"type", "name", "actions"}``.
        ``audience`` defaults to :attr:`service`; ``now`` (seconds since the
        epoch) defaults to the current time. The time claims are integers,
        because distribution 2.8 decodes them into ``int64``.
        """
        issued_at = int(time.time() if now is None else now)
        header = {"typ": "JWT", "alg": self.algorithm, "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service if audience is None else audience,
            "exp": issued_at + int(expires_in),
            "nbf": issued_at,
            "iat": issued_at,
            "jti": secrets.token_hex(16),
            "access": [dict(entry) for entry in access],
        }
        signing_input = (
            _b64url_encode(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._sign(signing_input.encode("ascii"))
        return signing_input + "." + _b64url_encode(signature)

    def verify(
        self, token: str, *, leeway: float = DEFAULT_LEEWAY, now: float | None = None
    ) -> dict[str, Any]:
        """Check ``token`` as distribution 2.8 does and return its claims.

        The signature must come from a key whose ``x5c`` certificate chains
        to this issuer's root; ``iss`` must equal :attr:`issuer`; ``aud`` must
        be a string equal to :attr:`service`; ``exp`` and ``nbf`` each get
        ``leeway`` seconds. Raises :class:`ValueError` on anything invalid.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signed(token)
            if len(self._verified) >= _VERIFIED_CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = claims
        self._check_times(claims, leeway, time.time() if now is None else now)
        return dict(claims)

    def _sign(self, data: bytes) -> bytes:
        key = self._leaf_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            # JWS wants the raw r||s form, not DER (RFC 7518 section 3.4).
            return r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(
                _P256_COORDINATE_BYTES, "big"
            )
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _verify_signed(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("token is not a compact JWS")
        header = _json_segment(parts[0], "header")
        claims = _json_segment(parts[1], "claims")
        if header.get("alg") != self.algorithm:
            raise ValueError(f"token algorithm {header.get('alg')!r} is not {self.algorithm}")
        leaf = self._leaf_from_x5c(header.get("x5c"))
        self._check_signature(leaf, f"{parts[0]}.{parts[1]}".encode("ascii"), parts[2])
        if claims.get("iss") != self.issuer:
            raise ValueError("token issuer is not trusted")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience != self.service:
            raise ValueError("token audience is not this service")
        for name in ("exp", "nbf"):
            if type(claims.get(name)) is not int:
                raise ValueError(f"token {name} claim is not an integer")
        return claims

    def _leaf_from_x5c(self, x5c: object) -> x509.Certificate:
        if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
            raise ValueError("token header has no x5c certificate chain")
        try:
            leaf = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("token x5c certificate is unreadable") from exc
        try:
            leaf.verify_directly_issued_by(self._root_cert)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ValueError("token x5c certificate does not chain to the root") from exc
        now = datetime.datetime.now(datetime.timezone.utc)
        for cert in (leaf, self._root_cert):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise ValueError("token x5c certificate chain is outside its validity")
        return leaf

    def _check_signature(self, leaf: x509.Certificate, signing_input: bytes, sig: str) -> None:
        signature = _b64url_decode(sig)
        public_key = leaf.public_key()
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                if len(signature) != 2 * _P256_COORDINATE_BYTES:
                    raise ValueError("token ES256 signature has the wrong length")
                r = int.from_bytes(signature[:_P256_COORDINATE_BYTES], "big")
                s = int.from_bytes(signature[_P256_COORDINATE_BYTES:], "big")
                public_key.verify(
                    encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256())
                )
            elif isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise ValueError("token x5c certificate has an unsupported key type")
        except InvalidSignature as exc:
            raise ValueError("token signature is invalid") from exc

    @staticmethod
    def _check_times(claims: Mapping[str, Any], leeway: float, now: float) -> None:
        if now > claims["exp"] + leeway:
            raise ValueError("token has expired")
        if now < claims["nbf"] - leeway:
            raise ValueError("token is not valid yet")
