"""Out-of-fold expert answers (geoloc.training.out_of_fold) on seeded synthetic photos.

60 made-up EfficientNet-Lite2 features and places from 12 photographers in 3 photographer-grouped
folds, every expert trained for a few steps (the answers are meaningless; what is held is where
they come from), over the real default 100K GPS gallery that compute_expert_outputs uses (built
first if missing, as every caller of loaded_gallery builds it).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from geoloc.evaluation.folds import photographer_folds
from geoloc.experts import TRAINED_EXPERTS
from geoloc.gallery.heads import load_head, save_head
from geoloc.gallery.location_encoder import LocationEncoder
from geoloc.gallery.retrieval import GalleryRetrieval, loaded_gallery
from geoloc.sampler.model import load_sampler, save_sampler
from geoloc.tokens.model import load_token_model, save_token_model
from geoloc.training import out_of_fold
from geoloc.training.expert_outputs import ExpertModels, ExpertRequests, compute_expert_outputs, outputs_of
from geoloc.training.out_of_fold import FoldBudget, fold_configs, out_of_fold_outputs, train_fold_experts

PHOTOS, PHOTOGRAPHERS, FOLDS = 60, 12, 3
TINY = FoldBudget(
    gallery_epochs=1, flow_steps=2, sh_steps=2, tokens_steps=2, evaluations=1, eval_samples=2, eval_steps=2
)
REQUESTS = ExpertRequests(gallery_k=8, flow_samples=4, flow_steps=2, sh_samples=4, sh_steps=2, tokens_beam_width=3)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def synthetic() -> dict:
    """features [60, 1280] float32 (non-negative, as pooled activations are), coords [60, 2], authors, folds."""
    rng = np.random.default_rng(0)
    authors = [f"photographer {i}" for i in rng.integers(0, PHOTOGRAPHERS, PHOTOS)]
    return {
        "features": rng.gamma(1.0, 0.3, (PHOTOS, 1280)).astype(np.float32),
        "coords": np.stack([rng.uniform(-60, 70, PHOTOS), rng.uniform(-180, 180, PHOTOS)], axis=1),
        "authors": authors,
        "folds": photographer_folds(authors, FOLDS),
    }


@pytest.fixture(scope="module")
def gallery():
    return loaded_gallery()


@pytest.fixture(scope="module")
def encoder() -> LocationEncoder:
    return LocationEncoder.pretrained()


def oof(
    synthetic,
    gallery,
    encoder,
    cache_dir,
    coords=None,
    log=None,
    configs=None,
    requests=REQUESTS,
    experts=TRAINED_EXPERTS,
) -> dict[str, np.ndarray]:
    return out_of_fold_outputs(
        synthetic["features"],
        synthetic["coords"] if coords is None else coords,
        synthetic["authors"],
        synthetic["folds"],
        TINY,
        requests,
        cache_dir,
        seed=0,
        log=log or (lambda line: None),
        gallery=gallery,
        encoder=encoder,
        configs=configs,
        experts=experts,
    )


@pytest.fixture(scope="module")
def first(synthetic, gallery, encoder, tmp_path_factory) -> tuple[dict[str, np.ndarray], object, list[str]]:
    """The out-of-fold answers, the cache dir they were written to, and the lines logged."""
    cache_dir, lines = tmp_path_factory.mktemp("cache"), []
    return oof(synthetic, gallery, encoder, cache_dir, log=lines.append), cache_dir, lines


def test_every_row_gets_answers_as_wide_as_compute_expert_outputs_gives(first, synthetic):
    """Each expert's array is [60, points, 4] with compute_expert_outputs' widths, and every row was
    written by its fold (no row left at the zero weights it starts at); each fold's training logs
    the seconds of each expert."""
    outputs, _, lines = first
    shipped = compute_expert_outputs(synthetic["features"][:2], REQUESTS)
    assert sorted(outputs) == sorted(shipped) == sorted(TRAINED_EXPERTS)
    for expert in TRAINED_EXPERTS:
        assert outputs[expert].shape == (PHOTOS, *shipped[expert].shape[1:]), expert
        assert (outputs[expert][:, :, 2].sum(axis=1) > 0).all(), f"{expert}: a row without answers"
    for label in ("gallery head", "flow sampler", "sh sampler", "token decoder"):
        assert sum(line.strip().startswith(f"{label}:") and " s" in line for line in lines) == FOLDS, label


def test_a_folds_answers_do_not_depend_on_its_own_photos_places(first, synthetic, gallery, encoder, tmp_path):
    """Moving fold 0's photos elsewhere leaves fold 0's answers bit-identical (its experts neither
    fit nor stopped on them), and changes the other folds' answers from every expert (theirs did)."""
    outputs, _, _ = first
    in_fold_0 = synthetic["folds"] == 0
    moved = synthetic["coords"].copy()
    moved[in_fold_0] = np.stack([-moved[in_fold_0, 0], (moved[in_fold_0, 1] + 270) % 360 - 180], axis=1)
    after = oof(synthetic, gallery, encoder, tmp_path, coords=moved)
    for expert in TRAINED_EXPERTS:
        np.testing.assert_array_equal(after[expert][in_fold_0], outputs[expert][in_fold_0], err_msg=expert)
        assert not np.array_equal(after[expert][~in_fold_0], outputs[expert][~in_fold_0]), expert


def test_each_folds_answers_are_read_back_from_the_cache(first, synthetic, gallery, encoder, monkeypatch):
    """The same arguments again train nothing: every expert's answers to every fold come from
    cache_dir/cv, one file each, equal."""
    outputs, cache_dir, _ = first
    assert len(list((cache_dir / "cv").glob("*.npz"))) == FOLDS * len(TRAINED_EXPERTS)

    def no_training(*args, **kwargs):
        raise AssertionError("a fold was trained again")

    monkeypatch.setattr(out_of_fold, "train_fold_expert", no_training)
    again = oof(synthetic, gallery, encoder, cache_dir)
    for expert in TRAINED_EXPERTS:
        np.testing.assert_array_equal(again[expert], outputs[expert], err_msg=expert)


@pytest.fixture
def trained(monkeypatch) -> list[str]:
    """The experts train_fold_expert trains from here on, in order (it still trains them)."""
    experts, train = [], out_of_fold.train_fold_expert
    monkeypatch.setattr(
        out_of_fold, "train_fold_expert", lambda expert, *a, **k: experts.append(expert) or train(expert, *a, **k)
    )
    return experts


def test_another_configuration_of_one_expert_retrains_that_expert_alone(
    first, synthetic, gallery, encoder, tmp_path, trained
):
    """A narrower token decoder (configs) trains the token expert of every fold again and nothing
    else: its answers change, the other experts' are read back from the cache unchanged."""
    outputs, cache_dir, _ = first
    shutil.copytree(cache_dir, tmp_path, dirs_exist_ok=True)
    narrower = oof(synthetic, gallery, encoder, tmp_path, configs={"tokens": {"network": {"width": 32}}})
    assert trained == ["tokens"] * FOLDS
    assert not np.array_equal(narrower["tokens"], outputs["tokens"])
    for expert in ("gallery", "flow", "sh"):
        np.testing.assert_array_equal(narrower[expert], outputs[expert], err_msg=expert)


def test_asking_one_sampler_method_for_other_samples_answers_with_that_expert_alone(
    first, synthetic, gallery, encoder, tmp_path, trained
):
    """The cache is keyed by what each expert is asked, not by what all are: more flow samples train
    and answer the flow expert of every fold again, and read the others back unchanged."""
    outputs, cache_dir, _ = first
    shutil.copytree(cache_dir, tmp_path, dirs_exist_ok=True)
    more = oof(synthetic, gallery, encoder, tmp_path, requests=replace(REQUESTS, flow_samples=6))
    assert trained == ["flow"] * FOLDS
    assert more["flow"].shape[1] == 6 and outputs["flow"].shape[1] == REQUESTS.flow_samples
    for expert in ("gallery", "sh", "tokens"):
        np.testing.assert_array_equal(more[expert], outputs[expert], err_msg=expert)


def test_an_expert_left_out_is_neither_trained_nor_answers(synthetic, gallery, encoder, tmp_path, trained):
    """`geoloc cv --leave-out sh`: in an empty cache only the other three experts are trained, and the
    answers hold those three alone."""
    without = oof(synthetic, gallery, encoder, tmp_path, experts=("gallery", "flow", "tokens"))
    assert sorted(without) == ["flow", "gallery", "tokens"]
    assert "sh" not in trained and sorted(set(trained)) == ["flow", "gallery", "tokens"]
    assert not list((tmp_path / "cv").glob("*-sh-*"))


@pytest.mark.parametrize(
    ("configs", "named"),
    [
        ({"sh": {"widht": 256}}, "no field widht"),
        ({"shh": {"dropout": 0.5}}, "no expert named shh"),
        ({"tokens": {"steps": 10}}, "the fold budget sets"),
        ({"tokens": {"network": {"neighbours": 4}}}, "gallery neighbours"),
    ],
)
def test_a_configuration_that_cannot_be_trained_is_refused_by_name(configs, named):
    with pytest.raises(ValueError, match=named):
        fold_configs(TINY, configs)


def test_a_configurations_network_fields_merge_into_the_shipped_ones():
    """Changing one network field keeps the others at the shipped configuration's."""
    shipped, changed = fold_configs(TINY)["sh"], fold_configs(TINY, {"sh": {"network": {"width": 64}}})["sh"]
    assert changed.network == {**shipped.network, "width": 64} and changed.network != shipped.network
    assert replace(changed, network=shipped.network) == shipped


def test_fold_experts_answer_as_they_would_once_saved_and_loaded(first, synthetic, gallery, encoder, tmp_path):
    """The in-memory experts of a fold give the answers their checkpoints would: the token decoder's
    weights are rounded as its checkpoint stores them, as the samplers' are, and every network is
    in eval mode (dropout off). The four trained together (as shipping trains them) answer fold 0
    exactly as out_of_fold_outputs' experts, each trained alone, did."""
    rows = synthetic["folds"] != 0
    trained = train_fold_experts(
        synthetic["features"][rows],
        synthetic["coords"][rows],
        [a for a, keep in zip(synthetic["authors"], rows, strict=True) if keep],
        TINY,
        gallery,
        encoder,
        log=lambda line: None,
    )
    head = trained["gallery"].head
    save_head(tmp_path / "head.pt", head.mlp, head.logit_scale, head.backbone)
    save_sampler(tmp_path / "flow.pt", trained["flow"])
    save_sampler(tmp_path / "sh.pt", trained["sh"])
    save_token_model(tmp_path / "tokens.pt", trained["tokens"])
    loaded = ExpertModels(
        {
            "gallery": GalleryRetrieval(load_head(tmp_path / "head.pt"), gallery),
            "flow": load_sampler(tmp_path / "flow.pt"),
            "sh": load_sampler(tmp_path / "sh.pt"),
            "tokens": load_token_model(tmp_path / "tokens.pt"),
        }
    )
    asked = synthetic["features"][~rows]
    in_memory, from_files = outputs_of(trained, asked, REQUESTS), outputs_of(loaded, asked, REQUESTS)
    for expert in TRAINED_EXPERTS:
        np.testing.assert_array_equal(in_memory[expert], from_files[expert], err_msg=expert)
        np.testing.assert_array_equal(in_memory[expert], first[0][expert][~rows], err_msg=expert)


def test_outputs_of_the_shipped_models_is_compute_expert_outputs(synthetic, gallery):
    """ExpertModels.shipped over a gallery loaded once and shared (as the folds share it) answers as
    compute_expert_outputs, which loads its own, bit for bit, for the seed given."""
    rows = synthetic["features"][:3]
    expected = compute_expert_outputs(rows, REQUESTS, seed=7)
    got = outputs_of(ExpertModels.shipped(gallery), rows, REQUESTS, seed=7)
    for expert in TRAINED_EXPERTS:
        np.testing.assert_array_equal(got[expert], expected[expert], err_msg=expert)


def test_shipping_trains_on_every_photo_and_writes_manifests_with_the_cv_figures(
    synthetic, gallery, encoder, tmp_path, monkeypatch
):
    """ship_experts writes four checkpoints the loaders read, each with a manifest that matches its
    bytes, counts every photo, carries its expert's CV row, and records the configuration it was
    trained in (here with a changed token decoder, as --expert-config gives), from which
    fold_configs alone gives the same fold configurations (so the next CV's cached answers apply)."""
    import hashlib
    import json

    from geoloc.training.shipped_experts import ship_experts

    changed = {"tokens": {"network": {"width": 32}}}
    before = out_of_fold.fold_configs(TINY, changed)
    cv = {
        "what": "photographer-grouped 3-fold cross-validation",
        "chosen": {
            "summary": {"answers": {e: {"geoscore": {"mean": 100.0 + i}} for i, e in enumerate(TRAINED_EXPERTS)}}
        },
    }
    cv["chosen"]["summary"]["answers"]["constant"] = {"geoscore": {"mean": 50.0}}
    paths = {
        "gallery": tmp_path / "head.pt",
        "flow": tmp_path / "flow.pt",
        "sh": tmp_path / "sh.pt",
        "tokens": tmp_path / "tokens.pt",
    }
    manifests = ship_experts(
        synthetic["features"],
        synthetic["coords"],
        synthetic["authors"],
        TINY,
        cv,
        "geoloc cv --ship",
        gallery,
        encoder,
        paths=paths,
        log=lambda line: None,
        configs=changed,
    )
    for i, expert in enumerate(TRAINED_EXPERTS):
        fields = json.loads(manifests[expert].read_text())
        assert fields["sha256"] == hashlib.sha256(paths[expert].read_bytes()).hexdigest(), expert
        assert f"({PHOTOS} photos, {PHOTOGRAPHERS} photographers)" in fields["data"]["train"], expert
        assert fields["cv_top1"]["geoscore"]["mean"] == 100.0 + i and fields["command"] == "geoloc cv --ship"
    loaded = ExpertModels(
        {
            "gallery": GalleryRetrieval(load_head(paths["gallery"]), gallery),
            "flow": load_sampler(paths["flow"]),
            "sh": load_sampler(paths["sh"]),
            "tokens": load_token_model(paths["tokens"]),
        }
    )
    answers = outputs_of(loaded, synthetic["features"][:2], REQUESTS)
    assert all(np.isfinite(answers[e][..., :2]).all() for e in TRAINED_EXPERTS)

    monkeypatch.setattr(out_of_fold, "SHIPPED_MANIFESTS", {e: p.with_suffix(".json") for e, p in paths.items()})
    assert out_of_fold.fold_configs(TINY) == before and before["tokens"].network["width"] == 32


def test_the_photo_weighting_trains_other_experts_cached_apart(first, synthetic, gallery, encoder, tmp_path):
    """Weighting each photographer once ("inverse") changes what every expert answers, and its
    answers are cached under another key than one vote per photo's, in the same cache dir."""
    outputs, cache_dir, _ = first
    budget = replace(TINY, photo_weighting="inverse")
    weighted = out_of_fold_outputs(
        synthetic["features"],
        synthetic["coords"],
        synthetic["authors"],
        synthetic["folds"],
        budget,
        REQUESTS,
        tmp_path,
        log=lambda line: None,
        gallery=gallery,
        encoder=encoder,
    )
    for expert in TRAINED_EXPERTS:
        assert not np.array_equal(weighted[expert], outputs[expert]), expert
    assert not {p.name for p in (tmp_path / "cv").glob("*.npz")} & {p.name for p in (cache_dir / "cv").glob("*.npz")}
