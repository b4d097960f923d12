"""Throwaway certificate authorities for TLS tests, made with `cryptography` in a folder.

    pki = make_pki(tmp_path)
    pki.ca, pki.server_cert, pki.server_key          # the CA and a server cert for localhost, 127.0.0.1
    pki.client_cert, pki.client_key                  # a client cert the same CA signed
    pki.rogue_ca, pki.rogue_client_cert, ...         # another CA and a client cert of its own

EC P-256 keys: generating them takes milliseconds, where RSA would take a noticeable
fraction of a second each on these machines.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


@dataclass(frozen=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A minute back, so that a clock a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + VALID_FOR)
    )


def make_ca(folder: Path, name: str) -> tuple[_Issuer, Path]:
    """A self-signed CA; returns it (to sign with) and its certificate's file."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _Issuer(subject, key), _write_cert(cert, folder / f"{name}.crt")


def issue(issuer: _Issuer, folder: Path, name: str, *, server: bool) -> tuple[Path, Path]:
    """A leaf certificate signed by `issuer`: for a server (SANs localhost and 127.0.0.1, server
    auth) or a client (client auth); returns its certificate and key files."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(_name(name), issuer.name, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    return _write_cert(cert, folder / f"{name}.crt"), _write_key(key, folder / f"{name}.key")


def make_pki(folder: Path) -> Pki:
    """The CA, its server and client certificates, and a rogue CA with a client certificate, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_file = make_ca(folder, "ca")
    server_cert, server_key = issue(ca, folder, "server", server=True)
    client_cert, client_key = issue(ca, folder, "client", server=False)
    rogue, rogue_file = make_ca(folder, "rogue-ca")
    rogue_cert, rogue_key = issue(rogue, folder, "rogue-client", server=False)
    return Pki(ca_file, server_cert, server_key, client_cert, client_key, rogue_file, rogue_cert, rogue_key)
