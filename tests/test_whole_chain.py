"""The whole bring-your-own-backbone pipeline at toy scale, as a team would run it (docs/training.md),
each stage a real command on what the stage before wrote:

1. a tiny random CLIP (tests/tiny_clip.py) in a model repository of its own (GEOLOC_MODEL_REPOSITORY),
   in place of ViT-L/14's weights, which cannot be fetched here;
2. a train split of 12 drawn photos (tests/photos.py; 12 photographers) as WebDataset shards;
3. its features with 2 workers, one of them killed with SIGKILL mid-run (waiting on a shard) and resumed;
4. every expert trained data-parallel on them, torchrun with 2 gloo processes;
5. the fusion fitted on out-of-fold answers (`geoloc cv --features --write-fusion --models`, 2 folds,
   a toy training budget);
6. a bundle of the backbone, its text tower, the experts and the fusion;
7. `geoloc up --bundle` on it, every service loading and checking it;
8. a Locate answer with every weighted expert OK and a LocateText answer, both from the tiny CLIP.

No Im2GPS3k data is needed. About three minutes on 2 cores, most of it process start-ups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from geoloc.common.paths import CHECKOUT, MODEL_REPOSITORY
from geoloc.common.ports import free_port
from geoloc.orchestrator.parameters import load_fusion
from geoloc.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.photos import write_photos, write_split
from tests.test_suite import free_port_block
from tests.tiny_clip import tiny_clip_checkpoint

# Trains, then runs the whole suite: about three minutes, with room for a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "clip_vit_l14"
BUDGET = ["gallery_epochs=1", "flow_steps=4", "sh_steps=4", "tokens_steps=4", "evaluations=1"]


def photographed_split(root: Path, photos: list[Path], first: int) -> Path:
    """A split folder of `photos`, each at its own place and by its own photographer (CV's inner
    hold-outs need five photographers in every fold's training part)."""
    rows = [
        (f"p{k:02d}{p.suffix}", -50 + 7.5 * k, -170 + 27 * k % 340, f"author{k}")
        for k, p in enumerate(photos, start=first)
    ]
    return write_split(root, rows, {row[0]: path for row, path in zip(rows, photos, strict=True)})


class Pipeline:
    """Runs `geoloc …` (or torchrun's) as a subprocess with the chain's environment."""

    def __init__(self, work: Path):
        self.work = work
        self.env = {
            **os.environ,
            "GEOLOC_MODEL_REPOSITORY": str(work / "repository"),
            "GEOLOC_CACHE_DIR": str(work / "cache"),
            "OMP_NUM_THREADS": "1",
        }

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "geoloc.cli", *args],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, torchrun: bool = False, timeout_s: float = 600) -> str:
        command = [sys.executable, "-m", "geoloc.cli", *args]
        if torchrun:
            launcher = Path(sys.executable).with_name("torchrun")
            command = [str(launcher), "--nproc-per-node", "2", "--master-port", str(free_port()), *command[1:]]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stderr[-4000:]}"
        return done.stdout


def test_a_tiny_clip_goes_from_photos_to_shards_features_experts_fusion_bundle_and_answers(tmp_path):
    work, models = tmp_path, tmp_path / "models"
    for model in (MODEL, f"{MODEL}_text"):
        shutil.copytree(MODEL_REPOSITORY / model, work / "repository" / model)
    tiny_clip_checkpoint(work / "repository" / MODEL / "weights")
    photos = write_photos(work / "photos", 16)
    photographed_split(work / "data" / "im2gps3k" / "train", photos[:12], 0)
    photographed_split(work / "data" / "im2gps3k" / "val", photos[12:], 12)
    gps = [f"{-60 + 0.9 * i:.2f},{-170 + 2.2 * i:.2f}" for i in range(150)]
    (work / "gps.csv").write_text("lat,lon\n" + "\n".join(gps) + "\n")
    chain = Pipeline(work)

    train = work / "data" / "im2gps3k" / "train"
    chain.run("shards", str(train), "--out", str(work / "shards"), "--photos-per-shard", "3")
    assert len(list((work / "shards").glob("*.tar"))) == 4

    # Worker 0 of 2 alone, killed mid-run: its last shard is, for now, a named pipe that nothing writes,
    # so once its first shard is done it waits on the second (a read that never ends) and is killed
    # there, whatever the machine's speed. Then the real shard is put back and both workers finish.
    shards = sorted((work / "shards").glob("*.tar"))
    held = shards[2]  # worker 0 takes shards 0 and 2 (feature_shards.my_shards: every second one)
    held.rename(work / "held.tar")
    os.mkfifo(held)
    features = ["features", "--input", str(work / "shards"), "--out", str(work / "features"), "--model", MODEL]
    worker = chain.start(*features, "--device", "cpu", "--worker-count", "2", env={"JOB_COMPLETION_INDEX": "0"})
    first = work / "features" / f"{shards[0].stem}.npz"
    deadline = time.monotonic() + 300
    while not first.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # on to the held shard
    assert worker.poll() is None, "worker 0 ended before it was killed"
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    assert [p.name for p in (work / "features").glob("*.npz")] == [first.name]
    written = first.stat().st_mtime_ns
    held.unlink()
    (work / "held.tar").rename(held)
    finished = chain.run(*features, "--device", "cpu", "--workers", "2")
    assert "4 feature shards" in finished and "0 missing; 12 photos, 0 failed" in finished, finished
    assert first.stat().st_mtime_ns == written  # the killed worker's finished shard is not redone
    assert json.loads((work / "features" / "manifest.json").read_text())["backbone"] == "clip-vit-l14"

    chain.run("gallery", "build", "--gps", str(work / "gps.csv"), "--out", str(work / "gallery"))
    trained_on = ["--data", str(work / "data"), "--features", str(work / "features")]
    head = models / "gallery" / f"{MODEL}_head.pt"
    jobs = {
        head: ["gallery", "--gallery", str(work / "gallery"), "--epochs", "1"],
        models / "sampler" / "flow.pt": ["sampler", "--method", "flow", "--steps", "4"],
        models / "sampler" / "sh.pt": ["sampler", "--method", "sh", "--steps", "4"],
        models / "tokens" / "decoder.pt": ["tokens", "--steps", "4", "--head", str(head)],
    }
    for out, job in jobs.items():
        chain.run("train", *job, *trained_on, "--out", str(out), torchrun=True)
        manifest = json.loads(out.with_suffix(".json").read_text())
        assert manifest["data_parallel"]["processes"] == 2 and "clip-vit-l14" in manifest["backbone"], out

    budget = [option for field in BUDGET for option in ("--budget", field)]
    chain.run(
        *("cv", "--features", str(work / "features"), "--folds", "2", "--weighting", "cap10", *budget),
        *("--write-fusion", "--models", str(models), "--out", str(work / "cv.json")),
    )
    fusion = json.loads((models / "fusion" / "fusion.json").read_text())
    assert "12 " in fusion["data"]["fitted_on"] and "clip-vit-l14" in fusion["data"]["fitted_on"]

    bundle = work / "bundle"
    chain.run("bundle", "build", "--out", str(bundle), "--model", MODEL, "--models", str(models))
    recorded = json.loads((bundle / "bundle.json").read_text())
    assert recorded["backbone"]["name"] == "clip-vit-l14" and recorded["backbone"]["text_model"] == f"{MODEL}_text"

    base, triton = free_port_block(12), free_port_block(2)
    run_dir = ["--run-dir", str(work / "run")]
    ports = ["--base-port", str(base), "--metrics-base-port", str(base + 6), "--triton-port", str(triton)]
    ports += ["--triton-metrics-port", str(triton + 1)]
    try:
        chain.run("up", "--bundle", str(bundle), *ports, *run_dir, "--timeout", "600", timeout_s=700)
        located = json.loads(
            chain.run("locate", str(CHECKOUT / "samples" / "kauai.jpg"), "--json", "--address", f"127.0.0.1:{base}")
        )
        with grpc.insecure_channel(f"127.0.0.1:{base}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            query = orchestrator_pb2.LocateTextRequest(query="a harbour with boats", top_k=3)
            text = stub.LocateText(query, timeout=60)
    finally:
        subprocess.run([sys.executable, "-m", "geoloc.cli", "down", *run_dir], env=chain.env, timeout=120)

    weights = load_fusion(bundle / "fusion" / "fusion.json").parameters.weights
    statuses = {o["expert"]: o["status"] for o in located["expertOutputs"]}
    weighted = {e for e, w in weights.items() if w > 0 and e not in ("prior", "text")}
    names = {"gallery": "EXPERT_GALLERY", "flow": "EXPERT_SAMPLER_FLOW", "sh": "EXPERT_SAMPLER_SH_DIFFUSION"}
    names["tokens"] = "EXPERT_TOKENS"
    assert all(statuses[names[e]] == "EXPERT_STATUS_OK" for e in weighted), statuses
    assert located["backbone"]["name"] == "clip-vit-l14" and located["hypotheses"]
    assert located["fusion"]["version"] == load_fusion(bundle / "fusion" / "fusion.json").version
    assert len(text.matches) == 3 and text.backbone.name == "clip-vit-l14"
    assert text.gallery.name == "geoclip-gallery/clip-vit-l14"
