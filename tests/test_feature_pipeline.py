"""The data pipeline's first stages: WebDataset shards (`geoloc shards`) and the serving backbone's
features over them (`geoloc features`), on photos drawn here (tests/photos.py): no data needed.

The backbone is the real EfficientNet-Lite2, in-process or on a real Triton; the workers are real
processes, one of them killed with SIGKILL mid-run.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from geoloc.evaluation.csvio import InputError
from geoloc.training.feature_shards import (
    FAILED_LIST,
    MANIFEST,
    InProcessFeatures,
    TritonFeatures,
    claim_folder,
    features_manifest,
    model_sha256,
    my_shards,
    read_feature_shard,
    run_worker,
    summarise_folder,
)
from geoloc.training.shards import photo_shards, read_tar_shard, sample_key, write_shards
from tests.photos import KAUAI, encode, synthetic_photo, write_photos, write_split

MODEL = "efficientnet_lite2"


def labelled_split(root: Path, photos: list[Path]) -> Path:
    """A split folder of `photos`, each with its own place and one of three photographers."""
    rows = [
        (f"p{i:02d}.{p.suffix.lstrip('.')}", -60 + 9.5 * i, -170 + 23 * i, f"author{i % 3}")
        for i, p in enumerate(photos)
    ]
    return write_split(root, rows, {name: path for (name, *_), path in zip(rows, photos, strict=True)})


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    return labelled_split(folder / "split", write_photos(folder / "photos", 7))


@pytest.fixture(scope="module")
def backbone() -> InProcessFeatures:
    return InProcessFeatures(MODEL)


def test_a_split_folder_round_trips_through_webdataset_shards(split, tmp_path):
    paths = write_shards(split, tmp_path / "shards", photos_per_shard=3)
    assert [p.name for p in paths] == ["split-000000.tar", "split-000001.tar", "split-000002.tar"]
    with tarfile.open(paths[0]) as archive:  # the WebDataset layout: <key>.<ext>, one sample's members adjacent
        assert archive.getnames() == ["p00.jpg", "p00.json", "p01.jpg", "p01.json", "p02.jpg", "p02.json"]
    from_folder = [s for shard in photo_shards(split, 3) for s in shard.samples()]
    from_shards = [s for shard in photo_shards(tmp_path / "shards") for s in shard.samples()]
    assert from_shards == from_folder
    assert len(from_shards) == 7 and all(s.problem is None for s in from_shards)
    assert from_shards[0].photo == KAUAI.read_bytes()
    assert (from_shards[4].lat, from_shards[4].lon, from_shards[4].author) == (-22.0, -78.0, "author1")
    again = write_shards(split, tmp_path / "again", photos_per_shard=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # the same split, the same bytes


def test_a_shard_is_read_by_streaming(split, tmp_path):
    """A gzipped shard can only be read front to back, as a stream from object storage would be."""
    [plain] = write_shards(split, tmp_path / "shards", photos_per_shard=10)
    gzipped = tmp_path / "one.tar.gz"
    with tarfile.open(plain) as source, tarfile.open(gzipped, "w:gz") as target:
        for member in source:
            target.addfile(member, source.extractfile(member))
    assert [s.key for s in read_tar_shard(gzipped)] == [f"p{i:02d}" for i in range(7)]


def bad_shard(path: Path, good: list[Path]) -> Path:
    """A shard with two usable samples and one of every kind of unusable one."""
    members = [
        ("good0.jpg", good[0].read_bytes()),
        ("good0.json", json.dumps({"lat": 10.0, "lon": 20.0, "author": "a"}).encode()),
        ("nolabel.jpg", good[1].read_bytes()),
        ("nolatlon.jpg", good[1].read_bytes()),
        ("nolatlon.json", b'{"latitude": 1}'),
        ("offglobe.jpg", good[1].read_bytes()),
        ("offglobe.json", b'{"lat": 91, "lon": 0}'),
        ("nophoto.json", b'{"lat": 1, "lon": 2}'),
        ("notaphoto.jpg", b"GIF89a this is not a photo"),
        ("notaphoto.json", b'{"lat": 1, "lon": 2}'),
        ("good1.png", encode(synthetic_photo(3), "PNG")),
        ("good1.json", b'{"lat": -5, "lon": 100}'),
    ]
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_unusable_photos_are_listed_and_never_stop_the_run(split, backbone, tmp_path):
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    bad_shard(shards_dir / "mixed.tar", sorted((split / "images").iterdir()))
    shards = photo_shards(shards_dir)
    claim_folder(tmp_path / "out", features_manifest(backbone, "sha", shards, shards_dir))
    counts = run_worker(shards, tmp_path / "out", backbone)
    assert counts == {"shards": 1, "skipped": 0, "done": 1, "photos": 2, "failed": 5}
    shard = read_feature_shard(tmp_path / "out" / "mixed.npz")
    assert list(shard.keys) == ["good0", "good1"]
    assert shard.features.dtype == np.float16 and shard.features.shape == (2, 1280)
    assert list(shard.lat) == [10.0, -5.0] and list(shard.author) == ["a", ""]
    reasons = dict(zip(shard.failed_keys, shard.failed_reasons, strict=True))
    assert set(reasons) == {"nolabel", "nolatlon", "offglobe", "nophoto", "notaphoto"}
    assert "no .json label" in reasons["nolabel"]
    assert "lat/lon" in reasons["nolatlon"] and "off the globe" in reasons["offglobe"]
    assert "no photo" in reasons["nophoto"] and reasons["notaphoto"].startswith("notaphoto:")
    summary = summarise_folder(tmp_path / "out")
    assert summary == {"done": 1, "missing": [], "photos": 2, "failed": 5}
    listed = (tmp_path / "out" / FAILED_LIST).read_text().splitlines()
    assert listed[0] == "shard,key,reason" and len(listed) == 6


def test_features_are_the_backbone_s_for_each_photo(split, backbone, tmp_path):
    shards = photo_shards(split, 3)
    claim_folder(tmp_path, features_manifest(backbone, "sha", shards, split))
    run_worker(shards, tmp_path, backbone, batch=2)
    stored = [read_feature_shard(tmp_path / f"{s.name}.npz") for s in shards]
    keys = np.concatenate([s.keys for s in stored])
    features = np.concatenate([s.features for s in stored]).astype(np.float32)
    assert list(keys) == [sample_key(f"p{i:02d}.jpg") for i in range(7)]
    from geoloc.embedding.config import EmbeddingSettings
    from geoloc.embedding.preprocessing import model_input_from_photo

    limits = EmbeddingSettings().photo_limits()
    photo = (split / "images" / "p05.jpg").read_bytes()
    alone = backbone.features(model_input_from_photo(photo, limits, backbone.info.crop)[None])[0]
    np.testing.assert_allclose(features[5], alone, rtol=2e-3, atol=2e-3)  # float16 storage, batch of 2 vs 1
    assert np.linalg.norm(features[5] - features[4]) > 1.0  # distinct photos, distinct features


def test_a_folder_of_other_features_is_refused(split, backbone, tmp_path):
    shards = photo_shards(split, 3)
    manifest = features_manifest(backbone, "sha", shards, split)
    claim_folder(tmp_path, manifest)
    claim_folder(tmp_path, {**manifest, "computed_by": "triton at elsewhere:8001"})  # how is not what
    with pytest.raises(InputError, match="backbone, dimension differ"):
        claim_folder(tmp_path, {**manifest, "backbone": "clip-vit-l14", "dimension": 768})
    with pytest.raises(InputError, match="shards differ"):
        claim_folder(tmp_path, {**manifest, "shards": ["other-000000"]})


def test_the_model_sha256_follows_the_weights(tmp_path):
    import shutil

    from geoloc.common.paths import MODEL_REPOSITORY

    shutil.copytree(MODEL_REPOSITORY / MODEL, tmp_path / MODEL)
    assert model_sha256(MODEL, tmp_path) == model_sha256(MODEL)
    config = tmp_path / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace('"127.0,127.0,127.0"', '"127.5,127.5,127.5"'))
    assert model_sha256(MODEL, tmp_path) != model_sha256(MODEL)


def test_workers_split_the_shards_between_them(split):
    shards = photo_shards(split, 1)
    taken = [s.name for i in range(3) for s in my_shards(shards, i, 3)]
    assert sorted(taken) == sorted(s.name for s in shards) and len(taken) == 7
    with pytest.raises(InputError, match="worker index"):
        my_shards(shards, 3, 3)


def geoloc(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "geoloc.cli", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers must be at least 1"),
        (["--worker-count", "2"], {}, "--worker-count needs --worker-index"),
        (["--worker-count", "2"], {"JOB_COMPLETION_INDEX": "x"}, "must be an integer"),
        (["--worker-count", "2", "--worker-index", "2"], {}, "worker index must be in 0..1"),
        (["--batch", "0"], {}, "--batch must be at least 1"),
        (["--triton-url", "127.0.0.1:1", "--triton-cert", "c.pem"], {}, "need --triton-ca"),
        (["--triton-url", "127.0.0.1:1", "--triton-ca", "/nowhere/ca.pem"], {}, "--triton-ca /nowhere/ca.pem: no such"),
        (["--triton-ca", __file__], {}, "are for the Triton at --triton-url"),
    ],
)
def test_bad_worker_settings_are_refused(split, tmp_path, args, env, message):
    process = geoloc("features", "--input", str(split), "--out", str(tmp_path), *args, env=env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and message in stderr
    assert not (tmp_path / MANIFEST).exists()


def test_a_missing_input_is_refused(tmp_path):
    process = geoloc("features", "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "no such shard file or folder" in stderr


@pytest.mark.slow
def test_a_killed_worker_is_resumed_to_the_same_features(split, tmp_path):
    """Worker 0 of 2, a real process, is killed with SIGKILL once it has written its first shard;
    the same command run again finishes the rest, and every shard equals an uninterrupted run's,
    bit for bit. (Bit-identity holds for one batch size and one thread count: `--workers 2` gives
    each worker OMP_NUM_THREADS=1 on this 2-core machine, so the killed worker gets it too.)"""
    shards = photo_shards(split, 1)
    common = ["--input", str(split), "--photos-per-shard", "1"]
    reference = geoloc("features", *common, "--out", str(tmp_path / "reference"), "--workers", "2")
    _, stderr = reference.communicate(timeout=600)
    assert reference.returncode == 0, stderr

    out = tmp_path / "resumed"
    common = ["features", *common, "--out", str(out)]
    one_thread = {"JOB_COMPLETION_INDEX": "0", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    worker = geoloc(*common, "--worker-count", "2", env=one_thread)
    first = out / "split-000000.npz"
    deadline = time.monotonic() + 180
    while not first.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    assert first.exists(), "worker 0 wrote no shard before it was killed"
    written_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert len(written_before) < 7  # worker 1 never ran, so its shards are all still to do
    (out / ".split-000001.npz.partial-999999").write_bytes(b"a write cut short")  # as a kill mid-write leaves

    finished = geoloc(*common, "--workers", "2")
    stdout, stderr = finished.communicate(timeout=600)
    assert finished.returncode == 0, stderr
    assert "7 feature shards" in stdout and "0 missing" in stdout and "7 photos, 0 failed" in stdout
    skipped = re.search(r"worker 0/2: \d+ shards done, (\d+) already done", stderr)
    assert skipped and int(skipped[1]) == len(written_before), stderr
    for name, mtime in written_before.items():  # done shards are skipped, not redone
        assert (out / name).stat().st_mtime_ns == mtime
    assert not list(out.glob(".*partial*"))
    for shard in shards:
        resumed = read_feature_shard(out / f"{shard.name}.npz")
        reference = read_feature_shard(tmp_path / "reference" / f"{shard.name}.npz")
        for field in ("keys", "lat", "lon", "author", "failed_keys"):
            assert np.array_equal(getattr(resumed, field), getattr(reference, field)), field
        assert np.array_equal(resumed.features, reference.features)


@pytest.mark.integration
def test_the_pipeline_s_features_are_the_embedding_service_s(triton, embedding_stub, photos, tmp_path):
    """Through Triton, the pipeline stores exactly what the embedding service answers for the same
    photos (as float16): one decode, one crop, one model. Sent as one batch each way, so Triton runs
    the same forward pass for both."""
    from geoloc.v1 import embedding_pb2

    chosen = photos[:8]
    split = labelled_split(tmp_path / "split", chosen)
    write_shards(split, tmp_path / "shards", photos_per_shard=8)
    shards = photo_shards(tmp_path / "shards")
    backbone = TritonFeatures(triton.grpc_url, MODEL)
    try:
        claim_folder(tmp_path / "out", features_manifest(backbone, model_sha256(MODEL), shards, tmp_path / "shards"))
        run_worker(shards, tmp_path / "out", backbone, batch=8)
    finally:
        backbone.close()
    stored = read_feature_shard(tmp_path / "out" / "split-000000.npz")
    answer = embedding_stub.EmbedBatch(
        embedding_pb2.EmbedBatchRequest(images=[p.read_bytes() for p in chosen]), timeout=120
    )
    served = np.array([e.values for e in answer.embeddings], dtype=np.float32)
    assert stored.features.shape == served.shape == (8, 1280)
    assert np.array_equal(stored.features, served.astype(np.float16))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["backbone"] == answer.embeddings[0].backbone.name == "efficientnet-lite2"
    assert manifest["computed_by"] == f"triton at {triton.grpc_url}"
    assert manifest["preprocessing"]["preprocess_crop"] == "padded_center_crop"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root shaped like Im2GPS3k's (train and val split folders), of photos drawn here."""
    root = tmp_path_factory.mktemp("data")
    photos = write_photos(root / "photos", 12)
    labelled_split(root / "im2gps3k" / "train", photos[:8])
    labelled_split(root / "im2gps3k" / "val", photos[8:])
    return root


def test_training_reads_a_features_folder(data_root, backbone, tmp_path, monkeypatch):
    from argparse import Namespace

    from geoloc.training.arguments import training_data

    monkeypatch.setenv("GEOLOC_CACHE_DIR", str(tmp_path / "cache"))
    train = data_root / "im2gps3k" / "train"
    shards = photo_shards(train, 3)
    claim_folder(tmp_path / "features", features_manifest(backbone, model_sha256(MODEL), shards, train))
    run_worker(shards, tmp_path / "features", backbone)
    data = training_data(Namespace(data=data_root, features=tmp_path / "features"))
    assert data.backbone == "efficientnet-lite2" and "8 features of efficientnet-lite2" in data.train_source
    # Memory-mapped from the cache, as the shards hold them (training/mapped_features.py).
    assert data.train_features.shape == (8, 1280) and data.train_features.dtype == np.float16
    assert isinstance(data.train_features, np.memmap)
    assert Path(data.train_features.filename).parent == tmp_path / "cache" / "mapped-features"
    np.testing.assert_array_equal(data.train_places[:, 0], [-60 + 9.5 * i for i in range(8)])
    assert data.val_features.shape == (4, 1280)

    manifest = json.loads((tmp_path / "features" / MANIFEST).read_text())
    (tmp_path / "features" / MANIFEST).write_text(json.dumps({**manifest, "model_sha256": "0" * 64}))
    with pytest.raises(InputError, match="another efficientnet_lite2"):
        training_data(Namespace(data=data_root, features=tmp_path / "features"))
    (tmp_path / "features" / "train-000001.npz").unlink()
    with pytest.raises(InputError, match="1 of 3 feature shards are not done"):
        training_data(Namespace(data=data_root, features=tmp_path / "features"))


@pytest.mark.slow
def test_the_experts_train_on_feature_shards_end_to_end(data_root, tmp_path):
    """`geoloc shards`, `geoloc features --workers 2`, then `geoloc train sampler` and `geoloc train
    gallery` with `--features DIR` (the gallery head against a small GPS gallery built here), as a
    user would run them; each manifest names the features it was trained on."""
    env = {"GEOLOC_CACHE_DIR": str(tmp_path / "cache")}
    rng = np.random.default_rng(1)
    gps = [
        f"{lat:.4f},{lon:.4f}" for lat, lon in zip(rng.uniform(-70, 70, 200), rng.uniform(-180, 180, 200), strict=True)
    ]
    (tmp_path / "gps.csv").write_text("lat,lon\n" + "\n".join(gps) + "\n")
    features = str(tmp_path / "features")
    trained_on = ("--data", str(data_root), "--features", features)
    steps = [
        ("shards", str(data_root / "im2gps3k" / "train"), "--out", str(tmp_path / "shards"), "--photos-per-shard", "3"),
        ("features", "--input", str(tmp_path / "shards"), "--out", features, "--workers", "2"),
        ("train", "sampler", "--method", "flow", *trained_on, "--steps", "6", "--out", str(tmp_path / "flow.pt")),
        ("gallery", "build", "--gps", str(tmp_path / "gps.csv"), "--out", str(tmp_path / "gallery")),
        ("train", "gallery", *trained_on, "--gallery", str(tmp_path / "gallery"), "--epochs", "1"),
    ]
    for step in steps:
        extra = ("--out", str(tmp_path / "head.pt")) if step[:2] == ("train", "gallery") else ()
        process = geoloc(*step, *extra, env=env)
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
    from geoloc.gallery.heads import load_head
    from geoloc.sampler.model import load_sampler

    for model in ("flow", "head"):
        manifest = json.loads((tmp_path / f"{model}.json").read_text())
        assert manifest["backbone"].startswith("efficientnet-lite2"), model
        assert manifest["data"]["train"] == f"{features} (8 features of efficientnet-lite2)", model
    assert load_sampler(tmp_path / "flow.pt").backbone == "efficientnet-lite2"
    assert load_head(tmp_path / "head.pt").backbone == "efficientnet-lite2"


def test_cross_validation_reads_a_features_folder(split, backbone, tmp_path, capsys):
    from argparse import Namespace

    from geoloc.cli import main
    from geoloc.training.cv_data import cv_photos

    shards = photo_shards(split, 3)
    claim_folder(tmp_path, features_manifest(backbone, "sha", shards, split))
    run_worker(shards, tmp_path, backbone)
    features, places, authors, what = cv_photos(Namespace(features=tmp_path, data=None))
    assert features.shape == (7, 1280) and places.shape == (7, 2)
    assert authors == [f"author{i % 3}" for i in range(7)]  # the photographers the folds are drawn by
    assert what == f"{tmp_path} (efficientnet-lite2)"
    for shipping in ("--ship", "--write-fusion"):
        assert main(["cv", "--features", str(tmp_path), shipping]) == 2
        assert "--features with --ship or --write-fusion needs --models DIR" in capsys.readouterr().err


def test_the_help_states_the_pipeline_s_batch(capsys):
    from geoloc.cli import main
    from geoloc.training.feature_shards import BATCH

    with pytest.raises(SystemExit):
        main(["features", "--help"])
    assert f"photos per inference (default: {BATCH})" in " ".join(capsys.readouterr().out.split())
