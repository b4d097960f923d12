"""TLS and mutual TLS on the suite's servers and clients, the plaintext health port, and the
server-side limit on a call's time: real servers on loopback port 0, certificates from a
throwaway CA (tests/certificates.py).

The probe GalleryService (tests/probe_service.py) drives the runtime's mechanics; the tokens
service, Triton with the embedding backbone, and the two command-line clients run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoloc.cli import main
from geoloc.common.channels import create_channel
from geoloc.common.errors import NotReady
from geoloc.common.paths import CHECKOUT
from geoloc.common.server import create_server, serving
from geoloc.common.settings import ServerSettings, SettingsError, load_settings
from geoloc.common.tls import ClientTls
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.calls import served_in_background
from tests.certificates import Pki, make_pki
from tests.photos import write_split
from tests.probe_service import GALLERY_SERVICE, ProbeGallery, probe_spec
from tests.servers import pooled_feature

pytestmark = pytest.mark.integration  # every test starts a server, Triton or a service process

ROOT = CHECKOUT
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, mutual: bool = False, **overrides) -> dict:
    """The server-side TLS settings: the CA's server certificate, and with `mutual` its client CA."""
    return dict(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca if mutual else None,
        **overrides,
    )


@contextlib.asynccontextmanager
async def probe_server(**overrides):
    """The probe behind the real runtime, warm, on loopback port 0; yields the server."""
    settings = ServerSettings(port=0, metrics_port=None, log_requests=False, **overrides)
    async with serving(settings, [probe_spec(ProbeGallery())], 5, grace_s=0) as (server, _):
        yield server


def search(k: int = 2) -> gallery_pb2.SearchRequest:
    return gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=[0.1, 0.2]), k=k)


async def search_over(address: str, tls: ClientTls | None, timeout: float | None = 5, metadata=()):
    """One Search on a fresh channel (`tls` None: plaintext): the answer, or the error it got."""
    async with create_channel(address, tls=tls) as channel:
        try:
            return await gallery_pb2_grpc.GalleryServiceStub(channel).Search(
                search(), timeout=timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            return error


def refused(result) -> bool:
    """A handshake that failed reaches the caller as UNAVAILABLE: nothing was served."""
    return isinstance(result, grpc.aio.AioRpcError) and result.code() == grpc.StatusCode.UNAVAILABLE


async def health(address: str, timeout: float = 2) -> int | grpc.StatusCode:
    """The overall health over a plaintext channel, or the error code."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            return (
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            ).status
        except grpc.aio.AioRpcError as error:
            return error.code()


def test_a_tls_server_refuses_plaintext_and_answers_clients_that_trust_its_ca(pki):
    async def scenario():
        async with probe_server(**tls_settings(pki)) as server:
            address = f"127.0.0.1:{server.port}"
            assert refused(await search_over(address, None))
            assert len((await search_over(address, ClientTls(pki.ca))).points) == 2
            # A client that trusts another CA does not accept this server.
            assert refused(await search_over(address, ClientTls(pki.rogue_ca)))
            # The name the certificate must carry: by default the address's host (127.0.0.1, a
            # SAN), else the override, which must be one of its names too.
            assert len((await search_over(address, ClientTls(pki.ca, server_name="localhost"))).points) == 2
            assert refused(await search_over(address, ClientTls(pki.ca, server_name="gallery.example")))
            # TLS only: a client certificate is accepted but not needed.
            assert len((await search_over(address, ClientTls(pki.ca, pki.client_cert, pki.client_key))).points) == 2

    asyncio.run(scenario())


def test_a_mutual_tls_server_answers_only_clients_with_a_certificate_from_its_client_ca(pki):
    async def scenario():
        async with probe_server(**tls_settings(pki, mutual=True)) as server:
            address = f"localhost:{server.port}"
            assert refused(await search_over(address, None))
            assert refused(await search_over(address, ClientTls(pki.ca)))  # no certificate
            assert refused(await search_over(address, ClientTls(pki.ca, pki.rogue_client_cert, pki.rogue_client_key)))
            answer = await search_over(address, ClientTls(pki.ca, pki.client_cert, pki.client_key))
            assert len(answer.points) == 2

    asyncio.run(scenario())


def test_the_plaintext_health_port_reports_the_mutual_tls_servers_health_and_serves_nothing_else(pki):
    async def scenario():
        settings = ServerSettings(
            port=0, metrics_port=None, log_requests=False, health_port=0, drain_s=1.0, **tls_settings(pki, mutual=True)
        )
        gate = asyncio.Event()
        server, port = create_server(settings, [probe_spec(ProbeGallery(warm_up_gate=gate))])
        await server.start()
        try:
            health_address = f"127.0.0.1:{server.health_port}"
            assert server.health_port not in (0, None, port)
            assert await health(health_address) == NOT_SERVING  # warming up
            gate.set()
            await server.wait_until_ready(5)
            assert await health(health_address) == SERVING
            assert await health(f"127.0.0.1:{port}") == grpc.StatusCode.UNAVAILABLE  # the main port wants mTLS
            async with grpc.aio.insecure_channel(health_address) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as only_health:
                    await gallery_pb2_grpc.GalleryServiceStub(channel).Search(search(), timeout=2)
                assert only_health.value.code() == grpc.StatusCode.UNIMPLEMENTED
                per_service = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=GALLERY_SERVICE), timeout=2
                )
                assert per_service.status == SERVING
            shutdown = server.shutdown(grace_s=0)
            await asyncio.sleep(0.2)  # inside the drain: the health port answers NOT_SERVING
            assert await health(health_address) == NOT_SERVING
            await shutdown
            assert await health(health_address, timeout=1) in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        finally:
            await server.shutdown(grace_s=0)

    asyncio.run(scenario())


def test_the_orchestrators_expert_clients_reach_a_mutual_tls_tokens_service_only_with_their_certificate(pki):
    from geoloc.orchestrator.config import OrchestratorSettings
    from geoloc.orchestrator.experts import ExpertClients
    from geoloc.tokens.config import TokensSettings
    from geoloc.tokens.server import TokensServicer, tokens_spec
    from geoloc.v1 import orchestrator_pb2 as api

    embedding = common_pb2.Embedding(values=pooled_feature(0), backbone=common_pb2.ModelInfo(name="efficientnet-lite2"))

    async def ask_tokens(port: int, **client_tls) -> object:
        settings = OrchestratorSettings(
            port=0,
            metrics_port=None,
            tokens_address=f"localhost:{port}",
            gallery_address=None,
            sampler_address=None,
            **client_tls,
        )
        clients = ExpertClients(settings)
        try:
            return await clients.ask("tokens", embedding, budget_s=10)
        finally:
            await clients.close()

    async def scenario():
        settings = TokensSettings(port=0, metrics_port=None, log_requests=False, **tls_settings(pki, mutual=True))
        async with serving(settings, [tokens_spec(TokensServicer(settings))], 60, grace_s=0) as (_, port):
            answer = await ask_tokens(
                port,
                client_tls_ca_file=pki.ca,
                client_tls_cert_file=pki.client_cert,
                client_tls_key_file=pki.client_key,
            )
            assert answer.status == api.EXPERT_STATUS_OK, answer.message
            assert answer.points is not None and len(answer.cells) > 0
            without_certificate = await ask_tokens(port, client_tls_ca_file=pki.ca)
            assert without_certificate.status == api.EXPERT_STATUS_UNAVAILABLE, without_certificate.message
            plaintext = await ask_tokens(port)
            assert plaintext.status == api.EXPERT_STATUS_UNAVAILABLE, plaintext.message

    asyncio.run(scenario())


def test_incomplete_or_missing_tls_settings_raise_an_error_naming_the_variable(pki, tmp_path, monkeypatch):
    from geoloc.orchestrator.config import OrchestratorSettings
    from geoloc.tokens.config import TokensSettings

    cases = [
        ({"TLS_KEY_FILE": pki.server_key}, "GEOLOC_TOKENS_TLS_CERT_FILE, GEOLOC_TOKENS_TLS_KEY_FILE: "),
        (
            {"TLS_CERT_FILE": tmp_path / "absent.crt", "TLS_KEY_FILE": pki.server_key},
            f"GEOLOC_TOKENS_TLS_CERT_FILE='{tmp_path / 'absent.crt'}': ",
        ),
        ({"TLS_CERT_FILE": pki.server_cert, "TLS_KEY_FILE": tmp_path}, "GEOLOC_TOKENS_TLS_KEY_FILE="),  # a folder
        (
            {"TLS_CLIENT_CA_FILE": pki.ca},
            "GEOLOC_TOKENS_TLS_CERT_FILE, GEOLOC_TOKENS_TLS_KEY_FILE, GEOLOC_TOKENS_TLS_CLIENT_CA_FILE: ",
        ),
    ]
    for variables, named in cases:
        with monkeypatch.context() as env:
            for name, value in variables.items():
                env.setenv(f"GEOLOC_TOKENS_{name}", str(value))
            with pytest.raises(SettingsError) as error:
                load_settings(TokensSettings)
            assert named in str(error.value), (variables, str(error.value))
    with monkeypatch.context() as env:
        env.setenv("GEOLOC_ORCHESTRATOR_CLIENT_TLS_CERT_FILE", str(pki.client_cert))
        env.setenv("GEOLOC_ORCHESTRATOR_CLIENT_TLS_KEY_FILE", str(pki.client_key))
        with pytest.raises(SettingsError, match="GEOLOC_ORCHESTRATOR_CLIENT_TLS_CA_FILE"):
            load_settings(OrchestratorSettings)
        env.setenv("GEOLOC_ORCHESTRATOR_CLIENT_TLS_CA_FILE", str(pki.ca))
        assert load_settings(OrchestratorSettings).client_tls() == ClientTls(pki.ca, pki.client_cert, pki.client_key)
    with pytest.raises(SettingsError, match="health_port must differ"):
        load_settings(TokensSettings, port=7000, health_port=7000)

    # A service process with a certificate that is not there exits 2 at start-up, naming it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOLOC_PROBE_")}
    env.update(
        GEOLOC_PROBE_PORT="0",
        GEOLOC_PROBE_METRICS_PORT="none",
        GEOLOC_PROBE_TLS_KEY_FILE=str(pki.server_key),
        GEOLOC_PROBE_TLS_CERT_FILE=str(tmp_path / "absent.crt"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.probe_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert f"GEOLOC_PROBE_TLS_CERT_FILE='{tmp_path / 'absent.crt'}'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_servers_max_call_s_ends_a_call_without_a_deadline_and_the_server_keeps_serving():
    slow = (("x-probe-delay-s", "30"),)

    async def scenario():
        async with probe_server(max_call_s=0.5) as server:
            address = f"127.0.0.1:{server.port}"
            for client_timeout in (None, 20.0):  # no deadline, and one longer than the server's limit
                started = time.monotonic()
                error = await search_over(address, None, timeout=client_timeout, metadata=slow)
                elapsed = time.monotonic() - started
                assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "the server's limit of 0.5 s per call was reached" in error.details()
                assert 0.45 <= elapsed < 3, elapsed
            # A client deadline shorter than the limit is the client's own.
            error = await search_over(address, None, timeout=0.2, metadata=slow)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "server's limit" not in error.details()
            # The server goes on serving, and counted each call by its code.
            assert len((await search_over(address, None)).points) == 2
            labels = {"grpc_service": GALLERY_SERVICE, "grpc_method": "Search"}
            registry = server.metrics.registry
            for _ in range(50):  # the short-deadline call's handler may still be finishing
                if (
                    registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "DEADLINE_EXCEEDED"})
                    == 3
                ):
                    break
                await asyncio.sleep(0.05)
            assert (
                registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "DEADLINE_EXCEEDED"})
                == 3
            )
            assert registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "OK"}) == 1

    asyncio.run(scenario())


def test_triton_with_mutual_tls_serves_the_backbone_to_a_client_with_its_certificate_only(pki, tmp_path, capsys):
    from geoloc.common.ports import free_port
    from geoloc.embedding.triton_backbone import TritonBackbone
    from geoloc.tritonserver.launcher import TritonLaunch, TritonServer, TritonTls, triton_command

    client = ClientTls(pki.ca, pki.client_cert, pki.client_key)
    launch = TritonLaunch(
        grpc_port=free_port(),
        metrics_port=None,
        tls=TritonTls(pki.server_cert, pki.server_key, readiness_client=client, client_ca_file=pki.ca),
    )
    flags = triton_command(launch, Path("backends"))
    assert {"--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", f"--grpc-root-cert={pki.ca.resolve()}"} <= set(flags)

    async def scenario(url: str):
        # connect() waits for the model, reads its config and checks one real inference.
        backbone = await TritonBackbone.connect(url, "efficientnet_lite2", ready_timeout_s=30, tls=client)
        try:
            assert backbone.info.dimension == 1280
        finally:
            await backbone.close()
        for stranger in (ClientTls(pki.ca), ClientTls(pki.ca, pki.rogue_client_cert, pki.rogue_client_key), None):
            with pytest.raises(NotReady):
                await TritonBackbone.connect(url, "efficientnet_lite2", ready_timeout_s=0.5, tls=stranger)

    with TritonServer(launch) as triton:  # its readiness wait speaks mTLS too
        asyncio.run(scenario(triton.grpc_url))
        # `geoloc features` through the same Triton, with the client certificate (k8s/jobs' Job does so).
        from tests.photos import write_photos

        split = write_split(
            tmp_path / "split", [("kauai.jpg", 22.07, -159.66, "a")], {"kauai.jpg": write_photos(tmp_path, 1)[0]}
        )
        tls_flags = [
            "--triton-ca",
            str(pki.ca),
            "--triton-cert",
            str(pki.client_cert),
            "--triton-key",
            str(pki.client_key),
        ]
        out = tmp_path / "features"
        assert (
            main(["features", "--input", str(split), "--out", str(out), "--triton-url", triton.grpc_url, *tls_flags])
            == 0
        )
        assert "1 photos, 0 failed" in capsys.readouterr().out
        assert json.loads((out / "manifest.json").read_text())["computed_by"] == f"triton at {triton.grpc_url}"


class FixedOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """An orchestrator that answers every photo with the same place: the command lines' counterpart."""

    async def Locate(self, request, context):
        best = orchestrator_pb2.Hypothesis(
            lat_deg=22.05, lon_deg=-159.5, probability=0.9, radius_50_km=10, radius_90_km=40
        )
        return orchestrator_pb2.LocateResponse(
            best_guess=best,
            hypotheses=[best],
            radius_50_km=10,
            radius_90_km=40,
            localizability=0.8,
            answer_source=orchestrator_pb2.ANSWER_SOURCE_FUSION,
        )


def test_locate_and_eval_speak_mutual_tls_with_the_tls_flags(pki, tmp_path, capsys):
    from geoloc.common.server import servicer_spec

    photo = write_split(tmp_path, [("a.jpg", 22.0, -159.5, "someone")]) / "images" / "a.jpg"
    photo.write_bytes(b"not decoded by the stand-in")
    spec = servicer_spec(
        orchestrator_pb2,
        "OrchestratorService",
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        FixedOrchestrator(),
    )
    settings = ServerSettings(port=0, metrics_port=None, log_requests=False, **tls_settings(pki, mutual=True))
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    with served_in_background(settings, [spec], ready_timeout_s=10) as port:
        address = f"127.0.0.1:{port}"
        assert main(["locate", str(photo), "--address", address, "--timeout", "10", *tls]) == 0
        assert "22.05" in capsys.readouterr().out
        assert main(["locate", str(photo), "--address", address, "--timeout", "10", "--tls-ca", str(pki.ca)]) == 1
        assert "cannot reach the orchestrator" in capsys.readouterr().err
        assert main(["locate", str(photo), "--address", address, "--tls-cert", str(pki.client_cert)]) == 2
        assert "need --tls-ca" in capsys.readouterr().err
        assert main(["eval", "--orchestrator", address, "--data", str(tmp_path), "--timeout", "10", *tls]) == 0
        assert "| fused | 1 |" in capsys.readouterr().out
        assert (
            main(["eval", "--orchestrator", address, "--data", str(tmp_path), "--tls-ca", str(tmp_path / "x.pem")]) == 2
        )
        assert "--tls-ca:" in capsys.readouterr().err
