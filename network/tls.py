"""Mutual TLS for replicas and clients, under a per-cluster certificate authority.

Every certificate is Ed25519 and made with ``cryptography``. A replica's certificate carries the
replica's *own identity key*, the one the committee file pins, so once TLS has checked the chain
to the cluster CA the runtime also checks that the peer's certificate key is the committee's key
for the replica id it claims (:func:`peer_public_key`): the CA vouches for membership of the
cluster, the committee file for who is who. A client's certificate carries the client's key.

Files (PEM), written with mode 0600 for private keys::

    ca.crt  ca.key                      the cluster CA (keep ca.key offline after issuing)
    replica-<i>.crt  replica-<i>.tls.key the replica's certificate and its key (the replica seed)
    client-<name>.crt client-<name>.tls.key
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto import SigningKey
from crypto.keyfiles import write_private_file, write_public_file

VALIDITY = datetime.timedelta(days=3650)


class TlsError(Exception):
    """TLS material is missing or unusable; the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path

    def check(self) -> None:
        for path in (self.ca_cert, self.cert, self.key):
            if not Path(path).is_file():
                raise TlsError(f"{path}: no such file")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_cluster_ca(directory: Path, chain_id: str) -> tuple[Path, Path]:
    """Create ``ca.crt`` and ``ca.key`` for a cluster in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bft cluster CA {chain_id}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, None)
    )
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    write_public_file(ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    write_private_file(ca_key, _pem_key(key))
    return ca_cert, ca_key


def _load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"{ca_cert}: not a usable CA certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(f"{ca_key}: not a usable CA key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TlsError(f"{ca_key}: the cluster CA key must be Ed25519")
    return cert, key


def issue_certificate(
    ca_cert: Path,
    ca_key: Path,
    identity: SigningKey,
    common_name: str,
    cert_out: Path,
    key_out: Path,
) -> None:
    """Issue a certificate for ``identity``'s Ed25519 key, and write the key for TLS (0600)."""
    authority, authority_key = _load_ca(ca_cert, ca_key)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(identity.seed)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(authority_key, None)
    )
    write_public_file(Path(cert_out), cert.public_bytes(serialization.Encoding.PEM).decode())
    Path(key_out).unlink(missing_ok=True)
    write_private_file(Path(key_out), _pem_key(key))


def _context(files: TlsFiles, server: bool) -> ssl.SSLContext:
    files.check()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(str(files.cert), str(files.key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"{files.cert} / {files.key}: cannot load the certificate and key ({exc})"
        ) from None
    try:
        context.load_verify_locations(str(files.ca_cert))
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{files.ca_cert}: cannot load the CA certificate ({exc})") from None
    context.verify_mode = ssl.CERT_REQUIRED
    if not server:
        # Identity is checked against the committee key, not a host name.
        context.check_hostname = False
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A context that requires the peer's certificate, chained to the cluster CA."""
    return _context(files, server=True)


def client_context(files: TlsFiles) -> ssl.SSLContext:
    return _context(files, server=False)


def peer_public_key(stream: object) -> bytes | None:
    """The raw Ed25519 public key of the verified peer certificate of a TLS stream."""
    getpeercert = getattr(stream, "getpeercert", None)
    if getpeercert is None:
        return None
    der = getpeercert(binary_form=True)
    if not der:
        return None
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def replica_files(directory: Path, replica: int) -> TlsFiles:
    directory = Path(directory)
    return TlsFiles(
        directory / "ca.crt",
        directory / f"replica-{replica}.crt",
        directory / f"replica-{replica}.tls.key",
    )


def client_files(directory: Path, name: str) -> TlsFiles:
    directory = Path(directory)
    return TlsFiles(
        directory / "ca.crt", directory / f"client-{name}.crt", directory / f"client-{name}.tls.key"
    )


def file_mode_ok(path: Path) -> bool:
    return not os.stat(path).st_mode & 0o077
