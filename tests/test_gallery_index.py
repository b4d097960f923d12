"""The location encoder against the geoclip package's own, and the FAISS gallery against exact numpy."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from geoloc.gallery.build import add_to_gallery, build_gallery, embed_locations, read_gps_csv
from geoloc.gallery.geoclip_reference import geoclip_reference_encoder
from geoloc.gallery.index import GalleryIndex, index_type_for
from geoloc.gallery.location_encoder import LocationEncoder


@pytest.fixture(scope="module")
def encoder() -> LocationEncoder:
    return LocationEncoder.pretrained()


def random_points(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere
    return np.stack([lat, rng.uniform(-180, 180, n)], axis=1)


def test_our_location_encoder_equals_geoclips_on_1000_random_points(encoder):
    points = torch.as_tensor(random_points(1000, seed=0), dtype=torch.float32)
    with torch.no_grad():
        ours, theirs = encoder(points), geoclip_reference_encoder()(points)
    assert ours.shape == (1000, 512)
    assert (ours - theirs).abs().max().item() < 1e-5


@pytest.fixture(scope="module")
def seeded_gallery(encoder):
    coordinates = random_points(3000, seed=1)
    return coordinates, embed_locations(encoder, coordinates, progress=False)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def test_flat_search_and_partition_equal_brute_force_numpy(seeded_gallery, encoder):
    coordinates, vectors = seeded_gallery
    gallery = GalleryIndex.build(vectors, coordinates, encoder_sha256="test")
    queries = embed_locations(encoder, random_points(64, seed=2), progress=False)
    scores, ids = gallery.search(queries, 10)
    want_scores, want_ids = exact_top_k(vectors, queries, 10)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (ids == want_ids).mean() > 0.99  # ties aside, the same points
    logits = 39.69 * (queries.astype(np.float64) @ vectors.T)
    want = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    np.testing.assert_allclose(gallery.log_partition(queries, 39.69), want, atol=1e-4)
    assert gallery.exact and gallery.manifest.index_type == "flat"


def test_the_gpu_path_of_a_flat_gallery_gives_the_same_softmax(seeded_gallery, encoder):
    """The torch path that a GPU runs, run here on the CPU, against the numpy path."""
    coordinates, vectors = seeded_gallery
    numpy_path = GalleryIndex.build(vectors, coordinates, encoder_sha256="test")
    torch_path = GalleryIndex.build(vectors, coordinates, encoder_sha256="test")
    torch_path.move_to_gpu(device="cpu")
    queries = embed_locations(encoder, random_points(16, seed=4), progress=False)
    (p1, i1), (p2, i2) = numpy_path.softmax_top_k(queries, 20, 39.69), torch_path.softmax_top_k(queries, 20, 39.69)
    np.testing.assert_allclose(p1, p2, rtol=1e-4)
    assert (i1 == i2).mean() > 0.99


@pytest.mark.parametrize("index_type", ["hnsw", "ivfsq8"])
def test_approximate_indexes_find_the_exact_neighbours_and_estimate_the_partition(seeded_gallery, encoder, index_type):
    coordinates, vectors = seeded_gallery
    gallery = GalleryIndex.build(vectors, coordinates, encoder_sha256="test", index_type=index_type)
    queries = embed_locations(encoder, random_points(64, seed=3), progress=False)
    _, ids = gallery.search(queries, 10)
    _, want_ids = exact_top_k(vectors, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want_ids, strict=True)])
    assert recall > 0.95, recall
    exact = GalleryIndex.build(vectors, coordinates, encoder_sha256="test").log_partition(queries, 39.69)
    estimate = gallery.log_partition(queries, 39.69)
    assert not gallery.exact and np.abs(estimate - exact).max() < 0.1  # within 10 % in probability


def test_a_gallery_survives_save_and_load_and_grows_without_a_rebuild(tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("lat,lon,label\n48.8566,2.3522,Paris\n-33.8688,151.2093,Sydney\n40.7128,-74.006,New York\n")
    second.write_text("LAT,LON,LABEL\n35.6762,139.6503,Tokyo\n")
    built = build_gallery(first, tmp_path / "gallery", progress=False)
    loaded = GalleryIndex.load(tmp_path / "gallery")
    assert (
        loaded.manifest == built.manifest and loaded.manifest.count == 3 and len(loaded.manifest.encoder_sha256) == 64
    )
    assert list(loaded.labels) == ["Paris", "Sydney", "New York"]
    query = embed_locations(LocationEncoder.pretrained(), np.array([[48.85, 2.35]]), progress=False)
    assert loaded.search(query, 1)[1][0, 0] == 0
    grown = add_to_gallery(tmp_path / "gallery", second, progress=False)
    reloaded = GalleryIndex.load(tmp_path / "gallery")
    tokyo = embed_locations(LocationEncoder.pretrained(), np.array([[35.68, 139.65]]), progress=False)
    assert grown.manifest.count == reloaded.manifest.count == 4 and len(reloaded.manifest.sources) == 2
    assert reloaded.labels[reloaded.search(tokyo, 1)[1][0, 0]] == "Tokyo"
    np.testing.assert_allclose(reloaded.coordinates[3], [35.6762, 139.6503])


def saved_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def assert_same_gallery(loaded: GalleryIndex, saved: GalleryIndex) -> None:
    assert loaded.manifest == saved.manifest
    np.testing.assert_array_equal(loaded.coordinates, saved.coordinates)
    for name in ("labels", "partition_sample"):
        if getattr(saved, name) is None:
            assert getattr(loaded, name) is None, name
        else:
            np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
    assert faiss.serialize_index(loaded.index).tobytes() == faiss.serialize_index(saved.index).tobytes()


@pytest.mark.parametrize("index_type", ["flat", "ivfsq8"])
def test_a_saved_gallery_loads_equal_to_what_was_saved(seeded_gallery, tmp_path, index_type):
    coordinates, vectors = seeded_gallery
    labels = [f"place {i}" for i in range(len(coordinates))]
    gallery = GalleryIndex.build(vectors, coordinates, encoder_sha256="test", labels=labels, index_type=index_type)
    gallery.save(tmp_path / "gallery")
    assert_same_gallery(GalleryIndex.load(tmp_path / "gallery"), gallery)
    assert not [p.name for p in (tmp_path / "gallery").iterdir() if ".partial-" in p.name]
    # Saved over by a gallery without labels or sample: none of the old files is left to be read with it.
    flat = GalleryIndex.build(vectors[:10], coordinates[:10], encoder_sha256="test")
    flat.save(tmp_path / "gallery")
    assert_same_gallery(GalleryIndex.load(tmp_path / "gallery"), flat)
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == [
        "coordinates.npy",
        "index.faiss",
        "manifest.json",
    ]


@pytest.mark.parametrize("failing", ["write_index", "save"])
def test_a_save_that_fails_midway_leaves_the_previous_gallery_as_it_was(seeded_gallery, tmp_path, monkeypatch, failing):
    coordinates, vectors = seeded_gallery
    folder = tmp_path / "gallery"
    previous = GalleryIndex.build(vectors[:100], coordinates[:100], encoder_sha256="test", index_type="ivfsq8")
    previous.save(folder)
    before = saved_files(folder)
    bigger = GalleryIndex.build(vectors, coordinates, encoder_sha256="test", labels=["x"] * len(vectors))
    module, name = (faiss, "write_index") if failing == "write_index" else (np, "save")
    real = getattr(module, name)

    def written_partly(what, target, *args, **kwargs):
        real(what, target, *args, **kwargs)  # the bytes reach the file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, name, written_partly)
    with pytest.raises(OSError, match="No space left"):
        bigger.save(folder)
    monkeypatch.undo()
    assert saved_files(folder) == before  # not one byte changed, nothing added, no partial file left
    assert_same_gallery(GalleryIndex.load(folder), previous)
    # A first save that fails leaves no manifest: loaded_gallery builds the gallery again.
    monkeypatch.setattr(module, name, written_partly)
    with pytest.raises(OSError):
        bigger.save(tmp_path / "first")
    assert list((tmp_path / "first").iterdir()) == []


def test_bad_gallery_csvs_are_refused_naming_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lon\n10,20\n95,0\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: \(95.0, 0.0\) is not a latitude"):
        read_gps_csv(bad)
    bad.write_text("latitude,longitude\n1,2\n")
    with pytest.raises(ValueError, match="header must start with lat,lon"):
        read_gps_csv(bad)


def test_the_index_type_follows_the_gallery_size():
    assert [index_type_for(n) for n in (100_000, 1_000_000, 1_000_001, 10_000_000)] == [
        "flat",
        "flat",
        "ivfsq8",
        "ivfsq8",
    ]


def test_the_partition_estimate_holds_when_the_top_k_is_most_of_the_gallery(seeded_gallery, encoder):
    coordinates, vectors = seeded_gallery
    small = GalleryIndex.build(vectors[:300], coordinates[:300], encoder_sha256="test", index_type="hnsw")
    exact = GalleryIndex.build(vectors[:300], coordinates[:300], encoder_sha256="test")
    queries = embed_locations(encoder, random_points(4, seed=5), progress=False)
    probabilities, _ = small.softmax_top_k(queries, 300, 39.69)
    want, _ = exact.softmax_top_k(queries, 300, 39.69)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), want.sum(axis=1), rtol=0.05)


def test_nprobe_trades_time_for_recall_on_an_ivf_gallery(seeded_gallery, encoder, tmp_path):
    coordinates, vectors = seeded_gallery
    GalleryIndex.build(vectors, coordinates, encoder_sha256="test", index_type="ivfsq8").save(tmp_path / "ivf")
    queries = embed_locations(encoder, random_points(64, seed=6), progress=False)
    _, truth = exact_top_k(vectors, queries, 10)

    def recall(nprobe: int) -> float:
        _, ids = GalleryIndex.load(tmp_path / "ivf", nprobe=nprobe).search(queries, 10)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))

    assert recall(1) < recall(10_000) and recall(10_000) > 0.98  # every list: only SQ8's rounding is left
