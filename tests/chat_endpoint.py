"""A real HTTP/1.1 server on loopback that speaks OpenAI's chat-completions protocol, scripted by the
test: each request it receives takes the next behaviour of its script (an answer, an HTTP error
with headers, a hang, a dropped connection, a huge body), then the default answer once the script
is spent. It records what each request carried (path, headers, JSON body).

Written on asyncio streams rather than a web framework, so that a test may misbehave at the byte
level (close the socket mid-exchange, send a body without a length) as a broken endpoint does.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[bool]]  # True: keep the connection open


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict


def completion_body(
    content: str | None, tokens_in: int = 1000, tokens_out: int = 30, model: str = "judge-test"
) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
    }


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def respond(status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> Behaviour:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def behave(writer: asyncio.StreamWriter) -> bool:
        head = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}
        writer.write(_head(status, "Scripted", head) + payload)
        await writer.drain()
        return True

    return behave


def answer(content: str | None, **usage) -> Behaviour:
    return respond(200, completion_body(content, **usage))


def error(status: int, headers: dict[str, str] | None = None) -> Behaviour:
    return respond(status, {"error": {"message": f"scripted {status}", "type": "scripted"}}, headers)


def later(seconds: float, behaviour: Behaviour) -> Behaviour:
    """`behaviour`, after `seconds`."""

    async def behave(writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(seconds)
        return await behaviour(writer)

    return behave


def hang(seconds: float) -> Behaviour:
    async def behave(writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(seconds)
        return False

    return behave


def drop() -> Behaviour:
    async def behave(writer: asyncio.StreamWriter) -> bool:
        return False  # closed without a byte of response

    return behave


def huge(size: int, declared: bool) -> Behaviour:
    """A 200 whose JSON body is `size` bytes: with its Content-Length, or without one (read to the close)."""

    async def behave(writer: asyncio.StreamWriter) -> bool:
        filler = "x" * size
        payload = json.dumps(completion_body(filler)).encode()
        head = {"Content-Type": "application/json"}
        head.update({"Content-Length": str(len(payload))} if declared else {"Connection": "close"})
        writer.write(_head(200, "OK", head))
        for start in range(0, len(payload), 65536):
            writer.write(payload[start : start + 65536])
            await writer.drain()
        return False

    return behave


@dataclass
class ChatEndpoint:
    """The scripted endpoint; `async with ChatEndpoint() as endpoint:` serves it in the running loop."""

    default: Behaviour = field(default_factory=lambda: answer('{"lat": 38.72, "lon": -9.14, "place": "Lisbon"}'))
    script: deque = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    tls: ssl.SSLContext | None = None  # set: the endpoint serves https only

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> ChatEndpoint:
        self.script.extend(behaviours)
        return self

    async def __aenter__(self) -> ChatEndpoint:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self._connections: set[asyncio.StreamWriter] = set()
        return self

    async def __aexit__(self, *_exc) -> None:
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(method, path, headers, json.loads(body) if body else {}))
                behaviour = self.script.popleft() if self.script else self.default
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    keep_open = await behaviour(writer)
                finally:
                    self.in_flight -= 1
                if not keep_open:
                    return
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()
