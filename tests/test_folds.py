"""Photographer-grouped folds: every photographer on one side, folds near equal, the same every time."""

import argparse

import numpy as np
import pytest

from geoloc.evaluation.folds import WEIGHTINGS, photo_weights, photographer_folds


def _authors(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    # Bursty, as Im2GPS3k is: a few photographers with many photos, most with one or two.
    counts = np.concatenate([[167, 60, 40], rng.integers(1, 6, size=400)])
    return [f"author{i}" for i, c in enumerate(counts) for _ in range(c)] + ["", ""]


def test_no_photographer_is_in_two_folds():
    authors = _authors()
    folds = photographer_folds(authors, 5)
    for author in set(authors) - {""}:
        assert len(set(folds[[i for i, a in enumerate(authors) if a == author]])) == 1


def test_folds_are_near_equal_and_all_used():
    authors = _authors()
    sizes = np.bincount(photographer_folds(authors, 5), minlength=5)
    assert sizes.min() > 0
    assert sizes.max() - sizes.min() <= 167  # the largest burst alone may unbalance them, never more


def test_folds_do_not_depend_on_photo_order():
    authors = [a for a in _authors() if a]  # an authorless photo is named by its place in the list
    order = np.random.default_rng(1).permutation(len(authors))
    shuffled = [authors[i] for i in order]
    assert (photographer_folds(shuffled, 5) == photographer_folds(authors, 5)[order]).all()


def test_photos_without_author_stand_alone_and_bad_k_is_refused():
    folds = photographer_folds(["", "", "", "a", "a"], 2)
    assert folds[3] == folds[4]
    with pytest.raises(ValueError, match="at least 2 folds"):
        photographer_folds(["a", "b"], 1)
    with pytest.raises(ValueError, match="cannot fill"):
        photographer_folds(["a", "a", "b"], 3)


def test_photo_weightings_count_photographers_as_stated():
    authors = ["a"] * 20 + ["b"] * 5 + ["", "c"]
    assert photo_weights(authors, "photo").sum() == 27
    assert photo_weights(authors, "inverse").sum() == pytest.approx(4.0)  # a, b, c, and the authorless one
    assert photo_weights(authors, "cap10").sum() == pytest.approx(10 + 5 + 1 + 1)
    with pytest.raises(ValueError, match="unknown photo weighting"):
        photo_weights(authors, "square")


def test_the_cv_commands_weighting_choices_are_the_weightings_there_are():
    from geoloc.training.cv_cli import TRAINING_WEIGHTINGS

    assert sorted(TRAINING_WEIGHTINGS) == sorted(WEIGHTINGS)


def test_the_cv_commands_expert_request_and_budget_names_are_those_there_are():
    """`geoloc cv --leave-out`, `--ask` and `--budget` name them without loading numpy; they must not drift."""
    from dataclasses import fields

    from geoloc.experts import TRAINED_EXPERTS
    from geoloc.training import cv_cli
    from geoloc.training.cv_cli import BUDGET_FIELDS, REQUEST_FIELDS
    from geoloc.training.expert_outputs import ExpertRequests
    from geoloc.training.out_of_fold import FoldBudget

    parser = cv_cli.add_parser(argparse.ArgumentParser().add_subparsers())
    (leave_out,) = [a for a in parser._actions if "--leave-out" in a.option_strings]
    assert (*TRAINED_EXPERTS, "text") == tuple(leave_out.choices)
    assert tuple(f.name for f in fields(ExpertRequests)) == REQUEST_FIELDS
    assert tuple(f.name for f in fields(FoldBudget) if isinstance(f.default, int)) == BUDGET_FIELDS
