"""TLS and mutual TLS for the suite's gRPC servers and clients.

Servers take their certificate, key and (for mutual TLS) the CA that signs their clients from
`ServerSettings` (`server_credentials`). Clients describe theirs with a `ClientTls`: the CA
that signed the server, and for mutual TLS their own certificate and key. Services that call
others read a `ClientTls` from their `CLIENT_TLS_*` settings (`settings.ClientTlsSettings`);
the command lines from `--tls-*` flags (`add_tls_arguments`, `client_tls_from_args`).

Every file is read when the credentials are built, once at start-up: a renewed certificate
takes effect when the process restarts. grpc is imported only where credentials are built,
so that `geoloc --help`, which adds the flags, does not load it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


def readable_file(path: Path | None) -> Path | None:
    """`path` itself (None passes); ValueError unless it is a file this process can read."""
    if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
        raise ValueError(f"{path} is not a readable file")
    return path


def server_credentials(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> grpc.ServerCredentials:
    """Credentials of a TLS server; with `client_ca_file`, clients must present a certificate
    that CA signed (mutual TLS), and a handshake without one fails."""
    import grpc

    pair = (key_file.read_bytes(), cert_file.read_bytes())
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca_file.read_bytes(), require_client_auth=True)


@dataclass(frozen=True)
class ClientTls:
    """How a client channel speaks TLS.

    `ca_file` is the CA that signed the server's certificate (the only one trusted);
    `cert_file` and `key_file`, together, are the client's own certificate for servers that
    require one; `server_name` replaces the name the server's certificate must carry (by
    default the host part of the target), for targets addressed by IP or by another name.
    """

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key and a key its certificate")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; reads the files now (OSError if one cannot be read)."""
        import grpc

        key = self.key_file.read_bytes() if self.key_file is not None else None
        chain = self.cert_file.read_bytes() if self.cert_file is not None else None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(), private_key=key, certificate_chain=chain
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options this TLS needs besides the credentials."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def add_tls_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The --tls-* flags of a command-line client (`client_tls_from_args` reads them)."""
    parser.add_argument(
        "--tls-ca", type=Path, metavar="CA.pem", help="speak TLS, trusting only this CA for the server's certificate"
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="CERT.pem",
        help="client certificate, for a server that requires one (mutual TLS; with --tls-key)",
    )
    parser.add_argument("--tls-key", type=Path, metavar="KEY.pem", help="the key of --tls-cert")
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate carries, when it is not the address's host",
    )


def client_tls_from_args(args: argparse.Namespace) -> ClientTls | None:
    """The ClientTls the --tls-* flags describe, or None without --tls-ca.

    Raises ValueError, naming the flag, for an incomplete combination or a file that cannot be read.
    """
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key or args.tls_server_name:
            raise ValueError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        try:
            readable_file(path)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
