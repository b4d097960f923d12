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
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from geoloc.artifacts.files import written_atomically
from geoloc.training.arguments import DATA_HELP

if TYPE_CHECKING:  # numpy loads in the handler only, so that `geoloc --help` stays quick
    import numpy as np

CV_FIGURES = Path("models/fusion/cv.json")
# The two ways of giving each photographer one vote. One vote per photo ("photo") lost to
# both by about 45 GeoScore under the same CV (docs/evaluation.md), and is left out to keep the run
# within its time.
COMPARED_WEIGHTINGS = ("inverse", "cap10")
TRAINING_WEIGHTINGS = ("photo", *COMPARED_WEIGHTINGS)  # evaluation/folds.WEIGHTINGS, named here: --help loads no numpy
# training/expert_outputs.EXPERTS and ExpertRequests' fields, named here for the same reason.
LEAVABLE = ("gallery", "flow", "sh", "tokens", "text")
REQUEST_FIELDS = ("gallery_k", "flow_samples", "flow_steps", "sh_samples", "sh_steps", "tokens_beam_width")
# FoldBudget's whole-number fields, which --budget may change.
BUDGET_FIELDS = (
    "gallery_epochs",
    "flow_steps",
    "sh_steps",
    "tokens_steps",
    "evaluations",
    "eval_samples",
    "eval_steps",
)


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
        f"procedure's (training/out_of_fold.FoldBudget; FIELD one of {', '.join(BUDGET_FIELDS)}): for a quick "
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
        "procedure's, training/out_of_fold.FoldBudget, which cross-validation chose: docs/evaluation.md)",
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
        choices=LEAVABLE,
        default=[],
        metavar="EXPERT",
        help="leave this expert out: it is neither trained nor answers, and the fusion is fitted without it, "
        "so that with --write-fusion the orchestrator does not ask it (one of: "
        f"{', '.join(LEAVABLE)}; text is --no-text). Repeatable",
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


def cv_photos(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """The photos cross-validated: features [n, d], places [n, 2], photographers, and what they are.
    Im2GPS3k train + val (features cached), or a features folder's photos with --features."""
    import numpy as np

    if args.features:
        from geoloc.training.feature_shards import load_feature_set

        loaded = load_feature_set(args.features)
        return loaded.features, loaded.places, list(loaded.authors), f"{args.features} ({loaded.backbone})"
    from geoloc.evaluation.dataset import im2gps3k_split
    from geoloc.training.features import split_features

    splits = [im2gps3k_split(name, args.data) for name in ("train", "val")]
    images = [i for s in splits for i in s.images]
    features = np.concatenate([split_features(s) for s in splits])
    truth = np.array([(i.lat, i.lon) for i in images])
    return features, truth, [i.author for i in images], "Im2GPS3k train + val"


def cv_photo_paths(args: argparse.Namespace) -> list[Path]:
    """The files of the photos cv_photos gives (Im2GPS3k train + val), in the same order."""
    from geoloc.evaluation.dataset import im2gps3k_split

    return [i.path for name in ("train", "val") for i in im2gps3k_split(name, args.data).images]


def text_comparison(answers: dict, groups: dict) -> dict:
    """The fused answer with and without the text expert (the fusion of the others, which the text
    expert is fitted beside: training/cross_validation.fit_answer), on all photos and on each group;
    the text expert alone on the photos it answered; and whether with is at least without on every
    figure (the accuracies and GeoScore at least as high, the median error at most as far)."""
    from geoloc.training.cross_validation import FUSED, fused_without

    without = fused_without("text")
    rows = {
        "text (answered)": answers.get("text (answered)"),
        "fused": answers["fused"],
        without: answers.get(without),
        "constant": answers["constant"],
    }
    for name in groups:
        for answer in ("text", FUSED, without, "constant"):
            rows[f"{answer} · {name}"] = answers.get(f"{answer} · {name}")
    rows = {k: v for k, v in rows.items() if v is not None}
    at_least = {
        scope: at_least_as_good(rows[f"{FUSED}{scope}"], rows[f"{without}{scope}"])
        for scope in ("", *(f" · {name}" for name in groups))
        if f"{FUSED}{scope}" in rows and f"{without}{scope}" in rows
    }
    return {
        "photos_with_text": int(groups["with text"].sum()),
        "share_with_text": float(groups["with text"].mean()),
        "answers": rows,
        "with_at_least_without": at_least,
        "table": markdown_table(rows),
    }


def at_least_as_good(answer: dict, other: dict) -> dict[str, bool]:
    """Per figure of a CV summary: is `answer`'s mean at least as good as `other`'s?"""
    return {
        figure: answer[figure]["mean"] <= other[figure]["mean"]
        if figure == "median_km"
        else answer[figure]["mean"] >= other[figure]["mean"]
        for figure in answer
        if figure == "geoscore" or figure == "median_km" or figure.startswith("acc_")
    }


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


def summary(values: list[float]) -> dict[str, float]:
    import numpy as np

    return {"mean": float(np.mean(values)), "spread": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarise_folds(results) -> dict:
    """Per answer, each figure's mean and spread (sample standard deviation) over the folds that
    scored it (a group's rows over the folds that hold photos of the group), and the photos counted."""
    answers = dict.fromkeys(a for r in results for a in r.metrics)
    table = {}
    for answer in answers:
        rows = [r.metrics[answer] for r in results if answer in r.metrics]
        table[answer] = {
            "photos": sum(m.n for m in rows),
            "folds": len(rows),
            **{f"acc_{t:g}km": summary([m.accuracy_at(t) for m in rows]) for t in rows[0].thresholds_km},
            "geoscore": summary([m.geoscore for m in rows]),
            "median_km": summary([m.median_km for m in rows]),
        }
    coverage = {}
    for subset in dict.fromkeys(s for r in results for s in r.coverage):
        held = [r.coverage[subset] for r in results if subset in r.coverage]
        coverage[subset] = {
            "within_r50": summary([h[0] for h in held]),
            "within_r90": summary([h[1] for h in held]),
            "photos": sum(h[2] for h in held),  # where every expert of the subset said something
        }
    return {"answers": table, "coverage": coverage}


GUARDED = ("geoscore", "acc_200km", "acc_750km", "acc_2500km")  # where the fused must match the constant


def standing(answers: dict) -> tuple[int, float]:
    """How a weighting ranks on CV: first by on how many GUARDED figures the fused answer's mean is
    at least the constant's, then by its mean GeoScore."""
    fused, constant = answers["fused"], answers["constant"]
    level = sum(fused[k]["mean"] >= constant[k]["mean"] for k in GUARDED)
    return level, fused["geoscore"]["mean"]


def markdown_table(answers: dict) -> str:
    lines = [
        "| answer | acc % ≤ 1 km | ≤ 25 km | ≤ 200 km | ≤ 750 km | ≤ 2500 km | GeoScore | median km |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in answers.items():
        acc = [figures[f"acc_{t}km"] for t in ("1", "25", "200", "750", "2500")]
        cells = [f"{100 * a['mean']:.1f} ± {100 * a['spread']:.1f}" for a in acc]
        cells += [f"{figures[k]['mean']:.0f} ± {figures[k]['spread']:.0f}" for k in ("geoscore", "median_km")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from geoloc.evaluation.folds import photographer_folds
    from geoloc.gallery.build import default_gallery_csv, read_gps_csv
    from geoloc.training.cross_validation import CONSTANT_PLACE, score_fold, table_cache, top_points
    from geoloc.training.expert_outputs import EXPERTS, ExpertRequests
    from geoloc.training.features import default_cache_dir
    from geoloc.training.out_of_fold import FoldBudget, fold_configs, out_of_fold_outputs

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
    started = time.monotonic()
    features, truth, authors, what = cv_photos(args)
    folds = photographer_folds(authors, args.folds)
    print(f"{len(authors)} photos by {len(set(authors))} photographers in {args.folds} folds: {np.bincount(folds)}")
    requests = ExpertRequests(**dict(args.ask))
    left_out = sorted({*args.leave_out, *(["text"] if args.no_text else [])})
    experts = [e for e in EXPERTS if e not in left_out]
    outputs = out_of_fold_outputs(
        features,
        truth,
        authors,
        folds,
        budget,
        requests,
        default_cache_dir(),
        seed=args.seed,
        configs=configs,
        experts=experts,
    )
    print(f"out-of-fold answers ready ({time.monotonic() - started:.0f} s)")
    groups = None
    if not ("text" in left_out or args.features):
        from geoloc.training.text_outputs import cv_text_answers

        outputs["text"] = cv_text_answers(cv_photo_paths(args), default_cache_dir())
        has_text = outputs["text"][:, :, 2].max(axis=1) > 0
        groups = {"with text": has_text, "without text": ~has_text}
        print(f"text answers ready: {has_text.sum()} of {len(has_text)} photos ({time.monotonic() - started:.0f} s)")
    gallery_coordinates, _ = read_gps_csv(default_gallery_csv())
    tables = table_cache(outputs, truth, gallery_coordinates)
    tops = top_points(outputs)

    def cross_validate(weighting: str, calibrate: bool) -> dict:
        def score(fold: int):
            return score_fold(
                fold, folds, outputs, truth, authors, gallery_coordinates, weighting, tables, tops, calibrate, groups
            )

        results = []
        for result in scored_folds(score, args.folds, args.jobs):
            results.append(result)
            print(
                f"  {weighting} fold {result.fold} ({result.n} photos): "
                f"fused GeoScore {result.metrics['fused'].geoscore:.0f} "
                f"(constant {result.metrics['constant'].geoscore:.0f}); chose {result.fitted} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,  # folds finish minutes apart: show each as it does, also into a file
            )
        results.sort(key=lambda r: r.fold)
        return {"summary": summarise_folds(results), "folds": [fold_dict(r) for r in results]}

    # The weightings are compared on the best guess alone; the radii are calibrated for the winner.
    by_weighting = {w: cross_validate(w, calibrate=False) for w in ([] if args.weighting else COMPARED_WEIGHTINGS)}
    for weighting, figures in by_weighting.items():
        print(f"photo weighting {weighting}:\n{markdown_table(figures['summary']['answers'])}")
    chosen = args.weighting or max(by_weighting, key=lambda w: standing(by_weighting[w]["summary"]["answers"]))
    print(f"calibrating the radii under the {chosen!r} weighting")
    calibrated = cross_validate(chosen, calibrate=True)
    print(markdown_table(calibrated["summary"]["answers"]))
    for subset, c in calibrated["summary"]["coverage"].items():
        print(f"  {subset}: r50 holds {c['within_r50']['mean']:.1%}, r90 holds {c['within_r90']['mean']:.1%}")
    text = None
    if groups is not None:
        text = text_comparison(calibrated["summary"]["answers"], groups)
        print(f"with and without the text expert ({text['photos_with_text']} photos with text):\n{text['table']}")
    figures = {
        "what": f"photographer-grouped {args.folds}-fold cross-validation over {what}",
        "data": what,
        "photos": len(authors),
        "photographers": len(set(authors)),
        "fold_sizes": np.bincount(folds).tolist(),
        "constant": list(CONSTANT_PLACE),
        "expert_requests": requests.__dict__,
        "fold_budget": budget.__dict__,
        "expert_configs": configs,  # changed from the shipped configurations (--expert-config)
        "left_out": left_out,  # neither trained nor fitted (--leave-out; --no-text is "text")
        "chosen_weighting": chosen,
        "weighting_chosen_by": "this CV (weightings_compared)" if by_weighting else "--weighting",
        "weightings_compared": {w: f["summary"]["answers"]["fused"] for w, f in by_weighting.items()},
        "chosen": calibrated,
        "text": text,  # with and without the text expert (None: it was left out)
        "seconds": round(time.monotonic() - started),
    }
    out = args.out or CV_FIGURES
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(out) as stream:  # shipped in models/fusion/: whole or not at all
        stream.write((json.dumps(figures, indent=1) + "\n").encode())
    print(f"figures written to {out}; the fit is weighted by {chosen!r} ({figures['seconds']} s in all)")
    checkpoints, fusion = written_models(args)
    if args.ship:
        from geoloc.gallery.location_encoder import LocationEncoder
        from geoloc.gallery.retrieval import loaded_gallery
        from geoloc.training.shipped_experts import ship_experts

        command = shlex.join(["geoloc", *sys.argv[1:]])
        ship_experts(
            features,
            truth,
            authors,
            budget,
            figures,
            command,
            loaded_gallery(),
            LocationEncoder.pretrained(),
            args.seed,
            paths=checkpoints,
            configs=configs,
        )
    if args.write_fusion or args.ship:  # after the experts: the fusion records which ones it was fitted for
        fitted_on = (outputs, truth, authors, gallery_coordinates, tables)
        write_fusion(*fitted_on, chosen, figures, requests, fusion, checkpoints)
    return 0


def written_models(args: argparse.Namespace) -> tuple[dict[str, Path], Path]:
    """Where --ship writes each expert and --write-fusion the fusion: --models, or the shipped places."""
    import json

    from geoloc.common.paths import MODELS_DIR
    from geoloc.embedding.model_config import DEFAULT_MODELS
    from geoloc.training.expert_outputs import checkpoints_in, fusion_in, shipped_checkpoints
    from geoloc.training.feature_shards import MANIFEST

    if args.models is None:
        return shipped_checkpoints(), fusion_in(MODELS_DIR)
    model = DEFAULT_MODELS[0]  # the Im2GPS3k features' backbone
    if args.features:  # the gallery head is named for the Triton model of the features
        model = json.loads((Path(args.features) / MANIFEST).read_text())["model"]
    return checkpoints_in(args.models, model), fusion_in(args.models)


def write_fusion(
    outputs, truth, authors, gallery_coordinates, tables, weighting, figures, requests, path: Path, checkpoints: dict
) -> None:
    """The fusion and decision fitted on every photo's out-of-fold answers, written to `path` with the CV
    figures; it records the fingerprint of the expert `checkpoints` it was fitted for, where they exist."""
    import numpy as np

    from geoloc.orchestrator.parameters import save_fusion
    from geoloc.training.cross_validation import fit_answer
    from geoloc.training.expert_outputs import models_fingerprint

    params, prior, _, chosen = fit_answer(
        outputs, truth, authors, np.arange(len(truth)), gallery_coordinates, weighting, tables
    )
    summary_of = figures["chosen"]["summary"]
    manifest = {
        "what": "the orchestrator's fusion and decision: expert weights, kernel bandwidths, prior, uniform floor",
        "data": {
            "fitted_on": f"out-of-fold expert answers to all {figures['photos']} {figures['data']} photos",
            "prior": f"{len(prior.lat_deg)} points sampled (seed 0) from the GPS gallery",
        },
        "experts": {
            "requests": requests.__dict__,
            "shipped_models_fingerprint": (
                models_fingerprint(checkpoints) if all(p.is_file() for p in checkpoints.values()) else None
            ),
        },
        "command": shlex.join(["geoloc", *sys.argv[1:]]),
        "photo_weighting": weighting,
        "fitted": chosen,
        "cv": {
            "what": figures["what"],
            "fold_sizes": figures["fold_sizes"],
            "answers": summary_of["answers"],
            "coverage": summary_of["coverage"],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    version = save_fusion(path, params, prior, manifest)
    print(f"fusion written to {path} (version {version})")


_FORKED_SCORE = None  # what a forked worker of scored_folds runs: closures do not pickle, and fork copies it


def _score_in_worker(fold: int):
    return _FORKED_SCORE(fold)


def scored_folds(score, folds: int, jobs: int):
    """score(fold) for every fold, as each finishes; with jobs > 1 in that many forked processes,
    which inherit the out-of-fold answers instead of receiving them pickled. What a worker builds
    (a fold's decision tables) stays in that worker: the caller's cache does not grow."""
    if jobs == 1:
        yield from (score(fold) for fold in range(folds))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    global _FORKED_SCORE
    _FORKED_SCORE = score
    with ProcessPoolExecutor(min(jobs, folds), mp_context=multiprocessing.get_context("fork")) as pool:
        yield from (done.result() for done in as_completed([pool.submit(_score_in_worker, f) for f in range(folds)]))


def fold_dict(result) -> dict:
    return {
        "fold": result.fold,
        "n": result.n,
        "metrics": {k: m.to_dict() for k, m in result.metrics.items()},
        "coverage": {k: {"within_r50": v[0], "within_r90": v[1], "photos": v[2]} for k, v in result.coverage.items()},
        "fitted": result.fitted,
    }
