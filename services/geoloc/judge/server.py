"""The judge's gRPC edge: a photo and the other experts' candidates in, the model's answer out.

How a call that does not end in an answer is told to the caller (the orchestrator reads each as
the expert failing):
- the request is wrong (no photo, one that does not decode, too many candidates, a candidate off
  the globe or with a probability outside [0, 1], pool selection without candidates):
  INVALID_ARGUMENT naming the field;
- the judge is off (no URL configured): FAILED_PRECONDITION; so is an endpoint that refuses the
  request with a 4xx other than 429 (a wrong key or model name: an operator must act);
- the endpoint is down, dropped the connection, answered 5xx or 429 after the retries, or the
  breaker is open: UNAVAILABLE, with a RetryInfo delay (the endpoint's Retry-After, the time left
  until the breaker's trial, or 1 s);
- the endpoint did not answer within the budget (GEOLOC_JUDGE_TIMEOUT_S, or the caller's deadline
  if shorter): DEADLINE_EXCEEDED;
- the endpoint answered but the reply cannot be used (no JSON, a field missing, coordinates off
  the globe, not a candidate, a body over the size read): OK with no points and `failure` naming
  the defect. The model was asked and the tokens spent, so they are reported; and asking again
  (which channels do on UNAVAILABLE) would spend them twice for what is likely the same reply.
A model that says it cannot tell is an answer: OK, no points, no failure.

The photo and the prompt are never logged: a call's log line holds sizes, the mode, the model,
the outcome, tokens, attempts and latency.
"""

from __future__ import annotations

import asyncio
import math
import sys

from prometheus_client import CollectorRegistry

from geoloc.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotReady, named_enum_value
from geoloc.common.logs import get_logger
from geoloc.common.metrics import ServerMetrics
from geoloc.common.photos import decode_photo
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.tracing import step
from geoloc.judge.answer import Answer, Candidate, UnusableAnswer, parse_answer
from geoloc.judge.breaker import CircuitBreaker
from geoloc.judge.client import EndpointFailure, JudgeClient, Reply, ResponseTooLarge
from geoloc.judge.config import JudgeSettings
from geoloc.judge.metrics import JudgeMetrics
from geoloc.judge.prompt import chat_messages, photo_data_url
from geoloc.v1 import common_pb2, judge_pb2, judge_pb2_grpc

MODE_NAMES = {
    judge_pb2.JUDGE_MODE_POOL_SELECTION: "pool_selection",
    judge_pb2.JUDGE_MODE_FREE_GENERATION: "free_generation",
}
MODE_ENUMS = {name: value for value, name in MODE_NAMES.items()}
# Kept back from the caller's deadline, so that the caller reads our DEADLINE_EXCEEDED and its
# message rather than its own.
DEADLINE_MARGIN_S = 0.05
_UNAVAILABLE_KINDS = {"breaker_open", "unreachable", "server_error", "rate_limited"}
_log = get_logger("geoloc.judge")


def validated_candidates(candidates, max_count: int, max_place_chars: int) -> list[Candidate]:
    """The request's candidates; raises InvalidArgument naming the first bad field."""
    if len(candidates) > max_count:
        raise InvalidArgument("candidates", f"has {len(candidates)} candidates; at most {max_count}")
    checked = []
    for i, c in enumerate(candidates):
        if not (math.isfinite(c.lat_deg) and -90 <= c.lat_deg <= 90):
            raise InvalidArgument(f"candidates[{i}].lat_deg", f"must be in [-90, 90], got {c.lat_deg}")
        if not (math.isfinite(c.lon_deg) and -180 <= c.lon_deg <= 180):
            raise InvalidArgument(f"candidates[{i}].lon_deg", f"must be in [-180, 180], got {c.lon_deg}")
        if not (math.isfinite(c.probability) and 0 <= c.probability <= 1):
            raise InvalidArgument(f"candidates[{i}].probability", f"must be in [0, 1], got {c.probability}")
        if len(c.place) > max_place_chars:
            raise InvalidArgument(f"candidates[{i}].place", f"has {len(c.place)} characters; at most {max_place_chars}")
        checked.append(Candidate(c.lat_deg, c.lon_deg, c.probability, c.place))
    return checked


def status_of(failure: EndpointFailure) -> Exception:
    """The ServiceError (and so the gRPC status) an endpoint failure answers with."""
    if failure.kind in _UNAVAILABLE_KINDS:
        delay = failure.retry_after_s if failure.retry_after_s else 1.0
        return NotReady(f"the judge's endpoint is unavailable ({failure.kind}): {failure}", delay)
    if failure.kind == "timeout":
        return DeadlineExceeded(f"the judge's endpoint timed out: {failure}")
    return FailedPrecondition(f"the judge's endpoint refused the call: {failure}")


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.limits = settings.photo_limits()
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        self._client: JudgeClient | None = None
        # Counted in a registry of its own until a server binds its registry (bind_metrics).
        self._metrics = self._watching(JudgeMetrics(CollectorRegistry()))

    def _watching(self, metrics: JudgeMetrics) -> JudgeMetrics:
        metrics.watch_breaker(lambda: int(self.breaker.state()))
        return metrics

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self._metrics = self._watching(JudgeMetrics(metrics.registry))

    async def warm_up(self) -> None:
        # The endpoint is not called here: an endpoint that is down must make the judge fail its
        # calls (which the orchestrator survives), not keep the service from starting.
        from PIL import Image

        photo_data_url(Image.new("RGB", (64, 48), (90, 120, 160)), self.settings.image_max_side_px)
        if self.settings.enabled:
            self._client = JudgeClient(self.settings, self.breaker)
        _log.info(
            "judge_configured",
            enabled=self.settings.enabled,
            model=self.settings.model,
            key=self.settings.api_key_file is not None,
            default_mode=self.settings.default_mode,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _mode(self, request: judge_pb2.JudgeRequest, candidates: list[Candidate]) -> str:
        default = self.settings.default_mode if candidates else "free_generation"
        mode = named_enum_value("mode", request.mode, MODE_NAMES, default, "JudgeMode")
        if mode == "pool_selection" and not candidates:
            raise InvalidArgument("candidates", "is empty; JUDGE_MODE_POOL_SELECTION chooses among candidates")
        return mode

    def _budget_s(self, context) -> float:
        remaining = context.time_remaining() if context is not None else None
        budget = min(self.settings.timeout_s, self.settings.max_call_s)
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN_S)
        if budget <= 0:
            raise DeadlineExceeded("the caller's deadline left no time to ask the judge's endpoint")
        return budget

    def _photo_url(self, image: bytes) -> str:
        return photo_data_url(decode_photo(image, self.limits, "image"), self.settings.image_max_side_px)

    async def Judge(self, request: judge_pb2.JudgeRequest, context) -> judge_pb2.JudgeResponse:
        s = self.settings
        if not s.enabled:
            raise FailedPrecondition("the judge is off: GEOLOC_JUDGE_URL is empty")
        if self._client is None:
            raise NotReady("the judge is still starting")
        if not request.image:
            raise InvalidArgument("image", "is empty; send the encoded photo's bytes")
        candidates = validated_candidates(request.candidates, s.max_candidates, s.max_place_chars)
        mode = self._mode(request, candidates)
        pool = mode == "pool_selection"
        with step("judge.prepare_photo"):
            image_url = await asyncio.to_thread(self._photo_url, request.image)
        messages = chat_messages(image_url, candidates, pool)
        facts = {
            "mode": mode,
            "candidates": len(candidates),
            "image_bytes": len(request.image),
            "sent_bytes": len(image_url),
        }
        with step("judge.ask_endpoint", mode=mode, candidates=len(candidates)):
            try:
                reply = await self._client.ask(
                    messages, lambda text: parse_answer(text, candidates, pool), self._budget_s(context)
                )
            except EndpointFailure as failure:
                self._metrics.failed(failure.kind)
                _log.warning("judge_call_failed", **facts, model=s.model, kind=failure.kind, reason=str(failure))
                raise status_of(failure) from None
        return self._response(reply, mode, facts)

    def _response(self, reply: Reply[Answer], mode: str, facts: dict) -> judge_pb2.JudgeResponse:
        completion = reply.completion
        model = completion.model if completion is not None else self.settings.model
        tokens_in, tokens_out = (completion.tokens_in, completion.tokens_out) if completion is not None else (0, 0)
        self._metrics.spent(tokens_in, tokens_out, reply.seconds)
        failure, kind = "", None
        if isinstance(reply.unreadable, UnusableAnswer):
            kind, failure = reply.unreadable.kind, str(reply.unreadable)
        elif isinstance(reply.unreadable, ResponseTooLarge):
            kind, failure = "too_large", f"too_large: {reply.unreadable}"
        elif reply.unreadable is not None:
            raise reply.unreadable  # a bug in reading, not the model's reply: INTERNAL
        answer = reply.read
        if kind is not None:
            self._metrics.failed(kind)
        else:
            self._metrics.answered(answer is not None)
        outcome = kind or ("answered" if answer is not None else "cannot_tell")
        _log.info(
            "judge_called",
            **facts,
            model=model,
            outcome=outcome,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            attempts=reply.attempts,
            latency_ms=round(reply.seconds * 1000, 1),
        )
        response = judge_pb2.JudgeResponse(
            model=common_pb2.ModelInfo(name=model),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            mode=MODE_ENUMS[mode],
            failure=failure,
            candidate_index=-1,
        )
        if answer is not None:
            response.points.append(
                common_pb2.WeightedPoint(
                    lat_deg=answer.lat_deg, lon_deg=answer.lon_deg, weight=1.0, radius_km=answer.radius_km
                )
            )
            response.place = answer.place
            response.confidence = answer.confidence or 0.0
            if answer.candidate_index is not None:
                response.candidate_index = answer.candidate_index
        return response


def judge_spec(servicer: JudgeServicer) -> ServiceSpec:
    return servicer_spec(judge_pb2, "JudgeService", judge_pb2_grpc.add_JudgeServiceServicer_to_server, servicer)


if __name__ == "__main__":
    sys.exit(run_service(JudgeSettings, lambda settings: [judge_spec(JudgeServicer(settings))]))
