"""Server settings shared by every service, read from the environment with pydantic-settings.

Each service subclasses `ServerSettings` in its own `config.py` with one env prefix
(`GEOLOC_GALLERY_`, ...), so `GEOLOC_GALLERY_PORT=6000` configures only the gallery.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geoloc.common.tls import ClientTls, readable_file

MIB = 1024 * 1024

# A setting naming a PEM file that must exist and be readable when the settings are read, so
# that a Secret mounted at the wrong path stops the process at start-up, not at the first call.
PemFile = Annotated[Path | None, AfterValidator(readable_file)]


class SettingsError(ValueError):
    """Raised when the environment holds an invalid setting; the message names the variable."""


class ServerSettings(BaseSettings):
    """What every gRPC server of the suite is configured with."""

    # Subclasses set only env_prefix; pydantic merges the rest of this config into theirs.
    model_config = SettingsConfigDict(env_prefix="GEOLOC_", extra="ignore", frozen=True, env_parse_none_str="none")

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 or [::] in containers.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one, 'none' disables."
    )
    max_receive_message_bytes: int = Field(
        20 * MIB, gt=0, description="Largest request accepted; larger ones get RESOURCE_EXHAUSTED."
    )
    max_send_message_bytes: int = Field(20 * MIB, gt=0, description="Largest response sent.")
    max_in_flight: int | None = Field(
        32,
        gt=0,
        description="Calls admitted at once; beyond it a call is refused at once with RESOURCE_EXHAUSTED and a "
        "RetryInfo delay, rather than queued past its deadline. 'none': no limit.",
    )
    max_concurrent_rpcs: int | None = Field(
        None,
        gt=0,
        description="gRPC's own cap on calls at once (health checks included), refused without RetryInfo. Unset: "
        "no limit.",
    )
    keepalive_time_s: float = Field(60.0, gt=0, description="Idle time after which the server pings a client.")
    keepalive_timeout_s: float = Field(20.0, gt=0, description="How long a keepalive ping may go unanswered.")
    min_client_ping_interval_s: float = Field(
        10.0, gt=0, description="Clients pinging more often than this are disconnected."
    )
    max_connection_age_s: float | None = Field(
        None, gt=0, description="Close connections after this age so that clients rebalance over replicas."
    )
    grace_period_s: float = Field(
        10.0, ge=0, description="On SIGTERM, how long calls in flight may run before they are cancelled."
    )
    drain_s: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, how long to keep serving while reporting NOT_SERVING, before refusing calls.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    log_format: Literal["json", "console"] = Field("json", description="json for machines, console for people.")
    log_requests: bool = Field(True, description="Log one line per call with its method, code and latency.")
    max_call_s: float = Field(
        60.0, gt=0, description="The longest any call may run, whatever the client's deadline; then DEADLINE_EXCEEDED."
    )
    tls_cert_file: PemFile = Field(
        None, description="The server's certificate (PEM); with TLS_KEY_FILE, the gRPC port serves TLS only."
    )
    tls_key_file: PemFile = Field(None, description="The key of TLS_CERT_FILE (PEM).")
    tls_client_ca_file: PemFile = Field(
        None, description="With TLS: require a client certificate signed by this CA (mutual TLS)."
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="A second, plaintext port serving only grpc.health.v1 (for Kubernetes probes); 0 picks a free one.",
    )

    @model_validator(mode="after")
    def _tls_and_ports_agree(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (mutual TLS is TLS first)")
        if self.health_port and self.health_port in (self.port, self.metrics_port):
            raise ValueError("health_port must differ from port and metrics_port")
        return self

    @property
    def tls(self) -> bool:
        """Whether the gRPC port serves TLS."""
        return self.tls_cert_file is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ClientTlsSettings(BaseModel):
    """The TLS of a service's outgoing calls, as settings (`CLIENT_TLS_*` under the service's prefix).

    A mixin for the settings of services that call others: `class S(ServerSettings, ClientTlsSettings)`.
    A plain BaseModel, so that it brings fields and their check but no settings configuration
    of its own. No CA: plaintext calls.
    """

    client_tls_ca_file: PemFile = Field(
        None, description="CA that signed the servers this service calls; set: calls use TLS. Unset: plaintext."
    )
    client_tls_cert_file: PemFile = Field(
        None, description="This service's client certificate, for servers that require one (mutual TLS)."
    )
    client_tls_key_file: PemFile = Field(None, description="The key of CLIENT_TLS_CERT_FILE.")
    client_tls_server_name: str | None = Field(
        None, description="Name the servers' certificates must carry instead of the host of their address."
    )

    @model_validator(mode="after")
    def _client_tls_is_complete(self) -> ClientTlsSettings:
        if (self.client_tls_cert_file is None) != (self.client_tls_key_file is None):
            raise ValueError("client_tls_cert_file and client_tls_key_file must be set together")
        if self.client_tls_ca_file is None and (self.client_tls_cert_file or self.client_tls_server_name):
            raise ValueError(
                "client_tls_cert_file, client_tls_key_file and client_tls_server_name need client_tls_ca_file"
            )
        return self

    def client_tls(self) -> ClientTls | None:
        """The TLS of outgoing channels, or None for plaintext."""
        if self.client_tls_ca_file is None:
            return None
        return ClientTls(
            self.client_tls_ca_file, self.client_tls_cert_file, self.client_tls_key_file, self.client_tls_server_name
        )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_class: type[SettingsT], **overrides: object) -> SettingsT:
    """Reads `settings_class` from the environment (overrides win), or raises SettingsError.

    The error lists every invalid variable by its environment name, so a bad deployment
    fails at start-up with a message an operator can act on.
    """
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        prefix = settings_class.model_config.get("env_prefix", "")
        problems = []
        for error in exc.errors():
            if error["loc"]:
                field = str(error["loc"][0])
                problems.append(f"{_variable(prefix, field, overrides)}={error.get('input')!r}: {error['msg']}")
            else:
                # A check across fields (a model validator): name the variables its message mentions.
                fields = [f for f in settings_class.model_fields if re.search(rf"\b{f}\b", error["msg"])]
                names = ", ".join(_variable(prefix, f, overrides) for f in fields) or "?"
                problems.append(f"{names}: {error['msg']}")
        raise SettingsError(f"invalid settings for {settings_class.__name__}: " + "; ".join(problems)) from None


def _variable(prefix: str, field: str, overrides: dict) -> str:
    """The name an operator set a field by: its environment variable, or the override's own name."""
    return field if field in overrides else f"{prefix}{field}".upper()


class BundleSettings(BaseModel):
    """A model bundle to load from, as a setting (`BUNDLE` under the service's prefix).

    A mixin for the services whose models a bundle holds. Subclasses name, in BUNDLE_REPLACES, the
    file settings the bundle's files replace; setting one of those beside BUNDLE is refused, so that
    which file a service loads is never a matter of precedence."""

    BUNDLE_REPLACES: ClassVar[tuple[str, ...]] = ()

    bundle: Path | None = Field(
        None,
        description="A model bundle (geoloc bundle build): the service loads its files from it, checks their "
        "sha256 and that they are for the bundle's backbone, and refuses to start otherwise. Unset: its own "
        "file settings.",
    )

    @model_validator(mode="after")
    def _bundle_or_files(self) -> BundleSettings:
        both = sorted(set(self.BUNDLE_REPLACES) & self.model_fields_set) if self.bundle is not None else []
        if both:
            raise ValueError(f"bundle replaces {', '.join(both)}: set one or the other")
        return self
