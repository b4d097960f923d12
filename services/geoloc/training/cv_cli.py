"""`geoloc cv`: photographer-grouped K-fold cross-validation of the whole answer over train + val.

Pools Im2GPS3k train and val (1,902 photos, 119 photographers), splits them into K folds by
photographer (evaluation/folds.py), trains every expert once per fold on the other folds
(training/out_of_fold.py, cached), then for each fold fits the fusion and the decision on the
other folds' out-of-fold answers and scores the fold: the fused best guess, each expert's own top
point, the constant (the GPS gallery's densest point) and a random gallery point, and the 50 %
and 90 % radii's coverage for every subset of experts. Each photo weighting of the fit is
compared. Prints the table (mean ± spread over folds) and writes the figures as JSON;
`--write-fusion` then refits the fusion on all the photos' out-of-fold answers, with the
weighting that did best, and ships it with the CV figures in its manifest. `--ship` first
retrains the four shipped experts on all the photos by the folds' own procedure
(training/shipped_experts.py), so that what ships is what the figures measured.

What is compared this way: an expert's training (`--expert-config`), what the experts are asked
(`--ask`: samples, steps, beam width, k), and the fusion without an expert (`--leave-out`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geoloc import experts as registry
from geoloc.experts import EXPERTS, TRAINED_EXPERTS
from geoloc.training.arguments import DATA_HELP
from geoloc.training.fold_budget import BUDGET_FIELDS

# Only the parser and the checks of its options live here, with nothing loaded at import beyond
# them, so that `geoloc --help` stays quick; the run itself is training/cv_run.py, its reports
# cv_reports.py, its worker pool cv_pool.py and the fusion it writes cv_fusion.py.

CV_FIGURES = Path("models/fusion/cv.json")
# The two ways of giving each photographer one vote. One vote per photo ("photo") lost to
# both by about 45 GeoScore under the same CV (docs/evaluation.md), and is left out to keep the run
# within its time.
COMPARED_WEIGHTINGS = ("inverse", "cap10")
TRAINING_WEIGHTINGS = ("photo", *COMPARED_WEIGHTINGS)  # evaluation/folds.WEIGHTINGS, named here: --help loads no numpy
# What each expert is asked, from the registry (which loads no numpy either).
REQUEST_FIELDS = tuple(name for expert in TRAINED_EXPERTS for name in registry.expert(expert).asked)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cv", help="photographer-grouped cross-validation of the answer", description=__doc__
    )
    parser.add_argument("--data", type=Path, metavar="DIR", help=DATA_HELP)
    parser.add_argument("--folds", type=int, default=5, help="K, at least 5 for reported figures (default: 5)")
    parser.add_argument("--out", type=Path, help=f"where the figures go (default: {CV_FIGURES} in the checkout)")
    parser.add_argument(
        "--write-fusion", action="store_true", help="refit the fusion and write it (to models/fusion/fusion.json)"
    )
    parser.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="where --ship writes the experts and --write-fusion the fusion, in the layout of the checkout's "
        "models/ that `geoloc bundle build --models` reads (default: the checkout's models/, the default "
        "backbone's shipped ones; required with --features)",
    )
    parser.add_argument(
        "--budget",
        action="append",
        type=budget_field,
        default=[],
        metavar="FIELD=N",
        help="train each fold's experts (and, with --ship, the shipped ones) this long instead of the shipped "
        f"procedure's (training/fold_budget.FoldBudget; FIELD one of {', '.join(BUDGET_FIELDS)}): for a quick "
        "comparison or a toy run; the figures then measure that budget. Repeatable",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="retrain the shipped experts on all the photos as the folds' were, then --write-fusion",
    )
    parser.add_argument(
        "--weighting",
        choices=COMPARED_WEIGHTINGS,
        help="the decision fit's photo weighting, instead of comparing them all under CV and taking the best",
    )
    parser.add_argument(
        "--train-weighting",
        choices=TRAINING_WEIGHTINGS,
        help="each photo's weight in the experts' training losses and stopping scores (default: the shipped "
        "procedure's, training/fold_budget.FoldBudget, which cross-validation chose: docs/evaluation.md)",
    )
    parser.add_argument(
        "--expert-config",
        action="append",
        type=expert_config,
        default=[],
        metavar="EXPERT=JSON",
        help="train EXPERT's folds (and, with --ship, the shipped one) with these fields of its training "
        'configuration changed, e.g. \'sh={"network": {"width": 256}}\': a size or regularisation to '
        "compare under CV (docs/evaluation.md); only that expert is retrained. Repeatable",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="folds fitted and scored at once, each in its own process (default: 1; the fits are "
        "mostly single-threaded, so up to one per core). Each worker builds its folds' decision tables "
        "itself, and no later pass reuses them: it pays with --weighting (one pass over the folds)",
    )
    parser.add_argument(
        "--features",
        type=Path,
        metavar="DIR",
        help="cross-validate over a features folder (`geoloc features`: its photos, places and "
        "photographers) instead of Im2GPS3k train + val; with --ship or --write-fusion, --models names "
        "where that backbone's models go",
    )
    parser.add_argument(
        "--no-text",
        action="store_true",
        help="leave the text expert out (it needs the photos' pixels: always left out with --features). "
        "With it, it is fitted beside the fusion of the others, and the fused answer with and without it "
        "is reported on all photos, on those with text and on those without; the text read is cached",
    )
    parser.add_argument(
        "--leave-out",
        action="append",
        choices=EXPERTS,
        default=[],
        metavar="EXPERT",
        help="leave this expert out: it is neither trained nor answers, and the fusion is fitted without it, "
        "so that with --write-fusion the orchestrator does not ask it (one of: "
        f"{', '.join(EXPERTS)}; --no-text leaves out the experts that read photos). Repeatable",
    )
    parser.add_argument(
        "--ask",
        action="append",
        type=request_field,
        default=[],
        metavar="FIELD=N",
        help="ask the experts this instead of the orchestrator's default, e.g. flow_steps=8 (the fields are "
        "OrchestratorSettings': gallery_k, flow_samples, flow_steps, sh_samples, sh_steps, tokens_beam_width); "
        "only the expert asked is answered again. To ship it, the orchestrator's default must be changed to "
        "match (tests check the shipped fusion against it). Repeatable",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
    return parser


def expert_config(text: str) -> tuple[str, dict]:
    """'EXPERT=JSON object' as (expert, fields); checked against the configurations when the run starts."""
    expert, sep, fields = text.partition("=")
    try:
        parsed = json.loads(fields) if sep else None
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: the fields are not JSON ({error})") from None
    if not isinstance(parsed, dict) or not expert:
        raise argparse.ArgumentTypeError(f"{text!r}: expected EXPERT={{JSON object of fields}}")
    return expert, parsed


def whole_number_field(fields: tuple[str, ...]):
    """An argparse type for 'FIELD=N', FIELD one of `fields` and N a whole number of at least 1."""

    def parsed(text: str) -> tuple[str, int]:
        name, sep, value = text.partition("=")
        if name not in fields or not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=N, FIELD one of {', '.join(fields)}")
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a whole number") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
        return name, number

    return parsed


request_field = whole_number_field(REQUEST_FIELDS)  # what the experts are asked
budget_field = whole_number_field(BUDGET_FIELDS)  # how long each fold's experts train


def run(args: argparse.Namespace) -> int:
    """Checks the options that the parser cannot (before any photo is read), then runs the CV
    (training/cv_run.py)."""
    from geoloc.training.fold_budget import FoldBudget
    from geoloc.training.out_of_fold import fold_configs

    weighting = {"photo_weighting": args.train_weighting} if args.train_weighting else {}
    budget = FoldBudget(**weighting, **dict(args.budget))
    configs: dict[str, dict] = {}
    for expert, fields in args.expert_config:
        configs.setdefault(expert, {}).update(fields)
    try:
        fold_configs(budget, configs)
    except ValueError as error:
        print(f"geoloc cv: --expert-config: {error}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"geoloc cv: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.features and (args.ship or args.write_fusion) and args.models is None:
        print(
            "geoloc cv: --features with --ship or --write-fusion needs --models DIR: the checkout's models/ "
            "are the default backbone's, trained on Im2GPS3k",
            file=sys.stderr,
        )
        return 2
    from geoloc.training.cv_run import run_cv

    return run_cv(args, budget, configs, COMPARED_WEIGHTINGS, args.out or CV_FIGURES)
