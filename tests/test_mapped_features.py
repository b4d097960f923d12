"""A features folder memory-mapped for training (training/mapped_features.py): joined once into the
cache, read by minibatch, its moments by chunks; the same answers as the folder read whole."""

from __future__ import annotations

import numpy as np

from geoloc.training import mapped_features
from geoloc.training.feature_shards import FeatureShard, load_feature_set
from geoloc.training.mapped_features import feature_moments, feature_rows
from geoloc.training.token_decoder import TokenTrainConfig, train_decoder

DIMENSION = 24


def features_folder(folder, shard_sizes=(5, 9, 7), seed=0):
    """A features folder as `geoloc features` leaves it: a manifest and float16 shards."""
    import json

    rng = np.random.default_rng(seed)
    names = [f"split-{i:06d}" for i in range(len(shard_sizes))]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "x", "backbone": "b", "model": "m", "dimension": DIMENSION, "shards": names}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name, n in zip(names, shard_sizes, strict=True):
        shard = FeatureShard(
            keys=np.array([f"{name}-{i}" for i in range(n)]),
            features=(rng.normal(size=(n, DIMENSION)) * 3 + 40).astype(np.float16),  # a large mean
            lat=rng.uniform(-60, 60, n),
            lon=rng.uniform(-180, 180, n),
            author=np.array([f"a{i % 4}" for i in range(n)]),
            failed_keys=np.array([], dtype=str),
            failed_reasons=np.array([], dtype=str),
        )
        np.savez(folder / f"{name}.npz", **shard.__dict__)
    return folder


def test_a_mapped_folder_holds_the_same_photos_as_one_read_whole(tmp_path):
    folder = features_folder(tmp_path / "features")
    whole = load_feature_set(folder)
    mapped = load_feature_set(folder, mapped_in=tmp_path / "cache")
    assert isinstance(mapped.features, np.memmap) and mapped.features.dtype == np.float16
    assert not mapped.features.flags.writeable
    np.testing.assert_array_equal(np.asarray(mapped.features, dtype=np.float32), whole.features)
    for field in ("keys", "places", "authors"):
        np.testing.assert_array_equal(getattr(mapped, field), getattr(whole, field))
    rows = np.array([20, 3, 3, 11])
    np.testing.assert_array_equal(feature_rows(mapped.features, rows), whole.features[rows])


def test_the_join_is_written_once_and_again_when_a_shard_changes(tmp_path):
    folder = features_folder(tmp_path / "features")
    cache = tmp_path / "cache"
    load_feature_set(folder, mapped_in=cache)
    (joined,) = cache.glob("features-*.npy")
    written = joined.stat().st_mtime_ns
    load_feature_set(folder, mapped_in=cache)
    assert list(cache.glob("features-*.npy")) == [joined] and joined.stat().st_mtime_ns == written
    features_folder(folder, seed=1)  # the same names, other features
    again = load_feature_set(folder, mapped_in=cache)
    assert len(list(cache.glob("features-*.npy"))) == 2
    np.testing.assert_array_equal(np.asarray(again.features, dtype=np.float32), load_feature_set(folder).features)


def test_moments_by_chunks_equal_the_whole_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(mapped_features, "CHUNK_ROWS", 4)  # several chunks, one of them short
    mapped = load_feature_set(features_folder(tmp_path / "features"), mapped_in=tmp_path / "cache").features
    exact = np.asarray(mapped, dtype=np.float64)
    mean, std = feature_moments(mapped)
    np.testing.assert_allclose(mean.numpy(), exact.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), exact.std(0, ddof=1), rtol=1e-5)
    in_memory = feature_moments(np.asarray(mapped, dtype=np.float32))
    np.testing.assert_allclose(mean.numpy(), in_memory[0].numpy(), rtol=1e-6)


def test_a_decoder_trains_on_mapped_features_as_on_the_same_features_in_memory(tmp_path):
    """The minibatches read from the map are the array's rows; only the moments' last bits may
    differ (chunked float64 against torch's float32), so the answers agree closely, not bitwise."""
    data = load_feature_set(features_folder(tmp_path / "features", (40, 30)), mapped_in=tmp_path / "cache")
    config = TokenTrainConfig(steps=6, eval_every=3, network={"width": 32, "depth": 2, "neighbours": 0})
    val = np.asarray(data.features[:8], dtype=np.float32), data.places[:8]
    trained = [
        train_decoder(features, data.places, *val, config, log=lambda *_: None)
        for features in (data.features, np.asarray(data.features, dtype=np.float32))
    ]
    mapped, in_memory = (dict(t.decoder.state_dict()) for t in trained)
    for name, value in in_memory.items():
        np.testing.assert_allclose(mapped[name].numpy(), value.numpy(), atol=1e-4, err_msg=name)
