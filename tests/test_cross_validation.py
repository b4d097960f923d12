"""Cross-validation on synthetic experts: a fold's fit never sees the fold, every answer and every
expert subset is scored, and the fused answer beats a misleading expert."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.evaluation.folds import photographer_folds
from geoloc.geo.sphere import haversine_km, unit_to_latlon
from geoloc.training.cross_validation import (
    CONSTANT,
    FUSED,
    RANDOM,
    fit_answer,
    score_fold,
    table_cache,
    top_points,
)
from geoloc.training.decision_fit import best_guess_xyz
from tests.synthetic_experts import GALLERY, informative_and_misleading, text_like


def test_a_fold_is_scored_by_a_fit_that_never_saw_it():
    outputs, truth, authors = informative_and_misleading(90)
    folds = photographer_folds(authors, 3)
    tables = table_cache(outputs, truth, GALLERY)
    result = score_fold(0, folds, outputs, truth, authors, GALLERY, "inverse", tables, top_points(outputs))
    assert set(result.metrics) == {FUSED, "gallery", "tokens", CONSTANT, RANDOM}
    assert set(result.coverage) == {"gallery+tokens", "gallery", "tokens", "none"}
    assert result.metrics[FUSED].geoscore > result.metrics["tokens"].geoscore + 1000
    assert result.metrics[FUSED].median_km < 500
    # Moving fold 0's true places changes its scores, never what was fitted for it.
    moved = truth.copy()
    moved[folds == 0] = np.stack([np.full((folds == 0).sum(), -10.0), np.full((folds == 0).sum(), 20.0)], axis=1)
    again = score_fold(
        0, folds, outputs, moved, authors, GALLERY, "inverse", table_cache(outputs, moved, GALLERY), top_points(outputs)
    )
    assert again.fitted == result.fitted
    assert again.metrics[FUSED].geoscore != result.metrics[FUSED].geoscore


def test_folds_scored_in_forked_workers_are_the_folds_scored_one_after_another():
    from geoloc.training.cv_pool import scored_folds

    outputs, truth, authors = informative_and_misleading(60)
    folds = photographer_folds(authors, 3)
    tables, tops = table_cache(outputs, truth, GALLERY), top_points(outputs)

    def score(fold):
        return score_fold(fold, folds, outputs, truth, authors, GALLERY, "cap10", tables, tops, calibrate=False)

    alone = list(scored_folds(score, 3, 1))
    forked = sorted(scored_folds(score, 3, 2), key=lambda r: r.fold)
    assert [r.fold for r in alone] == [0, 1, 2]
    assert [(r.metrics, r.fitted) for r in forked] == [(r.metrics, r.fitted) for r in alone]


def test_a_weighting_that_stays_at_or_above_the_constant_on_more_figures_ranks_first():
    from geoloc.training.cv_reports import standing

    def answers(fused_geoscore, fused_2500):
        figure = lambda mean: {"mean": mean, "spread": 0.0}
        constant = {"geoscore": figure(1000), "acc_200km": figure(0.01), "acc_750km": figure(0.1)}
        fused = {"geoscore": figure(fused_geoscore), "acc_200km": figure(0.02), "acc_750km": figure(0.1)}
        return {
            "constant": {**constant, "acc_2500km": figure(0.3)},
            "fused": {**fused, "acc_2500km": figure(fused_2500)},
        }

    higher_geoscore, holds_everywhere = answers(1200, 0.29), answers(1010, 0.30)
    assert standing(higher_geoscore) == (3, 1200) and standing(holds_everywhere) == (4, 1010)
    assert max([higher_geoscore, holds_everywhere], key=standing) is holds_everywhere


def test_geoloc_train_fusion_runs_cv_write_fusion_with_every_other_option_at_cvs_default(monkeypatch, tmp_path):
    """`geoloc train fusion` hands cv.run exactly the options `geoloc cv --write-fusion` parses to.
    cv.run itself is replaced by a recorder here: the real run retrains every expert per fold
    (over an hour on this machine); what is held is the options it would be given."""
    from geoloc.cli import main
    from geoloc.training import cv_cli

    given = []
    monkeypatch.setattr(cv_cli, "run", lambda args: given.append(vars(args)) or 0)
    assert main(["train", "fusion", "--folds", "6", "--seed", "3", "--data", str(tmp_path)]) == 0
    assert main(["cv", "--write-fusion", "--folds", "6", "--seed", "3", "--data", str(tmp_path)]) == 0
    # "command" is the top-level parser's record of which subcommand ran; cv.run does not read it.
    through_train, through_cv = ({k: v for k, v in g.items() if k not in ("func", "command")} for g in given)
    assert through_train == through_cv and through_train["write_fusion"] and through_train["weighting"] is None


def test_geoloc_cv_refuses_an_expert_configuration_it_cannot_train_before_loading_any_photo(tmp_path, capsys):
    """A misspelt field, an unknown expert, fields that are not a JSON object, no worker for the
    folds, an unknown or non-numeric request or budget, or an unknown expert to leave out are refused with a
    message that names the problem, before the photos (here an empty folder) are read."""
    import pytest

    from geoloc.cli import main

    assert main(["cv", "--data", str(tmp_path), "--expert-config", 'sh={"widht": 256}']) == 2
    assert "no field widht" in capsys.readouterr().err
    assert main(["cv", "--data", str(tmp_path), "--expert-config", 'shh={"width": 256}']) == 2
    assert "no expert named shh" in capsys.readouterr().err
    for bad in ('sh={"width": 256', "sh=[1]", "sh"):
        with pytest.raises(SystemExit):
            main(["cv", "--data", str(tmp_path), "--expert-config", bad])
        assert "expert-config" in capsys.readouterr().err
    assert main(["cv", "--data", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
    for option in ("--ask", "--budget"):
        for bad, named in (("flow_stpes=8", "FIELD one of"), ("flow_steps=eight", "not a whole number")):
            with pytest.raises(SystemExit):
                main(["cv", "--data", str(tmp_path), option, bad])
            assert named in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cv", "--data", str(tmp_path), "--budget", "gallery_k=8"])  # a request, not a budget
    assert "FIELD one of gallery_epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cv", "--data", str(tmp_path), "--leave-out", "shh"])
    assert "invalid choice: 'shh'" in capsys.readouterr().err


def fold_zero_by_text(answers, truth, authors, folds, answered, calibrate: bool):
    """Fold 0 scored with the "inverse" weighting, with and without text as groups."""
    groups = {"with text": answered, "without text": ~answered}
    tables = table_cache(answers, truth, GALLERY)
    return score_fold(
        0, folds, answers, truth, authors, GALLERY, "inverse", tables, top_points(answers), calibrate, groups
    )


def test_an_expert_that_answers_some_photos_is_scored_on_those_and_fitted_to_help_where_it_answers():
    """A text-like expert: exact on a third of the photos, silent on the rest. Its own figures cover
    the photos it answered; fused with it, the photos it answered are placed better than fused
    without it (the gallery alone there is off by ~100 km), and the others no worse."""
    outputs, truth, authors = informative_and_misleading(120)
    answered = np.arange(len(truth)) % 3 == 0
    with_text = {"gallery": outputs["gallery"], "text": text_like(truth)}
    folds = photographer_folds(authors, 3)

    def scored(answers):
        return fold_zero_by_text(answers, truth, authors, folds, answered, calibrate=False)

    fused_with, fused_without = scored(with_text), scored({"gallery": outputs["gallery"]})
    in_fold = folds == 0
    assert fused_with.metrics["text (answered)"].n == (answered & in_fold).sum()
    assert "text" not in fused_with.metrics  # never scored where it said nothing
    assert fused_with.metrics["fused · with text"].n == (answered & in_fold).sum()
    assert (
        fused_with.metrics["fused · with text"].median_km < 0.5 * fused_without.metrics["fused · with text"].median_km
    )
    assert fused_with.fitted["weights"]["text"] > 0
    assert (
        fused_with.metrics["fused · without text"].geoscore
        >= fused_without.metrics["fused · without text"].geoscore - 1
    )


def test_an_add_on_expert_leaves_every_photo_it_did_not_answer_as_the_others_fusion_answers_it():
    """The text-like expert is fitted beside the others' fusion: where it said nothing, the fused
    best guess is exactly the one without it, and the fold reports that fusion as "fused without text"."""
    outputs, truth, authors = informative_and_misleading(120)
    answered = np.arange(len(truth)) % 3 == 0
    with_text = {**outputs, "text": text_like(truth)}
    folds = photographer_folds(authors, 3)
    result = fold_zero_by_text(with_text, truth, authors, folds, answered, calibrate=True)
    assert result.fitted["add_ons"] == ["text"] and result.fitted["weights"]["text"] > 0
    assert sum(v for e, v in result.fitted["weights"].items() if e != "text") == pytest.approx(1.0)
    unanswered = result.metrics["fused · without text"], result.metrics["fused without text · without text"]
    assert unanswered[0].to_dict() == unanswered[1].to_dict()
    answered_fold = result.metrics["fused · with text"], result.metrics["fused without text · with text"]
    assert answered_fold[0].median_km < answered_fold[1].median_km
    # Calibrated on the photos where the set answered: the text sets on the third that has text.
    assert result.coverage["gallery+text+tokens"][2] == (answered & (folds == 0)).sum()
    assert result.coverage["gallery+tokens"][2] == (folds == 0).sum()


def test_an_add_on_experts_bandwidth_is_chosen_on_geoscore_so_its_sharp_answers_stay_sharp():
    """Right to 5 km on two photos of three that it answers and thousands of km off on the third (a
    misread name): alone, its likelihood would widen every kernel to cover the misses. Fitted on the
    fused GeoScore, the bandwidth stays narrow and the fused best guess lands on the named place."""
    outputs, truth, authors = informative_and_misleading(120)
    text = text_like(truth, misread_every=3)
    with_text = {**outputs, "text": text}
    folds = photographer_folds(authors, 3)
    named = np.flatnonzero(text[:, 0, 2] > 0)
    right = named[haversine_km(text[named, 0, 0], text[named, 0, 1], truth[named, 0], truth[named, 1]) < 1]
    params, _, tables, chosen = fit_answer(
        with_text,
        truth,
        authors,
        np.flatnonzero(folds != 0),
        GALLERY,
        "inverse",
        table_cache(with_text, truth, GALLERY),
    )
    assert chosen["weights"]["text"] > 0 and chosen["bandwidth_km"]["text"] <= 100
    tested = right[folds[right] == 0]
    lat, lon = unit_to_latlon(best_guess_xyz(params, tables, tested))
    assert np.mean(haversine_km(lat, lon, truth[tested, 0], truth[tested, 1]) <= 25) >= 0.9


def test_decision_tables_of_any_photos_in_any_order_are_those_computed_for_them_alone():
    """table_cache joins the photos without the add-on's answers (shared by all its bandwidths) and
    those with them; any rows it is asked for match decision_tables run on exactly those photos."""
    from geoloc.orchestrator.fusion import PRIOR, FusionParameters, Prior
    from geoloc.training.decision_fit import PRIOR_BANDWIDTHS_KM, decision_tables

    outputs, truth, _ = informative_and_misleading(30)
    with_text = {**outputs, "text": text_like(truth)}
    params = FusionParameters(weights={}, bandwidth_km={"gallery": 100.0, "tokens": 400.0, "text": 25.0, PRIOR: 200.0})
    rows = np.array([7, 3, 0, 12, 4, 29, 6])  # with text: 3, 0, 12, 6
    joined = table_cache(with_text, truth, GALLERY)(params, rows)
    priors = {b: Prior(GALLERY, b) for b in PRIOR_BANDWIDTHS_KM}
    alone = decision_tables({e: a[rows] for e, a in with_text.items()}, truth[rows], params, priors)
    for i, candidates in enumerate(alone.candidates):
        c = len(candidates)
        np.testing.assert_array_equal(joined.candidates[i], candidates)
        np.testing.assert_array_equal(joined.truth[i, :c], alone.truth[i, :c])
        assert np.all(joined.truth[i, c:] == -np.inf)
        for expert in with_text:
            np.testing.assert_array_equal(joined.experts[expert][i, :c], alone.experts[expert][i, :c])
        for bandwidth in PRIOR_BANDWIDTHS_KM:
            np.testing.assert_array_equal(joined.prior[bandwidth][i, :c], alone.prior[bandwidth][i, :c])


def test_the_text_comparison_holds_with_against_without_on_every_figure_in_its_direction():
    from geoloc.training.cv_reports import add_on_comparison

    def figures(geoscore, acc_25, median):
        accuracies = {f"acc_{t}km": 0.01 * t**0.5 for t in (1, 200, 750, 2500)}
        means = {"geoscore": geoscore, "acc_25km": acc_25, "median_km": median, **accuracies}
        return {"photos": 10, **{k: {"mean": v, "spread": 0.0} for k, v in means.items()}}

    answers = {
        "fused": figures(1100, 0.02, 5000),
        "fused without text": figures(1090, 0.03, 5100),
        "constant": figures(1000, 0.0, 6000),
        "fused · with text": figures(1500, 0.2, 3000),
        "fused without text · with text": figures(900, 0.05, 3500),
    }
    compared = add_on_comparison(answers, {"with text": np.arange(10) < 1}, "text")
    overall = compared["with_at_least_without"][""]
    assert not overall.pop("acc_25km") and all(overall.values())
    assert set(overall) == {"geoscore", "median_km", "acc_1km", "acc_200km", "acc_750km", "acc_2500km"}
    assert all(compared["with_at_least_without"][" · with text"].values())
    assert compared["photos_with_text"] == 1
