"""Server settings shared by every service, read from the environment with pydantic-settings.

Each service subclasses `ServerSettings` in its own `config.py` with one env prefix
(`GEOLOC_GALLERY_`, ...), so `GEOLOC_GALLERY_PORT=6000` configures only the gallery.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


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
    max_concurrent_rpcs: int | None = Field(
        None, gt=0, description="Calls handled at once; beyond it calls get RESOURCE_EXHAUSTED. Unset: no limit."
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
        0.0, ge=0, description="On SIGTERM, how long to keep serving while reporting NOT_SERVING, before refusing calls."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    log_format: Literal["json", "console"] = Field("json", description="json for machines, console for people.")
    log_requests: bool = Field(True, description="Log one line per call with its method, code and latency.")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = field if field in overrides else f"{prefix}{field}".upper()
            problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
        raise SettingsError(f"invalid settings for {settings_class.__name__}: " + "; ".join(problems)) from None
