"""`geoloc train gallery`'s training loop and `geoloc gallery build`, on small seeded data."""

from __future__ import annotations

import json

import numpy as np
import torch

from geoloc.cli import main
from geoloc.gallery.build import embed_locations
from geoloc.gallery.heads import load_head, save_head
from geoloc.gallery.index import GalleryIndex
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.geo.sphere import haversine_km
from geoloc.training.gallery_head import HeadConfig, perturbed, train_head


def test_the_head_learns_a_feature_that_encodes_the_place(tmp_path):
    """Features that are a fixed random mix of the true location's embedding: a head trained on
    them must find the place again, where an untrained head cannot."""
    rng = np.random.default_rng(0)
    encoder = LocationEncoder.pretrained()
    cities = np.array(
        [[48.86, 2.35], [40.71, -74.0], [35.68, 139.65], [-33.87, 151.21], [-22.91, -43.17], [30.04, 31.24]]
    )
    gallery_coordinates = np.concatenate(
        [cities, np.stack([rng.uniform(-60, 70, 1500), rng.uniform(-180, 180, 1500)], 1)]
    )
    gallery_vectors = embed_locations(encoder, gallery_coordinates, progress=False)
    mixing = rng.normal(0, 1, (512, 64)).astype(np.float32)

    def photos(n):
        which = rng.integers(0, len(cities), n)
        truth = perturbed(cities[which], 5.0, 1, rng)[0]
        features = embed_locations(encoder, truth, progress=False) @ mixing + rng.normal(0, 0.01, (n, 64)).astype(
            np.float32
        )
        return features.astype(np.float32), truth

    (train_x, train_y), (val_x, val_y) = photos(300), photos(60)
    config = HeadConfig(hidden_dim=128, dropout=0.0, gps_noise_km=10.0, epochs=15, batch_size=64, negatives=512)
    trained = train_head(
        train_x, train_y, val_x, val_y, gallery_vectors, gallery_coordinates, encoder, config, log=lambda _: None
    )
    assert trained.val.accuracy_at(25) > 0.9, trained.val

    sha = save_head(tmp_path / "head.pt", trained.mlp, trained.logit_scale, "synthetic")
    head = load_head(tmp_path / "head.pt")
    assert head.version == sha[:12] and head.logit_scale == trained.logit_scale
    saved, loaded = trained.mlp.state_dict(), head.mlp.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    best = np.argmax(head.queries(val_x) @ gallery_vectors.T, axis=1)
    errors = haversine_km(val_y[:, 0], val_y[:, 1], gallery_coordinates[best, 0], gallery_coordinates[best, 1])
    assert np.median(errors) < 25 and head.backbone == "synthetic" and head.in_dim == 64


def test_geoloc_gallery_build_and_add_write_an_index_and_its_manifest(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("lat,lon\n10,20\n-30,40\n")
    (tmp_path / "b.csv").write_text("lat,lon\n50,60\n")
    out = tmp_path / "gallery"
    assert main(["gallery", "build", "--gps", str(tmp_path / "a.csv"), "--out", str(out)]) == 0
    assert main(["gallery", "add", "--gps", str(tmp_path / "b.csv"), "--gallery", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 3 and manifest["index_type"] == "flat" and manifest["dimension"] == 512
    assert [s.split()[0] for s in manifest["sources"]] == ["a.csv", "b.csv"]
    assert len(GalleryIndex.load(out)) == 3
    (tmp_path / "bad.csv").write_text("lat,lon\n100,0\n")
    assert main(["gallery", "build", "--gps", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "x")]) == 2
    assert "bad.csv:2" in capsys.readouterr().err


def test_geoclips_released_head_loads_strictly_with_its_logit_scale():
    import torch

    from geoloc.gallery.heads import clip_head

    head = clip_head()
    assert (head.in_dim, head.backbone) == (768, "clip-vit-l14") and abs(head.logit_scale - 39.69) < 0.01
    assert torch.equal(head.mlp.shift, torch.zeros(768)) and torch.equal(head.mlp.scale, torch.ones(768))
    queries = head.queries(np.random.default_rng(0).normal(0, 1, (3, 768)))
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-6)


def test_a_burst_weighted_out_of_the_loss_and_the_stopping_does_not_decide_the_answer():
    """Features that say nothing (all the same): unweighted, the head's one answer is the majority's
    place (a burst of 200 photos in Paris); with the burst's photos weighted to zero in the loss and
    the epoch's score, it is the minority's (Sydney)."""
    rng = np.random.default_rng(1)
    encoder = LocationEncoder.pretrained()
    paris, sydney = [48.86, 2.35], [-33.87, 151.21]
    gallery_coordinates = np.concatenate(
        [[paris, sydney], np.stack([rng.uniform(-60, 70, 1500), rng.uniform(-180, 180, 1500)], 1)]
    )
    gallery_vectors = embed_locations(encoder, gallery_coordinates, progress=False)
    which = rng.permutation(np.r_[np.zeros(200, int), np.ones(100, int)])
    coordinates = np.array([paris, sydney])[which]
    features = np.ones((300, 32), dtype=np.float32)
    weight = (which == 1).astype(float)
    config = HeadConfig(hidden_dim=64, dropout=0.0, gps_noise_km=10.0, epochs=10, batch_size=64, negatives=512)
    train, val = slice(0, 250), slice(250, 300)

    def answer(**weights) -> np.ndarray:
        trained = train_head(
            features[train],
            coordinates[train],
            features[val],
            coordinates[val],
            gallery_vectors,
            gallery_coordinates,
            encoder,
            config,
            log=lambda _: None,
            **weights,
        )
        with torch.inference_mode():
            query = torch.nn.functional.normalize(trained.mlp(torch.from_numpy(features[:1])), dim=1).numpy()
        return gallery_coordinates[np.argmax(query @ gallery_vectors.T)]

    def km(a, b) -> float:
        return float(haversine_km(a[0], a[1], b[0], b[1]))

    assert km(answer(), paris) < 500
    assert km(answer(train_weight=weight[train], val_weight=weight[val]), sydney) < 500
