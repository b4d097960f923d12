"""Faults injected into a running suite: every part is a real process on loopback.

- Triton stopped: Embed and Locate answer UNAVAILABLE at once, with a google.rpc.RetryInfo,
  and both answer again by themselves once Triton is back on its port.
- An expert killed (SIGKILL) and restarted under load: no call fails; the calls that needed the
  dead expert come back as partial answers, and it is used again once it is back.
- An expert hung (SIGSTOP): the caller's deadline holds, and so does the orchestrator's own
  deadline when the caller sets none.
- Graceful drain: one of two orchestrator replicas behind a client-side round robin is sent
  SIGTERM mid-run, and not one call fails.

These tests start their own expert, Triton and orchestrator processes, since they kill them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

import grpc
import pytest

from geoloc.client.load import drive
from geoloc.common.channels import create_channel
from geoloc.common.errors import retry_delay_s
from geoloc.common.ports import free_port
from geoloc.tritonserver.launcher import TritonLaunch, TritonServer
from geoloc.v1 import embedding_pb2, embedding_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.servers import start_embedding_service, start_service, stop, wait_for_health

pytestmark = [pytest.mark.timeout(420), pytest.mark.integration]

# Generous per-expert timeouts: on two shared cores a loaded expert is slow, and these tests are
# about faults, not about an expert that is merely late.
PATIENT = {"gallery_timeout_s": "30", "tokens_timeout_s": "30", "embed_timeout_s": "30"}


@pytest.fixture(scope="module")
def images(photos) -> list[bytes]:
    """Six real photos' bytes (tests/conftest.py's `photos`), sent round by the load."""
    return [path.read_bytes() for path in photos[:6]]


class Expert:
    """An expert service process on a fixed port, so that a restart comes back at the same address."""

    def __init__(self, name: str):
        self.name, self.port = name, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self, wait_s: float = 240) -> float:
        """Starts it and waits for SERVING; returns time.perf_counter() when it was."""
        self.process, _ = start_service(self.name, port=self.port)
        wait_for_health(self.address, wait_s, self.process)
        return time.perf_counter()

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            stop(self.process)


@pytest.fixture(scope="module")
def gallery_and_tokens():
    experts = {name: Expert(name) for name in ("gallery", "tokens")}
    try:
        for expert in experts.values():
            expert.start()
        yield experts
    finally:
        for expert in experts.values():
            expert.stop()


def start_orchestrator(embedding_address: str, experts: dict[str, Expert] | None = None, **env: str):
    # These tests are about faults, not overload: every call of their few clients is admitted.
    env = {"max_in_flight": "none", **env}
    addresses = {"gallery_address": "none", "sampler_address": "none", "tokens_address": "none"}
    addresses.update({f"{name}_address": expert.address for name, expert in (experts or {}).items()})
    process, address = start_service(
        "orchestrator", embedding_address=embedding_address, **addresses, **{**PATIENT, **env}
    )
    wait_for_health(address, 120, process)
    return process, address


def statuses(answer: orchestrator_pb2.LocateResponse) -> dict[str, str]:
    return {
        orchestrator_pb2.Expert.Name(o.expert): orchestrator_pb2.ExpertStatus.Name(o.status)
        for o in answer.expert_outputs
    }


def test_an_expert_killed_and_restarted_under_load_costs_only_partial_answers(
    embedding_address, gallery_and_tokens, images
):
    gallery = gallery_and_tokens["gallery"]
    process, address = start_orchestrator(embedding_address, gallery_and_tokens)

    async def scenario():
        stop_load = asyncio.Event()
        async with create_channel(address) as channel:
            load = asyncio.create_task(drive(channel, address, images, clients=3, seconds=300, stop=stop_load))
            await asyncio.sleep(6)
            gallery.signal(signal.SIGKILL)
            killed = time.perf_counter()
            await asyncio.to_thread(gallery.process.wait)
            # Long enough for calls begun after the kill to end before the restart: on two cores
            # a call under this load takes about 3 s.
            await asyncio.sleep(8)
            restarted = time.perf_counter()
            serving = await asyncio.to_thread(gallery.start)
            await asyncio.sleep(8)
            stop_load.set()
            return await load, killed, restarted, serving

    try:
        report, killed, restarted, serving = asyncio.run(scenario())
    finally:
        stop(process)
    killed_s, restarted_s, serving_s = (t - report.began for t in (killed, restarted, serving))
    assert report.codes() == {"OK": len(report.records)}, report.codes()
    assert all(r.experts["tokens"] == "EXPERT_STATUS_OK" for r in report.records)
    before = [r for r in report.records if r.ended_s < killed_s]
    # Until its replacement is started, the expert is certainly gone (after that, it may answer a
    # little before this test's health poll sees it SERVING).
    during = [r for r in report.records if r.started_s > killed_s and r.ended_s < restarted_s]
    # The channel reconnects within its longest backoff (2 s, plus jitter) of the expert's return.
    after = [r for r in report.records if r.started_s > serving_s + 3]
    assert before and during and after, (len(before), len(during), len(after))
    assert all(r.experts["gallery"] == "EXPERT_STATUS_OK" for r in before)
    assert all(r.partial and r.experts["gallery"] == "EXPERT_STATUS_UNAVAILABLE" for r in during), [
        (round(r.started_s, 1), r.experts["gallery"]) for r in during
    ]
    assert all(r.experts["gallery"] == "EXPERT_STATUS_OK" for r in after)


def test_a_hung_expert_does_not_hold_the_answer_past_the_deadline(embedding_address, gallery_and_tokens, images):
    gallery = gallery_and_tokens["gallery"]
    # With no deadline from the caller, the orchestrator's own default bounds the call.
    process, address = start_orchestrator(embedding_address, gallery_and_tokens, default_deadline_s="6")
    request = orchestrator_pb2.LocateRequest(image=images[0])
    try:
        with grpc.insecure_channel(address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            assert statuses(stub.Locate(request, timeout=60))["EXPERT_GALLERY"] == "EXPERT_STATUS_OK"
            gallery.signal(signal.SIGSTOP)
            try:
                timed = []
                for timeout in (4.0, None):
                    started = time.perf_counter()
                    answer = stub.Locate(request, timeout=timeout)
                    timed.append((time.perf_counter() - started, statuses(answer)))
            finally:
                gallery.signal(signal.SIGCONT)
            recovered = statuses(stub.Locate(request, timeout=60))
    finally:
        stop(process)
    (with_deadline, first), (without_deadline, second) = timed
    assert with_deadline < 4.0 and without_deadline < 6.0
    for answered in (first, second):
        assert answered["EXPERT_GALLERY"] == "EXPERT_STATUS_DEADLINE_EXCEEDED"
        assert answered["EXPERT_TOKENS"] == "EXPERT_STATUS_OK"
    assert recovered["EXPERT_GALLERY"] == "EXPERT_STATUS_OK"


def test_triton_stopped_gives_quick_unavailable_with_retry_info_and_both_recover(images):
    port = free_port()
    triton = TritonServer(TritonLaunch(grpc_port=port, metrics_port=None))
    triton.start()
    embedding, orchestrator = None, None
    try:
        triton.wait_until_ready()
        embedding, embedding_address = start_embedding_service(triton.grpc_url)
        wait_for_health(embedding_address, 120, embedding)
        orchestrator, orchestrator_address = start_orchestrator(embedding_address)
        with (
            grpc.insecure_channel(embedding_address) as e_channel,
            grpc.insecure_channel(orchestrator_address) as o_channel,
        ):
            embed = embedding_pb2_grpc.EmbeddingServiceStub(e_channel).Embed
            locate = orchestrator_pb2_grpc.OrchestratorServiceStub(o_channel).Locate
            embed(embedding_pb2.EmbedRequest(image=images[0]), timeout=60)
            triton.stop()

            failures = []
            for call, request in (
                (embed, embedding_pb2.EmbedRequest(image=images[0])),
                (locate, orchestrator_pb2.LocateRequest(image=images[0])),
            ):
                started = time.perf_counter()
                with pytest.raises(grpc.RpcError) as raised:
                    call(request, timeout=30)
                failures.append((raised.value, time.perf_counter() - started))
            for error, elapsed in failures:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert elapsed < 3.0, f"UNAVAILABLE took {elapsed:.1f} s"
                assert "Triton" in error.details()
                assert retry_delay_s(error) and retry_delay_s(error) > 0

            triton = TritonServer(TritonLaunch(grpc_port=port, metrics_port=None))
            triton.start()
            triton.wait_until_ready()
            # Neither service was restarted: each must find Triton again by itself.
            recovered_at = None
            deadline = time.monotonic() + 30
            while recovered_at is None and time.monotonic() < deadline:
                try:
                    embed(embedding_pb2.EmbedRequest(image=images[0]), timeout=10)
                    recovered_at = time.monotonic()
                except grpc.RpcError:
                    time.sleep(0.2)
            assert recovered_at is not None, "the embedding service did not recover within 30 s of Triton's return"
            answer = locate(orchestrator_pb2.LocateRequest(image=images[0]), timeout=60)
            assert answer.best_guess.place.kind
    finally:
        for process in (orchestrator, embedding):
            if process is not None:
                stop(process)
        triton.stop()


def served_locates(metrics_port: int) -> float:
    """Locate calls a replica has finished, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and 'grpc_method="Locate"' in line
    )


def test_sigterm_to_one_of_two_replicas_behind_round_robin_fails_no_call(embedding_address, images):
    replicas = []
    try:
        for _ in range(2):
            metrics_port = free_port()
            process, address = start_orchestrator(
                embedding_address, drain_s="1.5", grace_period_s="20", metrics_port=str(metrics_port)
            )
            replicas.append((process, address, metrics_port))
        target = "ipv4:" + ",".join(address for _, address, _ in replicas)

        async def scenario():
            async with create_channel(target) as channel:
                load = asyncio.create_task(drive(channel, target, images, clients=4, seconds=14))
                await asyncio.sleep(6)
                served = [await asyncio.to_thread(served_locates, port) for _, _, port in replicas]
                replicas[0][0].send_signal(signal.SIGTERM)
                exit_code = await asyncio.to_thread(replicas[0][0].wait, 40)
                return await load, served, exit_code

        report, served, exit_code = asyncio.run(scenario())
    finally:
        for process, _, _ in replicas:
            if process.poll() is None:
                stop(process)
    assert all(count > 0 for count in served), f"round robin did not use both replicas: {served}"
    assert exit_code == 0
    assert report.codes() == {"OK": len(report.records)}, report.codes()
    assert max(r.started_s for r in report.records) > 10  # the run went on well past the SIGTERM
