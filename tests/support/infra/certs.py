"""A throwaway certificate authority for TLS tests: a CA, a server certificate for
127.0.0.1/localhost and a client certificate, as PEM files in a directory.

:func:`make_broker_pki` writes the larger set a TLS/mTLS Kafka listener and its clients need
(a PEM keystore for the broker, an encrypted client key, an unrelated second CA)."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BrokerPki", "TestPki", "make_broker_pki", "make_pki"]

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TestPki:
    """Paths of the PEM files ``make_pki`` wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, password: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if password is None
        else serialization.BestAvailableEncryption(password))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed CA when ``issuer`` is None, else a leaf."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                       critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_pki(directory: Path) -> TestPki:
    """Write a CA, a server cert (127.0.0.1, localhost) and a client cert into ``directory``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("govpipe test CA", ca_key, None, None)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    issuer = (ca.subject, ca_key)
    server = _issue("127.0.0.1", server_key, issuer, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("govpipe", client_key, issuer, ExtendedKeyUsageOID.CLIENT_AUTH)
    return TestPki(
        ca_cert=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client.key"),
    )


@dataclass(frozen=True, slots=True)
class BrokerPki:
    """PEM files for a TLS Kafka broker and its clients (see :func:`make_broker_pki`)."""

    ca_cert: Path
    """The CA that issued the broker's and the client's certificates (broker truststore)."""
    server_keystore: Path
    """Broker key (PKCS#8, unencrypted) followed by its chain: ``ssl.keystore.type=PEM``."""
    client_cert: Path
    client_key: Path
    """The client key, PKCS#8, unencrypted."""
    client_key_encrypted: Path
    """The same client key encrypted with ``client_key_password``."""
    client_key_password: str
    client_key_password_file: Path
    """``client_key_password`` alone in a file (no trailing newline)."""
    other_ca_cert: Path
    """An unrelated CA: trusting it instead of ``ca_cert`` must fail verification."""
    untrusted_client_cert: Path
    """A client certificate issued by the unrelated CA (the broker must refuse it)."""
    untrusted_client_key: Path


def make_broker_pki(directory: Path) -> BrokerPki:
    """Write a CA, a broker keystore (127.0.0.1, localhost), a client cert with a plain and
    an encrypted key, and an unrelated CA with a client cert of its own into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _issue("govpipe test CA", ca_key, None, None)
    other = _issue("unrelated test CA", other_key, None, None)
    server_key, client_key, stray_key = (ec.generate_private_key(ec.SECP256R1())
                                         for _ in range(3))
    server = _issue("127.0.0.1", server_key, (ca.subject, ca_key), ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("govpipe", client_key, (ca.subject, ca_key), ExtendedKeyUsageOID.CLIENT_AUTH)
    stray = _issue("govpipe", stray_key, (other.subject, other_key),
                   ExtendedKeyUsageOID.CLIENT_AUTH)
    keystore = directory / "broker-keystore.pem"
    _write_key(server_key, keystore)
    with keystore.open("ab") as out:
        out.write(server.public_bytes(serialization.Encoding.PEM))
        out.write(ca.public_bytes(serialization.Encoding.PEM))
    password = secrets.token_urlsafe(12)
    password_file = directory / "client-key.password"
    password_file.write_text(password)
    return BrokerPki(
        ca_cert=_write_cert(ca, directory / "ca.pem"),
        server_keystore=keystore,
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client.key"),
        client_key_encrypted=_write_key(client_key, directory / "client-encrypted.key",
                                        password.encode()),
        client_key_password=password,
        client_key_password_file=password_file,
        other_ca_cert=_write_cert(other, directory / "other-ca.pem"),
        untrusted_client_cert=_write_cert(stray, directory / "untrusted-client.pem"),
        untrusted_client_key=_write_key(stray_key, directory / "untrusted-client.key"),
    )
