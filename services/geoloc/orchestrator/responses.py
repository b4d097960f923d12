"""The orchestrator's answers as the API's messages: the fused answer with every expert's status
and share of it, and LocateText's gallery matches."""

from __future__ import annotations

from collections.abc import Sequence

from geoloc.experts import EXPERT_ENUMS
from geoloc.orchestrator.experts import ExpertResult
from geoloc.orchestrator.fusion import FusedAnswer, Hypothesis, mixture_points
from geoloc.orchestrator.inputs import LocateChoices
from geoloc.places import PlaceName, place_message
from geoloc.v1 import common_pb2, orchestrator_pb2

UNWEIGHTED_REASON = (
    "the fitted fusion gives it weight 0, so it cannot change the answer; name it in options.experts to ask it"
)


def with_skipped(
    results: Sequence[ExpertResult], deployed: Sequence[str], asked: Sequence[str] | None
) -> dict[str, ExpertResult]:
    """Every expert's result: those asked, then each of the others SKIPPED, with why."""
    by_expert = {r.expert: r for r in results}
    for expert in EXPERT_ENUMS:
        if expert not in by_expert:
            if expert not in deployed:
                reason = "not deployed"
            elif asked is not None:
                reason = "not requested in the options"
            else:
                reason = UNWEIGHTED_REASON
            by_expert[expert] = ExpertResult(expert, orchestrator_pb2.EXPERT_STATUS_SKIPPED, reason)
    return by_expert


def hypothesis_message(h: Hypothesis, place: orchestrator_pb2.Place) -> orchestrator_pb2.Hypothesis:
    return orchestrator_pb2.Hypothesis(
        lat_deg=h.lat_deg,
        lon_deg=h.lon_deg,
        probability=h.probability,
        radius_50_km=h.radius_50_km,
        radius_90_km=h.radius_90_km,
        place=place,
    )


def expert_output(result: ExpertResult, fusion_weight: float, include_outputs: bool) -> orchestrator_pb2.ExpertOutput:
    """One expert's status, latency, model and share of the answer; its points, cells and text lines
    with include_expert_outputs."""
    output = orchestrator_pb2.ExpertOutput(
        expert=EXPERT_ENUMS[result.expert],
        status=result.status,
        status_message=result.message,
        fusion_weight=fusion_weight,
        latency_ms=result.latency_ms,
    )
    if result.model is not None:
        output.model.CopyFrom(result.model)
    if include_outputs:
        output.points.extend(result.wire_points)
        output.cells.extend(result.cells)
        output.text.extend(result.text)
    return output


def locate_response(
    fused: FusedAnswer,
    places: Sequence[PlaceName],
    by_expert: dict[str, ExpertResult],
    options: LocateChoices,
    backbone: common_pb2.ModelInfo,
    fusion_version: str,
) -> orchestrator_pb2.LocateResponse:
    """The fused answer, its hypotheses named by `places`, and every expert's output."""
    hypotheses = [hypothesis_message(h, place_message(p)) for h, p in zip(fused.hypotheses, places, strict=True)]
    shares = fused.mixture.expert_weights
    outputs = [
        expert_output(result, shares.get(expert, 0.0), options.include_expert_outputs)
        for expert, result in by_expert.items()
    ]
    response = orchestrator_pb2.LocateResponse(
        best_guess=hypotheses[0],
        hypotheses=hypotheses,
        radius_50_km=fused.radius_50_km,
        radius_90_km=fused.radius_90_km,
        localizability=fused.localizability,
        answer_source=orchestrator_pb2.ANSWER_SOURCE_FUSION,
        expert_outputs=outputs,
        backbone=backbone,
        fusion=common_pb2.ModelInfo(name="geoloc-fusion", version=fusion_version),
    )
    if options.include_distribution:
        lat, lon, weight, radius = mixture_points(fused.mixture)
        response.distribution.extend(
            common_pb2.WeightedPoint(lat_deg=float(a), lon_deg=float(o), weight=float(w), radius_km=float(r))
            for a, o, w, r in zip(lat, lon, weight, radius, strict=True)
        )
    return response


def text_matches(points: Sequence[common_pb2.WeightedPoint], places: Sequence[PlaceName]) -> list:
    """LocateText's matches: the gallery's points, each named."""
    return [
        orchestrator_pb2.TextMatch(
            lat_deg=p.lat_deg, lon_deg=p.lon_deg, probability=p.weight, place=place_message(place)
        )
        for p, place in zip(points, places, strict=True)
    ]
