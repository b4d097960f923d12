"""The tokens service on a real gRPC server with the shipped token decoder."""

from __future__ import annotations

import numpy as np
import pytest

from geoloc.geo.s2cells import cell_id_to_latlon, cell_id_to_s2_token
from geoloc.geo.sphere import haversine_km
from geoloc.tokens.cells import cell_radius_km
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.geotokens import tokens_to_cell_id
from geoloc.tokens.model import load_token_model
from geoloc.tokens.server import TokensServicer, tokens_spec
from geoloc.v1 import common_pb2, embedding_pb2, tokens_pb2, tokens_pb2_grpc
from tests.calls import assert_each_refused, call_each
from tests.servers import bad_embeddings, made_up_embedding

pytestmark = pytest.mark.integration  # every test serves the decoder on loopback

GREEDY, BEAM, SAMPLE = (
    tokens_pb2.DECODE_STRATEGY_GREEDY,
    tokens_pb2.DECODE_STRATEGY_BEAM,
    tokens_pb2.DECODE_STRATEGY_SAMPLE,
)


def call_all(requests, **settings):
    """Starts the service on port 0, sends each request in turn, stops it; answers or errors."""
    settings = TokensSettings(port=0, metrics_port=None, log_requests=False, **settings)
    return call_each(
        settings, tokens_spec(TokensServicer(settings)), tokens_pb2_grpc.TokensServiceStub, "Decode", requests
    )


def request(values=None, backbone="efficientnet-lite2", **fields) -> tokens_pb2.DecodeRequest:
    return tokens_pb2.DecodeRequest(embedding=made_up_embedding(values, backbone), **fields)


def point(lat: float, lon: float, weight: float) -> common_pb2.WeightedPoint:
    return common_pb2.WeightedPoint(lat_deg=lat, lon_deg=lon, weight=weight)


def test_a_beam_answer_holds_every_beams_cell_sorted_with_its_tokens_centre_and_size():
    (answer,) = call_all([request(strategy=BEAM, beam_width=7)])
    cells = list(answer.cells)
    assert answer.strategy == BEAM and len(cells) == 7
    probabilities = np.array([c.probability for c in cells])
    assert probabilities.sum() == pytest.approx(1.0) and np.all(np.diff(probabilities) <= 0)
    assert np.all(np.diff([c.log_probability for c in cells]) <= 0) and all(c.log_probability < 0 for c in cells)
    for cell, p in zip(cells, answer.points, strict=True):
        assert len(cell.tokens) == 11 and cell.level == 20
        assert cell.cell_id == tokens_to_cell_id(tuple(cell.tokens)) and cell.s2_token == cell_id_to_s2_token(
            cell.cell_id
        )
        lat, lon = cell_id_to_latlon(np.uint64(cell.cell_id))
        assert (cell.lat_deg, cell.lon_deg) == pytest.approx((float(lat), float(lon)))
        assert (p.lat_deg, p.lon_deg, p.weight) == (cell.lat_deg, cell.lon_deg, cell.probability)
        assert 0 < p.radius_km < 0.02  # a level-20 cell is about 10 m across
    assert len({c.cell_id for c in cells}) == 7
    assert answer.model.name == "geotoken/efficientnet-lite2" and len(answer.model.version) == 12


def test_the_default_strategy_is_a_beam_of_five_and_greedy_is_its_first_beam():
    default, greedy = call_all([request(), request(strategy=GREEDY)])
    assert default.strategy == BEAM and len(default.cells) == 5
    assert len(greedy.cells) == 1 and greedy.cells[0].probability == 1.0
    assert greedy.cells[0].log_probability <= default.cells[0].log_probability + 1e-6


@pytest.mark.parametrize("level", [1, 7, 12])
def test_a_coarser_level_gives_coarser_cells_whose_size_is_their_radius(level):
    (answer,) = call_all([request(strategy=BEAM, max_level=level)])
    for cell, p in zip(answer.cells, answer.points, strict=True):
        assert cell.level == level and len(cell.tokens) == 1 + (level + 1) // 2
        assert cell.cell_id == tokens_to_cell_id(tuple(cell.tokens), level)
        assert p.radius_km == pytest.approx(cell_radius_km(cell.cell_id))
    assert len({c.cell_id for c in answer.cells}) == len(answer.cells)


def test_sampling_is_seeded_distinct_and_ranked_by_probability():
    first, again, other = call_all(
        [
            request(strategy=SAMPLE, n_samples=40, seed=3, temperature=1.5),
            request(strategy=SAMPLE, n_samples=40, seed=3, temperature=1.5),
            request(strategy=SAMPLE, n_samples=40, seed=4, temperature=1.5),
        ]
    )
    assert first.strategy == SAMPLE and 1 < len(first.cells) <= 40
    assert [c.cell_id for c in first.cells] == [c.cell_id for c in again.cells]
    assert [c.cell_id for c in first.cells] != [c.cell_id for c in other.cells]
    assert len({c.cell_id for c in first.cells}) == len(first.cells)
    assert np.all(np.diff([c.log_probability for c in first.cells]) <= 0)
    assert sum(c.probability for c in first.cells) == pytest.approx(1.0)


def test_neighbours_are_used_exactly_when_the_shipped_decoder_attends_to_them():
    """Ten neighbours all in Tokyo, or all in Paris. A decoder with neighbour slots is pulled toward
    them (its first beam lies nearer Tokyo with the Tokyo set); one trained without (the shipped
    choice when neighbours did not help on val) gives the same answer with or without them."""
    slots = load_token_model(TokensSettings().checkpoint).neighbour_slots
    tokyo = [point(35.68 + 0.01 * i, 139.76, 0.05) for i in range(10)]
    paris = [point(48.85 + 0.01 * i, 2.35, 0.05) for i in range(10)]
    plain, near_tokyo, near_paris = call_all([request(), request(neighbors=tokyo), request(neighbors=paris)])
    assert all(len(a.cells) == 5 for a in (plain, near_tokyo, near_paris))
    if slots == 0:
        assert (
            [c.cell_id for c in plain.cells]
            == [c.cell_id for c in near_tokyo.cells]
            == [c.cell_id for c in near_paris.cells]
        )
    else:
        to_tokyo = [
            haversine_km(a.cells[0].lat_deg, a.cells[0].lon_deg, 35.68, 139.76) for a in (near_tokyo, near_paris)
        ]
        assert to_tokyo[0] < to_tokyo[1]


BAD = [
    (request(strategy=9), "strategy"),
    (request(beam_width=-1), "beam_width"),
    (request(beam_width=65), "beam_width"),
    (request(strategy=SAMPLE, n_samples=-2), "n_samples"),
    (request(strategy=SAMPLE, n_samples=1025), "n_samples"),
    (request(strategy=SAMPLE, temperature=0.0), "temperature"),
    (request(strategy=SAMPLE, temperature=float("nan")), "temperature"),
    (request(strategy=SAMPLE, temperature=11.0), "temperature"),
    (request(max_level=21), "max_level"),
    (request(max_level=-1), "max_level"),
    (request(neighbors=[point(91.0, 0.0, 0.1)]), "neighbors[0].lat_deg"),
    (request(neighbors=[point(0.0, 0.0, 0.1), point(0.0, 200.0, 0.1)]), "neighbors[1].lon_deg"),
    (request(neighbors=[point(0.0, 0.0, float("inf"))]), "neighbors[0].weight"),
    (request(neighbors=[point(0.0, 0.0, -0.1)]), "neighbors[0].weight"),
    (request(neighbors=[point(0.0, 0.0, 0.001)] * 1001), "neighbors"),
    *bad_embeddings(request),
]


def test_bad_requests_get_invalid_argument_naming_the_field_and_the_server_keeps_serving():
    *refused, good = call_all([r for r, _ in BAD] + [request()])
    assert_each_refused(BAD, refused)
    assert len(good.cells) == 5


def test_a_real_photos_embedding_decodes(embedding_stub, photos):
    """The embedding service's answer for a real photo, on Triton, is a feature the decoder takes."""
    embedded = embedding_stub.Embed(embedding_pb2.EmbedRequest(image=photos[0].read_bytes()), timeout=60).embedding
    (answer,) = call_all([tokens_pb2.DecodeRequest(embedding=embedded)])
    assert len(answer.cells) == 5 and answer.cells[0].probability > 0
