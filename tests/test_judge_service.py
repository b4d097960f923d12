"""The judge on a real gRPC server in this process, asking a real HTTP server on loopback that speaks
OpenAI's chat-completions protocol (tests/chat_endpoint.py) through the openai client: answers,
unusable replies, the endpoint's failures and their statuses, retries, the breaker, bad requests,
and what the logs may not hold."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import ssl
import time
from contextlib import asynccontextmanager

import grpc
import pytest

from geoloc.common.errors import retry_delay_s
from geoloc.common.logs import configure_logging
from geoloc.common.server import serving
from geoloc.judge.config import JudgeSettings
from geoloc.judge.prompt import ANSWER_FORMAT, SYSTEM
from geoloc.judge.server import JudgeServicer, judge_spec
from geoloc.v1 import judge_pb2, judge_pb2_grpc
from tests import chat_endpoint as ep
from tests.calls import assert_refused
from tests.certificates import make_pki
from tests.photos import encode, synthetic_photo

pytestmark = pytest.mark.integration

PHOTO = encode(synthetic_photo(0), "JPEG", quality=90)
LISBON = judge_pb2.Candidate(lat_deg=38.7223, lon_deg=-9.1393, probability=0.6, place="Lisbon, Portugal")
MADRID = judge_pb2.Candidate(lat_deg=40.4168, lon_deg=-3.7038, probability=0.3, place="Madrid, Spain")
PARIS_ANSWER = (
    'The street signs and the Haussmann facades say Paris.\n```json\n{"lat": 48.8566, "lon": 2.3522, '
    '"place": "Paris, France", "confidence": 0.8}\n```'
)
UNAVAILABLE, DEADLINE = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED


def judge(mode=judge_pb2.JUDGE_MODE_FREE_GENERATION, candidates=(LISBON, MADRID), image=PHOTO):
    return judge_pb2.JudgeRequest(image=image, candidates=list(candidates), mode=mode)


@asynccontextmanager
async def judge_server(endpoint: ep.ChatEndpoint | None = None, **overrides):
    """The endpoint (a fresh one unless given) and the judge in front of it: yields (stub, endpoint, server)."""
    endpoint = endpoint or ep.ChatEndpoint()
    async with endpoint:
        options = {"url": endpoint.url, "model": "judge-test", "timeout_s": 5, "log_requests": False, **overrides}
        settings = JudgeSettings(port=0, metrics_port=None, **options)
        async with serving(settings, [judge_spec(JudgeServicer(settings))], grace_s=0) as (server, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield judge_pb2_grpc.JudgeServiceStub(channel), endpoint, server


async def outcome(call, timeout: float = 20):
    """The call's answer or the AioRpcError it got, and how long it took."""
    started = time.perf_counter()
    try:
        result = await call(timeout=timeout)
    except grpc.aio.AioRpcError as error:
        result = error
    return result, time.perf_counter() - started


def metric(server, name: str, **labels) -> float:
    value = server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_judge_call_end_to_end_reads_the_answer_through_its_prose():
    async def scenario():
        async with judge_server(ep.ChatEndpoint().then(ep.answer(PARIS_ANSWER, tokens_in=812, tokens_out=41))) as (
            stub,
            endpoint,
            server,
        ):
            answer = await stub.Judge(judge(), timeout=10)
            return answer, endpoint.received, server

    answer, received, server = asyncio.run(scenario())
    (point,) = answer.points
    assert (point.lat_deg, point.lon_deg, point.weight) == (48.8566, 2.3522, 1.0) and 25 < point.radius_km < 2500
    assert answer.place == "Paris, France" and answer.confidence == pytest.approx(0.8) and not answer.failure
    assert (answer.tokens_in, answer.tokens_out, answer.model.name) == (812, 41, "judge-test")
    assert answer.mode == judge_pb2.JUDGE_MODE_FREE_GENERATION and answer.candidate_index == -1
    (request,) = received
    assert request.path == "/v1/chat/completions" and "authorization" not in request.headers  # no key file
    body = request.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("judge-test", 0.7, 200)
    system, user = body["messages"]
    assert system["content"] == SYSTEM and "1. Lisbon, Portugal" in user["content"][0]["text"]
    assert user["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert metric(server, "geoloc_judge_calls_total", outcome="answered") == 1
    assert metric(server, "geoloc_judge_tokens_total", direction="in") == 812
    assert metric(server, "geoloc_judge_endpoint_seconds_count") == 1


def test_pool_selection_is_the_default_with_candidates_and_the_key_is_sent(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("sk-judge-secret\n")

    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.answer('{"candidate": 2, "confidence": 0.4}'), ep.answer("2"))
        async with judge_server(endpoint, api_key_file=key) as (stub, endpoint, _):
            chosen = await stub.Judge(judge(mode=judge_pb2.JUDGE_MODE_UNSPECIFIED), timeout=10)
            bare = await stub.Judge(judge(mode=judge_pb2.JUDGE_MODE_POOL_SELECTION), timeout=10)
            free = await stub.Judge(judge(mode=judge_pb2.JUDGE_MODE_UNSPECIFIED, candidates=()), timeout=10)
            return chosen, bare, free, endpoint.received

    chosen, bare, free, received = asyncio.run(scenario())
    assert chosen.mode == judge_pb2.JUDGE_MODE_POOL_SELECTION and chosen.candidate_index == 1
    assert (chosen.points[0].lat_deg, chosen.place, chosen.confidence) == (MADRID.lat_deg, "Madrid, Spain", 0.4)
    assert bare.candidate_index == 1 and bare.points[0].radius_km == 0  # no confidence stated
    assert free.mode == judge_pb2.JUDGE_MODE_FREE_GENERATION  # nothing to choose among
    assert {r.headers["authorization"] for r in received} == {"Bearer sk-judge-secret"}


def test_unusable_replies_answer_ok_with_no_point_and_the_failure_named():
    replies = [
        "Somewhere with a lot of sky, I would say.",
        '{"lat": 48.85, "lon": 2.35, "place": "Paris"',
        '{"lat": 123.4, "lon": 2.35, "place": "Paris", "confidence": 0.9}',
        '{"lat": null, "lon": null, "place": null, "confidence": 0}',
        "I cannot tell where this was taken.",
    ]

    async def scenario():
        async with judge_server(ep.ChatEndpoint().then(*map(ep.answer, replies))) as (stub, _, server):
            answers = [await stub.Judge(judge(), timeout=10) for _ in replies]
            return answers, metric(server, "geoloc_judge_failures_total", kind="out_of_range"), server

    answers, off_globe, server = asyncio.run(scenario())
    assert [a.failure.split(":")[0] for a in answers] == ["no_json", "no_json", "out_of_range", "", ""]
    assert "lat 123.4 is outside [-90, 90]" in answers[2].failure
    assert all(not a.points and a.tokens_in == 1000 for a in answers)  # the tokens were spent all the same
    assert off_globe == 1 and metric(server, "geoloc_judge_calls_total", outcome="cannot_tell") == 2


def test_429_with_retry_after_then_success_waits_as_told():
    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.error(429, {"Retry-After": "0.4"}))
        async with judge_server(endpoint) as (stub, endpoint, _):
            result = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            return result, len(endpoint.received)

    (answer, seconds), requests = asyncio.run(scenario())
    assert answer.points and requests == 2 and seconds >= 0.4


def test_500_and_a_dropped_connection_are_retried_until_the_retries_run_out():
    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.error(500), ep.drop(), ep.answer(PARIS_ANSWER))
        endpoint.then(ep.error(503), ep.error(502), ep.error(500))
        async with judge_server(endpoint, max_retries=2) as (stub, endpoint, server):
            recovered, _ = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            failed, _ = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            return (
                recovered,
                failed,
                len(endpoint.received),
                metric(server, "geoloc_judge_failures_total", kind="server_error"),
            )

    recovered, failed, requests, server_errors = asyncio.run(scenario())
    assert recovered.points  # 500, dropped, then an answer
    assert failed.code() == UNAVAILABLE and "server_error" in failed.details() and "HTTP 500" in failed.details()
    assert retry_delay_s(failed) is not None
    assert requests == 3 + 3 and server_errors == 1


def test_an_endpoint_that_is_not_there_is_unavailable():
    async def scenario():
        async with judge_server(max_retries=1) as (stub, endpoint, _):
            endpoint._server.close()  # the port refuses from now on
            await endpoint._server.wait_closed()
            return await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))

    error, _ = asyncio.run(scenario())
    assert error.code() == UNAVAILABLE and "unreachable" in error.details()


def test_a_hang_past_the_timeout_is_deadline_exceeded_and_so_is_the_callers_shorter_deadline():
    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.hang(30), ep.hang(30))
        async with judge_server(endpoint, timeout_s=0.5) as (stub, endpoint, _):
            ours = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            theirs = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout), timeout=0.3)
            return ours, theirs, len(endpoint.received)

    (ours, ours_s), (theirs, theirs_s), requests = asyncio.run(scenario())
    assert ours.code() == DEADLINE and "timed out" in ours.details() and 0.5 <= ours_s < 2.5
    assert theirs.code() == DEADLINE and theirs_s < 1.5
    assert requests == 2  # a timeout is not retried


@pytest.mark.parametrize("declared", [True, False])
def test_a_huge_body_is_not_read_past_the_limit(declared):
    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.huge(4_000_000, declared))
        async with judge_server(endpoint, max_response_bytes=65536) as (stub, _, _server):
            return await stub.Judge(judge(), timeout=10)

    answer = asyncio.run(scenario())
    assert not answer.points and answer.failure.startswith("too_large: ") and "65536" in answer.failure


def test_the_breaker_opens_after_n_failures_refuses_at_once_and_closes_after_open_s():
    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.error(500), ep.error(500))
        async with judge_server(endpoint, max_retries=0, breaker_failures=2, breaker_open_s=0.6) as (
            stub,
            endpoint,
            server,
        ):
            seen = []
            for _ in range(3):
                seen.append(await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout)))
            opened = (len(endpoint.received), metric(server, "geoloc_judge_breaker_state"))
            await asyncio.sleep(0.6)
            trial = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            closed = (len(endpoint.received), metric(server, "geoloc_judge_breaker_state"))
            refused = metric(server, "geoloc_judge_failures_total", kind="breaker_open")
            return seen, opened, trial, closed, refused

    seen, opened, (trial, _), closed, refused = asyncio.run(scenario())
    assert [e.code() for e, _ in seen] == [UNAVAILABLE] * 3
    third, third_s = seen[2]
    assert "breaker_open" in third.details() and third_s < 0.5 and 0 < retry_delay_s(third) <= 0.6
    assert opened == (2, 2.0)  # the third call never reached the endpoint; the gauge reads open
    assert trial.points and closed == (3, 0.0) and refused == 1


def test_calls_beyond_max_concurrent_calls_wait_their_turn():
    async def scenario():
        endpoint = ep.ChatEndpoint(default=ep.later(0.2, ep.answer('{"lat": 1, "lon": 2}')))
        async with judge_server(endpoint, max_concurrent_calls=2) as (stub, endpoint, _):
            answers = await asyncio.gather(*(stub.Judge(judge(), timeout=10) for _ in range(5)))
            return answers, endpoint.most_in_flight

    answers, most = asyncio.run(scenario())
    assert all(a.points for a in answers) and most == 2


def test_a_refusing_endpoint_and_a_judge_turned_off_are_failed_preconditions():
    async def scenario():
        async with judge_server(ep.ChatEndpoint().then(ep.error(401))) as (stub, _, _server):
            refused, _ = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
        async with judge_server(url="", model="") as (stub, _, _server):
            off, _ = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
        return refused, off

    refused, off = asyncio.run(scenario())
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION and "HTTP 401" in refused.details()
    assert off.code() == grpc.StatusCode.FAILED_PRECONDITION and "GEOLOC_JUDGE_URL is empty" in off.details()


def test_an_https_endpoint_is_verified_against_the_system_cas_or_the_configured_one(tmp_path):
    pki = make_pki(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)

    async def scenario():
        async with judge_server(ep.ChatEndpoint(tls=tls), max_retries=0) as (stub, endpoint, _):
            unverified, _ = await outcome(lambda timeout: stub.Judge(judge(), timeout=timeout))
            assert endpoint.url.startswith("https://")
        async with judge_server(ep.ChatEndpoint(tls=tls), ca_file=pki.ca) as (stub, _, _server):
            verified = await stub.Judge(judge(), timeout=10)
        return unverified, verified

    unverified, verified = asyncio.run(scenario())
    assert unverified.code() == UNAVAILABLE and "certificate did not verify" in unverified.details()
    assert verified.points


BAD = [
    (judge(image=b""), "image"),
    (judge(image=b"not a photo at all"), "image"),
    (judge(candidates=[LISBON] * 33), "candidates"),
    (judge(candidates=[judge_pb2.Candidate(lat_deg=91, lon_deg=0, probability=0.5)]), "candidates[0].lat_deg"),
    (judge(candidates=[LISBON, judge_pb2.Candidate(lat_deg=0, lon_deg=-181)]), "candidates[1].lon_deg"),
    (judge(candidates=[judge_pb2.Candidate(probability=1.5)]), "candidates[0].probability"),
    (judge(candidates=[judge_pb2.Candidate(probability=math.nan)]), "candidates[0].probability"),
    (judge(candidates=[judge_pb2.Candidate(place="x" * 201)]), "candidates[0].place"),
    (judge(mode=judge_pb2.JUDGE_MODE_POOL_SELECTION, candidates=()), "candidates"),
    (judge(mode=7), "mode"),
]


def test_bad_requests_are_invalid_arguments_and_the_server_keeps_serving():
    async def scenario():
        async with judge_server() as (stub, endpoint, _):
            errors = [(await outcome(lambda timeout, r=r: stub.Judge(r, timeout=timeout)))[0] for r, _ in BAD]
            after = await stub.Judge(judge(), timeout=10)
            return errors, after, len(endpoint.received)

    errors, after, requests = asyncio.run(scenario())
    for (_, field), error in zip(BAD, errors, strict=True):
        assert_refused(error, field)
    assert after.points and requests == 1  # no bad request reached the endpoint


def test_no_log_line_holds_the_photo_the_prompt_or_the_key(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("sk-never-logged")
    lines = io.StringIO()
    configure_logging("debug", "json", stream=lines)

    async def scenario():
        endpoint = ep.ChatEndpoint().then(ep.answer(PARIS_ANSWER), ep.error(500), ep.answer("nonsense"))
        async with judge_server(endpoint, api_key_file=key, max_retries=1, log_requests=True) as (stub, endpoint, _):
            for mode in (judge_pb2.JUDGE_MODE_FREE_GENERATION, judge_pb2.JUDGE_MODE_POOL_SELECTION):
                await outcome(lambda timeout, m=mode: stub.Judge(judge(mode=m), timeout=timeout))
            return endpoint.received

    try:
        received = asyncio.run(scenario())
    finally:
        configure_logging("info", "json")
    sent_photo = received[0].body["messages"][1]["content"][1]["image_url"]["url"].split(",", 1)[1]
    prompt = received[0].body["messages"][1]["content"][0]["text"]
    secrets = [
        sent_photo[:64],
        base64.b64encode(PHOTO[:48]).decode(),
        SYSTEM[:40],
        ANSWER_FORMAT[:40],
        prompt.splitlines()[0][:40],
        "Lisbon, Portugal: lat",
        "sk-never-logged",
        "Haussmann",  # the model's reply too
    ]
    logged = lines.getvalue().splitlines()
    assert any(json.loads(line).get("event") == "judge_called" for line in logged if line.startswith("{"))
    leaks = [(secret, line[:120]) for line in logged for secret in secrets if secret in line]
    assert not leaks, leaks
