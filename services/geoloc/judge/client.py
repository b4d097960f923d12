"""The call to the chat-completions endpoint: openai's AsyncOpenAI over an httpx2 client that
verifies TLS and reads at most `max_response_bytes`, behind a semaphore, retries and the circuit
breaker.

Retries are ours, not the openai client's (its max_retries is 0), though both honour Retry-After:
- one budget bounds the whole call, retries and the wait for a slot included, as the gRPC
  caller's deadline does; the openai client gives each attempt the full timeout again;
- a timeout is not retried: the budget it spent is gone, and a hung endpoint would be waited out
  max_retries + 1 times;
- a Retry-After longer than the budget left fails the call at once, with that delay for the
  caller, instead of sleeping past the deadline;
- the breaker sees every attempt, so that its count is of the endpoint's failures.

Nothing here logs the photo or the prompt: only sizes, the model, statuses, attempts and times.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx2
import openai

from geoloc.common.logs import get_logger
from geoloc.judge.breaker import BreakerOpen, CircuitBreaker, Ticket
from geoloc.judge.config import JudgeSettings

T = TypeVar("T")
# Backoff between retries when the endpoint gives no Retry-After: 0.25 s, 0.5 s, 1 s, ... at most 4 s,
# each shortened by up to a quarter at random so that replicas do not retry in step.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 4.0
# A TCP connect that takes longer than this is an endpoint that is not there.
CONNECT_TIMEOUT_S = 5.0
_log = get_logger("geoloc.judge")


class EndpointFailure(Exception):
    """The endpoint gave no usable response. `kind` (for metrics and the status): breaker_open,
    unreachable (refused, reset, dropped), server_error (5xx), rate_limited (429), timeout,
    refused (another 4xx: a bad key or model name). `retry_after_s`: when trying again may help."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class ResponseTooLarge(Exception):
    """The endpoint's response ran past the size read."""

    def __init__(self, limit: int):
        super().__init__(f"the endpoint's response is over {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Completion:
    """What the endpoint answered: the reply's text (None when it had none) and its usage."""

    content: str | None
    model: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None


@dataclass(frozen=True)
class Reply(Generic[T]):
    """One call's outcome: the reply read by the caller's `read` (or the error `read` raised), with
    the endpoint's usage, the attempts made and the time the call took."""

    read: T | None
    unreadable: Exception | None
    completion: Completion | None
    attempts: int
    seconds: float


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int):
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx2.AsyncBaseTransport):
    """A transport that stops reading a response at `limit` bytes: an answer of max_tokens tokens
    is a few kilobytes, and a runaway or hostile endpoint must not fill the service's memory."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int):
        self._inner, self._limit = inner, limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            await response.aclose()
            raise ResponseTooLarge(self._limit)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._limit),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def retry_after_s(headers) -> float | None:
    """The delay a response's retry-after-ms or Retry-After header asks for (seconds or an HTTP
    date), or None."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) * scale
        except ValueError:
            when = email.utils.parsedate_tz(value) if name == "retry-after" else None
            if when is None:
                continue
            delay = email.utils.mktime_tz(when) - time.time()
        if math.isfinite(delay):
            return max(0.0, delay)
    return None


def backoff_s(retry: int) -> float:
    """The wait before the `retry`-th retry (1, 2, ...) when the endpoint said nothing."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (retry - 1)) * (1 - 0.25 * random.random())


class _Pending:
    """The breaker ticket of the attempt in flight, settled exactly once."""

    def __init__(self):
        self.ticket: Ticket | None = None

    def settle(self, verdict: Callable[[Ticket], None]) -> None:
        if self.ticket is not None:
            ticket, self.ticket = self.ticket, None
            verdict(ticket)


class JudgeClient:
    """The endpoint as the judge calls it; open one inside the event loop that will use it."""

    def __init__(self, settings: JudgeSettings, breaker: CircuitBreaker | None = None):
        self.settings = settings
        self.breaker = breaker or CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        tls = ssl.create_default_context(cafile=None if settings.ca_file is None else str(settings.ca_file))
        transport = httpx2.AsyncHTTPTransport(
            verify=tls,
            limits=httpx2.Limits(
                max_connections=settings.max_concurrent_calls, max_keepalive_connections=settings.max_concurrent_calls
            ),
        )
        self._http = httpx2.AsyncClient(
            transport=CappedTransport(transport, settings.max_response_bytes),
            timeout=httpx2.Timeout(settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.timeout_s)),
        )
        key = settings.api_key()
        # The openai client insists on a key; without one it is given a placeholder that is never
        # sent: each request omits the Authorization header instead (a local endpoint needs none).
        self._headers = {} if key else {"Authorization": openai.Omit()}
        self._openai = openai.AsyncOpenAI(
            base_url=settings.url, api_key=key or "unused", max_retries=0, http_client=self._http
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_calls)

    async def close(self) -> None:
        await self._openai.close()
        await self._http.aclose()

    async def ask(self, messages: list[dict], read: Callable[[str | None], T], budget_s: float) -> Reply[T]:
        """Sends the messages; returns the reply read by `read`, or raises EndpointFailure.

        An error `read` raises (an unusable reply) is returned in the Reply, not raised: the
        endpoint answered, and its usage still counts."""
        started = time.monotonic()
        pending = _Pending()
        attempts = [0]
        try:
            async with asyncio.timeout(budget_s):
                async with self._slots:
                    completion = await self._with_retries(messages, pending, started + budget_s, attempts)
        except TimeoutError:
            pending.settle(self.breaker.failed)
            raise EndpointFailure("timeout", f"the endpoint gave no answer within {budget_s:.3g} s") from None
        finally:
            pending.settle(self.breaker.released)  # a call its caller cancelled says nothing of the endpoint
        seconds = time.monotonic() - started
        if isinstance(completion, Exception):
            return Reply(None, completion, None, attempts[0], seconds)
        try:
            return Reply(read(completion.content), None, completion, attempts[0], seconds)
        except ValueError as error:
            return Reply(None, error, completion, attempts[0], seconds)

    async def _with_retries(
        self, messages: list[dict], pending: _Pending, deadline: float, attempts: list[int]
    ) -> Completion | ResponseTooLarge:
        while True:
            attempts[0] += 1
            try:
                pending.ticket = self.breaker.admit()
            except BreakerOpen as error:
                raise EndpointFailure("breaker_open", str(error), error.retry_after_s) from None
            try:
                completion = await self._once(messages, deadline)
            except EndpointFailure as failure:
                # A refusal (a 4xx) comes from an endpoint that is up: not the breaker's business.
                pending.settle(self.breaker.succeeded if failure.kind == "refused" else self.breaker.failed)
                retries_left = self.settings.max_retries - (attempts[0] - 1)
                if failure.kind not in ("unreachable", "server_error", "rate_limited") or retries_left <= 0:
                    raise
                delay = failure.retry_after_s if failure.retry_after_s is not None else backoff_s(attempts[0])
                if time.monotonic() + delay >= deadline:
                    raise EndpointFailure(failure.kind, f"{failure}; no time left to retry", delay) from None
                _log.info("judge_endpoint_retry", kind=failure.kind, attempt=attempts[0], delay_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            except ResponseTooLarge as error:
                pending.settle(self.breaker.succeeded)  # it answered; what it answered is the model's fault
                return error
            pending.settle(self.breaker.succeeded)
            return completion

    async def _once(self, messages: list[dict], deadline: float) -> Completion:
        s = self.settings
        left = max(0.001, deadline - time.monotonic())
        try:
            response = await self._openai.chat.completions.create(
                model=s.model,
                messages=messages,
                temperature=s.temperature,
                max_tokens=s.max_tokens,
                timeout=httpx2.Timeout(left, connect=min(CONNECT_TIMEOUT_S, left)),
                extra_headers=self._headers,
            )
        except openai.APITimeoutError:
            raise EndpointFailure("timeout", f"the endpoint gave no answer within {left:.3g} s") from None
        except openai.APIConnectionError as error:
            too_large = _cause(error, ResponseTooLarge)
            if too_large is not None:
                raise too_large from None
            reason = type(error.__cause__).__name__ if error.__cause__ is not None else "connection error"
            if _cause(error, ssl.SSLCertVerificationError) is not None:
                reason = "its TLS certificate did not verify: set GEOLOC_JUDGE_CA_FILE to the CA that signed it"
            raise EndpointFailure("unreachable", f"could not reach the endpoint ({reason})") from None
        except openai.APIStatusError as error:
            status, wait = error.status_code, retry_after_s(error.response.headers)
            if status == 429:
                raise EndpointFailure("rate_limited", "the endpoint answered 429 Too Many Requests", wait) from None
            if status >= 500 or status == 408:
                raise EndpointFailure("server_error", f"the endpoint answered HTTP {status}", wait) from None
            raise EndpointFailure("refused", f"the endpoint refused the request with HTTP {status}") from None
        return _completion(response, s.model)


def _cause(error: BaseException, kind: type[T]) -> T | None:
    """The first exception of `kind` in `error`'s chain of causes and contexts."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _completion(response, asked_model: str) -> Completion:
    """The reply's text and usage, read leniently: an endpoint that leaves out a field (usage, the
    model) is still read, and a body with no choice reads as a reply without text."""
    choices = getattr(response, "choices", None) or []
    first = choices[0] if choices else None
    message = getattr(first, "message", None)
    content = getattr(message, "content", None)
    usage = getattr(response, "usage", None)
    return Completion(
        content=content if isinstance(content, str) else None,
        model=getattr(response, "model", None) or asked_model,
        tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
        tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason=getattr(first, "finish_reason", None),
    )
