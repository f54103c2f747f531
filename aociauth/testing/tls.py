"""A throwaway certificate authority, for serving https on loopback under any name.

:func:`make_tls` makes a fresh CA and one leaf certificate for the names
given (and ``localhost`` and ``127.0.0.1``), and returns a server context
that presents it and a client context that trusts only that CA. Nothing is
written anywhere but a temporary directory that is gone when it returns.
The test suite's https servers and the registry zoo (:mod:`aociauth.testing.zoo`)
are served with it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aociauth.testing._jwt import key_usage

__all__ = ["TLSContexts", "make_tls"]


@dataclass(frozen=True)
class TLSContexts:
    """A server context for the certificate's names, and a client context trusting its CA.

    ``ca_pem`` is the CA certificate, for a client that wants a file
    (``SSL_CERT_FILE``) rather than a context.
    """

    server: ssl.SSLContext = field(repr=False)
    client: ssl.SSLContext = field(repr=False)
    ca_pem: bytes = field(repr=False)
    names: tuple[str, ...] = ()


def make_tls(names: Iterable[str], *, common_name: str = "aociauth test CA") -> TLSContexts:
    """A fresh CA and a leaf certificate for ``names``, ``localhost`` and 127.0.0.1.

    The certificates live an hour. The CA may sign no other CA
    (``path_length=0``), and each key is new, so nothing this makes is
    trusted outside the process that holds the contexts.
    """
    hosts = tuple(dict.fromkeys(names))
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (*hosts, "localhost")]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf_name = hosts[0] if hosts else "localhost"
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Python 3.13's default context is VERIFY_X509_STRICT: a leaf must name its issuer's key.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file = Path(tmp, "leaf.pem")
        key_file = Path(tmp, "leaf.key")
        cert_file.write_bytes(leaf.public_bytes(pem) + ca_pem)
        key_file.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    return TLSContexts(server, client, ca_pem, hosts)
