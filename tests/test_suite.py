"""`geoloc up|down|status`: the plan and its order as functions, then real suites of real processes.

The suites run the real services (tokens and sampler are the cheapest; Triton with the
embedding service for the dependency wait) through the real CLI, on a block of free ports
and a temporary run directory, so that they never meet a suite a developer has running.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from geoloc.cli import build_parser
from geoloc.common.paths import CHECKOUT
from geoloc.experts import SERVICE_TABLE
from geoloc.orchestrator.parameters import load_fusion
from geoloc.suite import cli as suite_cli
from geoloc.suite.lifecycle import port_taken
from geoloc.suite.plan import PlanError, SuiteOptions, build_plan, read_bundle, select, start_order, startable
from geoloc.suite.processes import is_ours, spawn, start_ticks, stop
from geoloc.v1 import orchestrator_pb2
from tests.calls import default_statuses

pytestmark = pytest.mark.timeout(300)

FULL = ("triton", "embedding", "gallery", "sampler", "tokens", "text", "orchestrator")


def plan_of(names, **options):
    return {c.name: c for c in build_plan(select(names), SuiteOptions(**options), Path("/tmp/run"))}


# --- the plan, pure -------------------------------------------------------------------------


def test_the_start_order_puts_each_component_after_what_it_needs_whatever_the_input_order():
    plan = build_plan(select(), SuiteOptions(), Path("/tmp/run"))
    assert [c.name for c in plan] == list(FULL)
    shuffled = plan[:]
    random.Random(3).shuffle(shuffled)
    assert [c.name for c in start_order(shuffled)] == [c.name for c in plan]
    position = {c.name: i for i, c in enumerate(plan)}
    for component in plan:
        assert all(position[need] < position[component.name] for need in component.needs), component.name
    assert plan[-1].needs == ("embedding", "gallery", "sampler", "tokens", "text")


def test_the_orchestrator_waits_only_for_the_experts_in_the_plan_and_is_told_none_for_the_others():
    assert select(["orchestrator", "tokens"]) == ("triton", "embedding", "tokens", "orchestrator")
    orchestrator = plan_of(["orchestrator", "tokens"])["orchestrator"]
    assert orchestrator.needs == ("embedding", "tokens")
    assert orchestrator.env["GEOLOC_ORCHESTRATOR_EMBEDDING_ADDRESS"] == "127.0.0.1:50052"
    assert orchestrator.env["GEOLOC_ORCHESTRATOR_TOKENS_ADDRESS"] == "127.0.0.1:50055"
    assert orchestrator.env["GEOLOC_ORCHESTRATOR_GALLERY_ADDRESS"] == "none"
    assert orchestrator.env["GEOLOC_ORCHESTRATOR_SAMPLER_ADDRESS"] == "none"
    assert orchestrator.env["GEOLOC_ORCHESTRATOR_TEXT_ADDRESS"] == "none"
    assert plan_of(None)["orchestrator"].env["GEOLOC_ORCHESTRATOR_TEXT_ADDRESS"] == "127.0.0.1:50056"
    assert orchestrator.command[1:] == ("-m", "geoloc.orchestrator.server")
    assert plan_of(["orchestrator"])["orchestrator"].needs == ("embedding",)


def test_a_component_starts_once_its_needs_are_serving_not_merely_started():
    plan = build_plan(select(), SuiteOptions(), Path("/tmp/run"))
    names = lambda components: [c.name for c in components]
    assert names(startable(plan, started=[], healthy=[])) == ["triton", "gallery", "sampler", "tokens", "text"]
    first = ["triton", "gallery", "sampler", "tokens", "text"]
    assert startable(plan, started=first, healthy=[]) == []
    assert names(startable(plan, started=first, healthy=["triton"])) == ["embedding"]
    assert startable(plan, started=[*first, "embedding"], healthy=["triton", "embedding", "gallery", "sampler"]) == []
    assert names(startable(plan, started=[*first, "embedding"], healthy=FULL[:-1])) == ["orchestrator"]


def test_default_ports_and_the_addresses_each_component_is_given():
    plan = plan_of(None)
    assert {n: c.port for n, c in plan.items()} == {
        "triton": 8001,
        "orchestrator": 50051,
        "embedding": 50052,
        "gallery": 50053,
        "sampler": 50054,
        "tokens": 50055,
        "text": 50056,
    }
    assert {n: c.metrics_port for n, c in plan.items()} == {
        "triton": 8002,
        "orchestrator": 9464,
        "embedding": 9465,
        "gallery": 9466,
        "sampler": 9467,
        "tokens": 9468,
        "text": 9469,
    }
    assert plan["gallery"].env["GEOLOC_GALLERY_PORT"] == "50053"
    assert plan["gallery"].env["GEOLOC_GALLERY_HOST"] == "127.0.0.1"
    assert plan["embedding"].env["GEOLOC_EMBEDDING_TRITON_URL"] == "127.0.0.1:8001"
    assert plan["embedding"].needs == ("triton",)
    triton = plan["triton"]
    assert triton.health == "triton" and triton.models == ("efficientnet_lite2",)
    assert Path(triton.command[0]).name == "tritonserver"
    assert {
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--allow-http=false",
        "--load-model=efficientnet_lite2",
        "--backend-directory=/tmp/run/triton/backends",
    } <= set(triton.command)

    moved = plan_of(None, base_port=40000, metrics_base_port=None, triton_port=41000, triton_metrics_port=None)
    assert moved["tokens"].port == 40004 and moved["orchestrator"].port == 40000
    assert moved["tokens"].env["GEOLOC_TOKENS_METRICS_PORT"] == "none"
    assert moved["embedding"].env["GEOLOC_EMBEDDING_TRITON_URL"] == "127.0.0.1:41000"
    assert "--allow-metrics=false" in moved["triton"].command


def up_help() -> str:
    """`geoloc up --help` as the CLI prints it, its whitespace folded (the epilog is wrapped)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--help"])
    return " ".join(printed.getvalue().split())


def test_up_help_names_every_service_of_the_registry_at_the_port_the_plan_gives_it():
    text = up_help()
    plan = plan_of(None)
    for service in SERVICE_TABLE:
        port = SuiteOptions().base_port + service.port_offset
        assert plan[service.name].port == port
        assert f"{service.name} {port}," in text or f"{service.name} {port} " in text, service.name
    metrics = sorted(plan[s.name].metrics_port for s in SERVICE_TABLE)
    assert f"their /metrics {metrics[0]}..{metrics[-1]};" in text
    assert f"moves all {len(SERVICE_TABLE)} services" in text
    assert "Triton gRPC 8001, metrics 8002" in text
    # The epilog follows the options it is given, so it cannot drift from the plan's defaults.
    moved = suite_cli.up_epilog(SuiteOptions(base_port=40000, metrics_base_port=9000))
    assert all(f"{s.name} {40000 + s.port_offset}" in " ".join(moved.split()) for s in SERVICE_TABLE)
    assert all(len(line) <= 100 for line in suite_cli.up_epilog().splitlines())


def test_the_orchestrators_default_addresses_are_where_the_plan_starts_each_service():
    """A service started alone (`python -m geoloc.<service>.server`) beside an orchestrator at its
    defaults is found where `geoloc up` would put it: 127.0.0.1, base port + its port_offset."""
    from geoloc.orchestrator.config import OrchestratorSettings

    defaults, plan = OrchestratorSettings.model_fields, plan_of(None)  # the defaults, not this environment's
    for service in SERVICE_TABLE:
        if service.address_setting is not None:
            assert defaults[service.address_setting].default == plan[service.name].address, service.name


def test_only_adds_what_is_required_and_without_refuses_to_drop_it():
    assert select(["embedding"]) == ("triton", "embedding")
    assert select(["tokens", "gallery"]) == ("gallery", "tokens")
    assert select(without=["gallery"]) == ("triton", "embedding", "sampler", "tokens", "text", "orchestrator")
    assert select(without=["triton", "embedding", "orchestrator"]) == ("gallery", "sampler", "tokens", "text")
    with pytest.raises(PlanError, match="embedding needs triton"):
        select(without=["triton"])
    with pytest.raises(PlanError, match="unknown component 'ranker'"):
        select(["ranker"])
    with pytest.raises(PlanError, match="not both"):
        select(["tokens"], ["gallery"])


def test_a_port_planned_twice_is_refused():
    with pytest.raises(PlanError, match="port 8001 is planned for both triton and embedding"):
        plan_of(None, base_port=8000)
    with pytest.raises(PlanError, match="port 50053"):
        plan_of(["gallery"], metrics_base_port=50051)


def test_a_dependency_cycle_is_refused():
    nodes = [SimpleNamespace(name="a", needs=("b",)), SimpleNamespace(name="b", needs=("a",))]
    with pytest.raises(PlanError, match="cycle"):
        start_order(nodes)


# --- processes ------------------------------------------------------------------------------


def wait_for_text(path: Path, text: str, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise TimeoutError(f"{text!r} not in {path}")


def test_a_pid_is_signalled_only_while_it_is_the_process_that_was_started(tmp_path):
    child = spawn(["sleep", "60"], {}, tmp_path / "sleep.log")
    ticks = start_ticks(child.pid)
    assert ticks is not None and is_ours(child.pid, ticks)
    # A recorded start time that differs is what a reused pid looks like: nothing may be sent.
    assert not is_ours(child.pid, ticks + 1)
    assert stop(child.pid, ticks + 1, grace_s=1, child=child) == "not running"
    assert child.poll() is None
    assert stop(child.pid, ticks, grace_s=5, child=child) == "stopped"
    assert child.returncode == -signal.SIGTERM
    assert not is_ours(child.pid, ticks)


def test_what_ignores_sigterm_is_killed_with_its_whole_process_group(tmp_path):
    script = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "helper = subprocess.Popen(['sleep', '60']); print('helper', helper.pid, flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    child = spawn([sys.executable, "-c", script], {}, log)
    helper_pid = int(wait_for_text(log, "helper").split()[1])
    helper_ticks = start_ticks(helper_pid)
    assert helper_ticks is not None
    started = time.monotonic()
    assert stop(child.pid, start_ticks(child.pid), grace_s=0.5, child=child) == "killed"
    assert time.monotonic() - started < 10
    assert child.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5  # the helper is reaped by init, not by us
    while is_ours(helper_pid, helper_ticks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_ours(helper_pid, helper_ticks)


# --- real suites through the CLI ------------------------------------------------------------


def free_port_block(n: int) -> int:
    """A base port b with b..b+n-1 all free now, below the ephemeral range that clients draw from."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        if not any(port_taken("127.0.0.1", port) for port in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def geoloc(*args: str, env: dict[str, str] | None = None, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geoloc.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )


def recorded(run_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads((run_dir / "suite.json").read_text())["components"]}


def wait_until_dead(pid: int, ticks: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while is_ours(pid, ticks):
        assert time.monotonic() < deadline, f"pid {pid} still runs"
        time.sleep(0.05)


@pytest.fixture()
def suite(tmp_path):
    """A run directory and a free port block; whatever a test leaves running is stopped after it."""
    base = free_port_block(12)  # six services' gRPC ports, then their six metrics ports
    run = SimpleNamespace(
        dir=tmp_path / "run", base=base, ports=["--base-port", str(base), "--metrics-base-port", str(base + 6)]
    )
    yield run
    geoloc("down", "--run-dir", str(run.dir), "--grace", "5")


@pytest.mark.integration  # a real suite of service processes
def test_up_status_refusal_a_killed_component_and_down(suite):
    run_dir = ["--run-dir", str(suite.dir)]
    started = geoloc("up", "--only", "tokens", "sampler", *suite.ports, *run_dir)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "all 2 SERVING" in started.stdout
    state = recorded(suite.dir)
    assert sorted(state) == ["sampler", "tokens"]
    assert state["tokens"]["port"] == suite.base + 4 and state["sampler"]["port"] == suite.base + 3
    assert Path(state["tokens"]["log"]).parent == suite.dir / "logs"
    with urllib.request.urlopen(f"http://127.0.0.1:{suite.base + 10}/metrics", timeout=5) as answer:
        assert answer.status == 200  # the metrics port the suite gave tokens

    status = geoloc("status", "--json", *run_dir)
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["all_serving"] is True
    assert [(c["name"], c["alive"], c["health"]) for c in report["components"]] == [
        ("sampler", True, "SERVING"),
        ("tokens", True, "SERVING"),
    ]
    assert all(c["uptime_s"] >= 0 for c in report["components"])

    again = geoloc("up", "--only", "tokens", *suite.ports, *run_dir)
    assert again.returncode == 1
    assert "already running" in again.stderr and f"tokens (pid {state['tokens']['pid']})" in again.stderr
    assert recorded(suite.dir) == state  # the running suite's record is untouched
    assert geoloc("status", *run_dir).returncode == 0

    os.kill(state["tokens"]["pid"], signal.SIGKILL)
    wait_until_dead(state["tokens"]["pid"], state["tokens"]["start_ticks"])
    status = geoloc("status", "--json", *run_dir)
    assert status.returncode == 3
    rows = {c["name"]: c for c in json.loads(status.stdout)["components"]}
    assert (rows["tokens"]["alive"], rows["tokens"]["health"], rows["tokens"]["uptime_s"]) == (
        False,
        "UNREACHABLE",
        None,
    )
    assert (rows["sampler"]["alive"], rows["sampler"]["health"]) == (True, "SERVING")
    table = geoloc("status", *run_dir)
    assert table.returncode == 3
    assert any(
        line.split()[:5] == ["tokens", str(state["tokens"]["pid"]), "no", str(suite.base + 4), "UNREACHABLE"]
        for line in table.stdout.splitlines()
    )

    stopped = geoloc("down", *run_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert f"tokens (pid {state['tokens']['pid']}): not running" in stopped.stdout
    assert f"sampler (pid {state['sampler']['pid']}): stopped" in stopped.stdout
    assert not (suite.dir / "suite.json").exists()
    assert not is_ours(state["sampler"]["pid"], state["sampler"]["start_ticks"])
    assert not port_taken("127.0.0.1", suite.base + 3)

    twice = geoloc("down", *run_dir)
    assert twice.returncode == 0 and "no suite is running" in twice.stdout
    nothing = geoloc("status", *run_dir)
    assert nothing.returncode == 3 and "no suite is running" in nothing.stdout


@pytest.mark.integration  # a real suite of service processes
def test_a_stale_state_file_is_removed_and_the_suite_starts(suite):
    gone = subprocess.Popen(["true"])
    gone.wait()
    suite.dir.mkdir()
    stale = {
        "version": 1,
        "started_at": "2026-01-01T00:00:00+00:00",
        "components": [
            {
                "name": "tokens",
                "pid": gone.pid,
                "start_ticks": 1,
                "command": ["true"],
                "host": "127.0.0.1",
                "port": suite.base + 4,
                "metrics_port": None,
                "health": "grpc",
                "models": [],
                "needs": [],
                "log": str(suite.dir / "logs" / "tokens.log"),
                "started_at": "2026-01-01T00:00:00+00:00",
            }
        ],
    }
    (suite.dir / "suite.json").write_text(json.dumps(stale))
    assert geoloc("status", "--run-dir", str(suite.dir)).returncode == 3

    started = geoloc("up", "--only", "tokens", "--no-metrics", *suite.ports[:2], "--run-dir", str(suite.dir))
    assert started.returncode == 0, started.stderr
    assert "removed a stale" in started.stdout
    assert recorded(suite.dir)["tokens"]["pid"] != gone.pid
    assert geoloc("down", "--run-dir", str(suite.dir)).returncode == 0


@pytest.mark.integration  # a real suite of service processes
def test_up_refuses_a_port_that_is_taken_and_starts_nothing(suite):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", suite.base + 4))
        squatter.listen()
        refused = geoloc("up", "--only", "tokens", *suite.ports, "--run-dir", str(suite.dir))
    assert refused.returncode == 1
    assert f"ports already in use: {suite.base + 4} (tokens)" in refused.stderr
    assert "started" not in refused.stdout
    assert not (suite.dir / "suite.json").exists()


@pytest.mark.integration  # a real suite of service processes
def test_a_component_that_fails_is_shown_with_its_log_and_the_others_are_stopped(suite):
    failed = geoloc(
        "up",
        "--only",
        "sampler",
        "tokens",
        *suite.ports,
        "--run-dir",
        str(suite.dir),
        env={"GEOLOC_TOKENS_MAX_BEAM_WIDTH": "0"},
    )
    assert failed.returncode == 1
    assert "tokens exited with code 2" in failed.stderr
    assert "GEOLOC_TOKENS_MAX_BEAM_WIDTH='0'" in failed.stderr  # the tail of the tokens log
    assert not (suite.dir / "suite.json").exists()
    sampler_pid = int(failed.stdout.split("started sampler (pid ")[1].split(")")[0])
    assert start_ticks(sampler_pid) is None  # up waited for it (and reaped it) before exiting
    assert not port_taken("127.0.0.1", suite.base + 3)


@pytest.mark.integration  # a real suite of service processes
def test_embedding_starts_once_triton_is_serving_and_down_stops_tritons_helpers(suite):
    triton_port = free_port_block(1)
    started = geoloc(
        "up",
        "--only",
        "embedding",
        "--no-metrics",
        *suite.ports[:2],
        "--triton-port",
        str(triton_port),
        "--run-dir",
        str(suite.dir),
    )
    assert started.returncode == 0, started.stderr + started.stdout
    lines = started.stdout.splitlines()
    assert "also starting what the chosen components need: triton" in lines
    triton_ready = next(i for i, line in enumerate(lines) if line.startswith("triton SERVING"))
    embedding_started = next(i for i, line in enumerate(lines) if line.startswith("started embedding"))
    assert triton_ready < embedding_started
    state = recorded(suite.dir)
    assert state["embedding"]["needs"] == ["triton"] and state["triton"]["port"] == triton_port

    report = json.loads(geoloc("status", "--json", "--run-dir", str(suite.dir)).stdout)
    assert [(c["name"], c["health"]) for c in report["components"]] == [("triton", "SERVING"), ("embedding", "SERVING")]
    triton_pid = state["triton"]["pid"]
    helpers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid(int(pid)) == triton_pid]
    assert len(helpers) >= 2  # tritonserver and its Python backend stub

    stopped = geoloc("down", "--run-dir", str(suite.dir))
    assert stopped.returncode == 0
    assert stopped.stdout.index("embedding (pid") < stopped.stdout.index("triton (pid")  # reverse order
    assert [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and _pgid(int(pid)) == triton_pid and start_ticks(int(pid)) is not None
    ] == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().split("=", 1) for pair in pairs if b"=" in pair)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The shipped models and the default backbone, built into a bundle (`geoloc bundle build`)."""
    from geoloc.training.bundle import build_bundle

    root = tmp_path_factory.mktemp("bundle") / "efficientnet-lite2"
    build_bundle(root, "efficientnet_lite2", CHECKOUT / "model_repository", CHECKOUT / "models")
    return root


def test_a_bundle_is_given_to_each_service_that_loads_from_it_and_triton_its_repository(bundle, tmp_path):
    from geoloc.suite.plan import SuiteOptions, build_plan, select

    plan = {c.name: c for c in build_plan(select(), SuiteOptions(bundle=bundle), tmp_path)}
    for name in ("embedding", "gallery", "sampler", "tokens", "orchestrator"):
        assert plan[name].env[f"GEOLOC_{name.upper()}_BUNDLE"] == str(bundle.resolve())
    # The bundle names the backbone's model; a MODEL_NAME beside it would be refused.
    assert "GEOLOC_EMBEDDING_MODEL_NAME" not in plan["embedding"].env and "GEOLOC_TEXT_BUNDLE" not in plan["text"].env
    assert f"--model-repository={bundle / 'model_repository'}" in plan["triton"].command
    without = {c.name: c for c in build_plan(select(), SuiteOptions(), tmp_path)}
    assert not [key for c in without.values() for key in c.env if key.endswith("_BUNDLE")]


def test_up_refuses_a_bundle_that_does_not_check_out_and_starts_nothing(bundle, tmp_path, suite):
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    (changed / "fusion" / "fusion.json").write_text("{}")
    refused = geoloc("up", "--bundle", str(changed), *suite.ports, "--run-dir", str(suite.dir))
    assert refused.returncode == 2
    assert "does not check out" in refused.stderr and "fusion/fusion.json: changed since" in refused.stderr
    both = geoloc("up", "--bundle", str(bundle), "--triton-model", "clip_vit_l14", "--run-dir", str(suite.dir))
    assert both.returncode == 2 and "--triton-model and --bundle" in both.stderr
    assert not (suite.dir / "suite.json").exists()


@pytest.mark.integration  # the whole suite, serving a bundle
def test_up_serves_a_bundle_and_locates_a_photo_with_its_models(bundle, suite):
    triton = free_port_block(2)
    started = geoloc(
        "up",
        "--bundle",
        str(bundle),
        *suite.ports,
        *("--triton-port", str(triton), "--triton-metrics-port", str(triton + 1)),
        *("--run-dir", str(suite.dir)),
        timeout_s=600,
    )
    assert started.returncode == 0, started.stderr + started.stdout
    state = recorded(suite.dir)
    assert f"--model-repository={bundle / 'model_repository'}" in state["triton"]["command"]
    for service in ("embedding", "gallery", "sampler", "tokens", "orchestrator"):
        assert _environment(state[service]["pid"])[f"GEOLOC_{service.upper()}_BUNDLE"] == str(bundle.resolve())
    address = f"127.0.0.1:{state['orchestrator']['port']}"
    located = geoloc("locate", str(CHECKOUT / "samples" / "kauai.jpg"), "--json", "--address", address)
    assert located.returncode == 0, located.stderr
    answer = json.loads(located.stdout.splitlines()[0])
    statuses = {output["expert"]: output["status"] for output in answer["expertOutputs"]}
    weights = load_fusion(bundle / "fusion" / "fusion.json").parameters.weights
    wanted = {
        orchestrator_pb2.Expert.Name(e): orchestrator_pb2.ExpertStatus.Name(s)
        for e, s in default_statuses(weights).items()
    }
    assert statuses == wanted, statuses
    # The embedding experts' models are the bundle's backbone's; the text expert reads pixels.
    embedding_experts = [
        o for o in answer["expertOutputs"] if o["expert"] != "EXPERT_TEXT" and o["status"] == "EXPERT_STATUS_OK"
    ]
    assert {output["model"]["name"].split("/")[-1] for output in embedding_experts} == {"efficientnet-lite2"}
    assert answer["backbone"]["name"] == read_bundle(bundle)["backbone"]["name"]
