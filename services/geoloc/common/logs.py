"""Structured JSON logs that carry the request id of the call being served.

The request id comes from the caller's `x-request-id` metadata (or is made up when
absent), is bound to the call's context by the server interceptor, and is sent on with
every downstream call by `RequestIdClientInterceptor` (see `channels.py`), so one id
follows a photo through every service's logs.
"""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar

import structlog

from geoloc.common.tracing import add_trace_ids

REQUEST_ID_KEY = "x-request-id"
# Ids are echoed into logs and metadata: keep them short and printable.
_MAX_REQUEST_ID_LENGTH = 128

_request_id: ContextVar[str | None] = ContextVar("geoloc_request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the call this task is serving, or None outside a call."""
    return _request_id.get()


def request_id_from_metadata(metadata) -> str:
    """The caller's x-request-id if it is usable, else a fresh one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            if 0 < len(text) <= _MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
    return new_request_id()


def bind_request_id(request_id: str):
    """Binds the id for the current context (logs and downstream calls); returns a reset token."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return _request_id.set(request_id)


def unbind_request_id(token) -> None:
    structlog.contextvars.unbind_contextvars("request_id")
    _request_id.reset(token)


class _NoDebugRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def silence_raw_exif_logging() -> None:
    """Drops Pillow's TIFF/EXIF parser's DEBUG records, which carry every tag's raw value (GPS
    coordinates included), at their source logger: no service may log a client photo's EXIF,
    whatever its log level. Idempotent."""
    source = logging.getLogger("PIL.TiffImagePlugin")
    if not any(isinstance(f, _NoDebugRecords) for f in source.filters):
        source.addFilter(_NoDebugRecords())


def configure_logging(level: str = "info", log_format: str = "json", stream=None) -> None:
    """Sends structlog and the standard library's logging to one stream, one event per line."""
    silence_raw_exif_logging()
    renderer = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelName(level.upper())
    shared = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(stream) if stream else structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    # grpc and other libraries log through the standard library: render them the same way.
    handler = logging.StreamHandler(stream) if stream else _CurrentStdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record is emitted (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def get_logger(name: str | None = None, **initial):
    return structlog.get_logger(name, **initial)
