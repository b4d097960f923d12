"""Data-parallel training (issue 21): two real processes in a gloo process group train each expert
(flow sampler, token decoder, gallery head) to the weights one process reaches on the same global
batch (`training/loop.BatchShards`).

The single process computes both shards of each minibatch under the shards' own random streams;
the two processes compute one shard each and sum their gradients with all_reduce. Every process
runs torch with one thread, so the only difference left is the order of floating-point sums.
Tolerance: 1e-5 relative on every weight after the run (measured: bit-identical here).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoloc.common.ports import free_port
from geoloc.training.gallery_head import HeadConfig, train_head
from geoloc.training.loop import BatchShards
from geoloc.training.sampler import SamplerTrainConfig, train_sampler
from geoloc.training.token_decoder import TokenTrainConfig, train_decoder

SAMPLER = SamplerTrainConfig(
    method="flow",
    network={"width": 32, "depth": 2},
    steps=8,
    batch_size=32,
    eval_every=4,
    eval_samples=4,
    eval_steps=2,
    feature_dropout=0.2,
)
HEAD = HeadConfig(hidden_dim=32, dropout=0.2, epochs=2, batch_size=37, negatives=64, perturbations=2)
TOKENS = TokenTrainConfig(
    network={"width": 32, "depth": 1, "heads": 2, "dropout": 0.1}, steps=8, batch_size=32, eval_every=4
)


def photos() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    places = np.stack([rng.uniform(-60, 70, 120), rng.uniform(-180, 180, 120)], axis=1)
    features = (rng.normal(size=(120, 24)) + places[:, :1] / 30).astype(np.float32)
    return features, places


def trained_weights(expert: str, shards: BatchShards) -> dict[str, torch.Tensor]:
    features, places = photos()
    quiet = {"log": lambda _: None, "shards": shards}
    if expert == "flow":
        trained = train_sampler(
            features[:96], places[:96], features[96:], places[96:], SAMPLER, "test", seed=3, **quiet
        )
        network = trained.sampler.network
    elif expert == "tokens":
        trained = train_decoder(features[:96], places[:96], features[96:], places[96:], TOKENS, seed=3, **quiet)
        network = trained.decoder
    else:
        from geoloc.gallery.build import embed_locations
        from geoloc.gallery.location_encoder import LocationEncoder

        encoder = LocationEncoder.pretrained()
        gallery = places[::2] + 0.5
        vectors = embed_locations(encoder, gallery, progress=False)
        # Batches of 37 photos (and the epoch's last, of 22): the two shards differ in size.
        trained = train_head(
            features[:96], places[:96], features[96:], places[96:], vectors, gallery, encoder, HEAD, 3, **quiet
        )
        weights = {name: value.detach().clone() for name, value in trained.mlp.state_dict().items()}
        return {**weights, "logit_scale": torch.tensor(trained.logit_scale)}
    return {name: value.detach().clone() for name, value in network.state_dict().items()}


def _rank(rank: int, port: int, expert: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        weights = trained_weights(expert, BatchShards.of_process_group(seed=3))
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("expert", ["flow", "tokens", "gallery"])
def test_two_processes_train_to_one_process_s_weights_on_the_same_global_batch(expert, tmp_path):
    context = multiprocessing.get_context("spawn")
    port, out = free_port(), str(tmp_path / "rank0.pt")
    ranks = [context.Process(target=_rank, args=(rank, port, expert, out)) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=300)
    assert [p.exitcode for p in ranks] == [0, 0]
    distributed = torch.load(out)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = trained_weights(expert, BatchShards.in_one_process(2, seed=3))
        unsharded = trained_weights(expert, BatchShards.in_one_process(1, seed=3))
    finally:
        torch.set_num_threads(threads)
    assert distributed.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(distributed[name], alone[name], rtol=1e-5, atol=1e-6, msg=name)
    # The shards' streams matter: one shard of the whole batch draws other photos and noise.
    assert any(not torch.allclose(alone[n], unsharded[n]) for n in alone)


def test_a_minibatch_that_does_not_cut_evenly_is_refused():
    with pytest.raises(ValueError, match="does not cut into 3 equal shards"):
        BatchShards.in_one_process(3).shard_size(32)
    with pytest.raises(ValueError, match="at least 1 shard"):
        BatchShards.in_one_process(0)
    assert BatchShards.in_one_process(4).shard_size(32) == 8


@pytest.mark.slow
def test_torchrun_trains_the_experts_on_two_cpu_processes_and_one_writes_each(tmp_path):
    """`torchrun --nproc-per-node 2 -m geoloc.cli train sampler|gallery ...` on a data root drawn
    here (the gallery head against a small GPS gallery built here): one checkpoint and manifest
    each (the first rank's), recording the two processes."""
    import json

    from geoloc.cli import main
    from tests.photos import write_photos
    from tests.test_feature_pipeline import labelled_split

    root = tmp_path / "data"
    shots = write_photos(tmp_path / "photos", 10)
    labelled_split(root / "im2gps3k" / "train", shots[:7])
    labelled_split(root / "im2gps3k" / "val", shots[7:])
    (tmp_path / "gps.csv").write_text("lat,lon\n" + "\n".join(f"{-60 + i},{-170 + 2.5 * i}" for i in range(120)) + "\n")
    assert main(["gallery", "build", "--gps", str(tmp_path / "gps.csv"), "--out", str(tmp_path / "gallery")]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "GEOLOC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    jobs = {
        "flow": ["sampler", "--method", "flow", "--steps", "4"],
        "head": ["gallery", "--gallery", str(tmp_path / "gallery"), "--epochs", "1"],
    }
    for name, job in jobs.items():
        command = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "geoloc.cli"]
        command += ["train", *job, "--data", str(root), "--out", str(tmp_path / f"{name}.pt")]
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert finished.returncode == 0, finished.stderr[-3000:]
        manifest = json.loads((tmp_path / f"{name}.json").read_text())
        assert manifest["data_parallel"] == {"processes": 2, "backend": "gloo", "shards_per_step": 2}, name
        assert finished.stdout.count("written to") == 1, finished.stdout
