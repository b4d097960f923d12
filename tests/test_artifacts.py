"""geoloc.artifacts: checkpoints written whole or not at all and read once, for every kind, and
the one content version every versioned JSON artefact is named by."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from geoloc.artifacts.checkpoints import save_checkpoint
from geoloc.artifacts.files import file_sha256, files_sha256, written_atomically
from geoloc.artifacts.versions import content_version
from geoloc.common.paths import MODELS_DIR
from geoloc.gallery.heads import ImageMLP, load_head, save_head
from geoloc.sampler.model import LocationSampler, build_network, load_sampler, save_sampler
from geoloc.tokens.decoder import TokenDecoder, TokenDecoderConfig
from geoloc.tokens.model import Standardiser, TokenModel, load_token_model, save_token_model

MEAN, STD = torch.linspace(-1, 1, 6), torch.linspace(0.5, 2, 6)


def _head(path: Path) -> str:
    return save_head(path, ImageMLP(6, 16), 14.5, "test-backbone")


def _sampler(path: Path) -> str:
    network = build_network("flow", {"embedding_dim": 6, "width": 32, "depth": 2})
    return save_sampler(path, LocationSampler("flow", network, MEAN, STD, "test-backbone", 1.5))


def _tokens(path: Path) -> str:
    decoder = TokenDecoder(TokenDecoderConfig(embedding_dim=6, width=32, depth=1, heads=2))
    return save_token_model(path, TokenModel(decoder, Standardiser(MEAN, STD), "test-backbone"))


# kind -> (save a fresh small model there, load it, its weights as loaded)
KINDS = {
    "gallery head": (_head, load_head, lambda m: m.mlp.state_dict()),
    "sampler": (_sampler, load_sampler, lambda m: m.network.state_dict()),
    "token model": (_tokens, load_token_model, lambda m: m.decoder.state_dict()),
}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, kind):
    save, load, weights = KINDS[kind]
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    sha = save(path)
    before = load(path)
    real_save = torch.save

    def dies_halfway(record, target, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(record, buffer)
        Path(target).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    torch.manual_seed(1)  # other weights: a whole new file would differ
    with pytest.raises(KeyboardInterrupt):
        save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no partial file or scratch folder left
    after = load(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert after.version == before.version == sha[:12] and _same(weights(after), weights(before))


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_is_read_once_and_its_version_is_of_the_bytes_loaded(tmp_path, monkeypatch, kind):
    save, load, _ = KINDS[kind]
    path = tmp_path / "model.pt"
    sha = save(path)
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file).resolve() == path.resolve():
            opened.append(args[0] if args else kwargs.get("mode", "r"))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # what Path.open and Path.read_bytes call
    model = load(path)
    assert opened == ["rb"] and model.version == sha[:12]


@pytest.mark.parametrize(
    ("path", "save", "load"),
    [
        (MODELS_DIR / "gallery" / "efficientnet_lite2_head.pt", None, load_head),
        (MODELS_DIR / "sampler" / "flow.pt", save_sampler, load_sampler),
        (MODELS_DIR / "sampler" / "sh.pt", save_sampler, load_sampler),
        (MODELS_DIR / "tokens" / "decoder.pt", save_token_model, load_token_model),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_a_shipped_checkpoint_saved_again_is_the_same_bytes(tmp_path, path, save, load):
    """The on-disk format is the one shipped, down to the zip folder torch names after the file
    (heads: `archive/`, as they were always saved through a stream)."""
    model = load(path)
    again = tmp_path / path.name
    if save is None:
        sha = save_head(again, model.mlp, model.logit_scale, model.backbone)
    else:
        sha = save(again, model)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(again.read_bytes()).hexdigest()
    assert load(again).version == model.version


def test_save_checkpoint_names_the_archive_as_torch_save_to_that_path_would(tmp_path):
    record = {"weights": torch.arange(4.0)}
    torch.save(record, tmp_path / "plain.pt")
    assert (
        save_checkpoint(tmp_path / "sub" / "plain.pt", record)
        == hashlib.sha256((tmp_path / "plain.pt").read_bytes()).hexdigest()
    )


def test_an_atomically_written_file_gets_the_mode_open_would_give_it(tmp_path):
    with open(tmp_path / "plain", "wb"):
        pass
    with written_atomically(tmp_path / "atomic") as stream:
        stream.write(b"x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_files_are_hashed_as_their_bytes_one_after_the_other_each_read_once(tmp_path, monkeypatch):
    """file_sha256 is the sha256 of a file's bytes; files_sha256 of several, that of their
    concatenation (models_fingerprint's value, as the shipped fusion records it), each opened once."""
    from geoloc.training.expert_outputs import models_fingerprint

    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several of the megabyte blocks
    small.write_bytes(b"tail")
    both = hashlib.sha256(big.read_bytes() + small.read_bytes()).hexdigest()
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: opened.append(Path(path)) or real_open(path, *a, **k))
    assert files_sha256([big, small]) == both
    assert opened == [big, small]
    monkeypatch.undo()
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest() == files_sha256([big])
    assert files_sha256([]) == hashlib.sha256().hexdigest()
    assert models_fingerprint({"a": big, "b": small}) == files_sha256([big, small])[:12]


def test_content_version_is_what_each_versioned_artefact_was_named_by(tmp_path):
    """The sha256 of the content as json.dumps(..., sort_keys=True) (default separators, ASCII
    escapes), first 12 hex: as the fusion file, the country prior (saved and loaded), the bundle
    and the text reader's cache each computed it before there was one function."""
    assert content_version({"b": 1.5, "a": ["é", None, True], "c": {"z": 1, "y": 2}}) == "27966cfdf8cf"
    # a bundle's version: of its {file: sha256}
    assert content_version({"experts/gallery/head.pt": "ab" * 32, "fusion/fusion.json": "cd" * 32}) == "e249f5a4e663"

    from geoloc.text.country_prior import load_country_prior, save_country_prior

    assert save_country_prior(tmp_path / "prior.json", {"US": 0.5, "FR": 0.5}, {"note": "test"}) == "e10dda49dc60"
    assert load_country_prior(tmp_path / "prior.json").version == "e10dda49dc60"
    shipped_prior = json.loads((MODELS_DIR / "text" / "country_prior.json").read_text())
    assert load_country_prior(MODELS_DIR / "text" / "country_prior.json").version == shipped_prior["version"]

    from geoloc.orchestrator.parameters import load_fusion

    shipped_fusion = json.loads((MODELS_DIR / "fusion" / "fusion.json").read_text())
    assert load_fusion(MODELS_DIR / "fusion" / "fusion.json").version == shipped_fusion["version"]

    from geoloc.training.text_outputs import read_lines

    options = {"b": 1.5, "a": ["é", None, True], "c": {"z": 1, "y": 2}}
    cached = tmp_path / "text" / "lines-27966cfdf8cf.json"  # the cache key of these reader options
    cached.parent.mkdir()
    cached.write_text(json.dumps({"photo.jpg": []}))
    assert read_lines([Path("photo.jpg")], options, tmp_path, decode=None) == [[]]  # found: nothing read
