"""Fuzzing each RPC's request validation with hypothesis, against real servers on loopback.

Requests are generated to cover valid and invalid values alike: any float (NaN, infinities,
subnormals, values past float32's range), any int32 and unknown enum values, embeddings and
neighbour lists of random lengths, random, mutated and truncated photo bytes. For every request:

- the code is OK or INVALID_ARGUMENT: never INTERNAL, UNKNOWN or a dead server;
- the request's own validity, worked out here from the documented bounds, decides which: a valid
  request is answered, an invalid one is refused naming one of its invalid fields;
- an INVALID_ARGUMENT message starts with the path of a field the request has;
- an OK answer is well formed: finite coordinates in range, weights that sum as the contract says.

The gallery, sampler and tokens services run in this process on port 0 with small limits, so that
the largest valid request is still cheap; Embed and Locate go to the session's Triton-backed
processes. The generation is derandomized, so every run sends the same requests.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoloc.common.embeddings import MAX_FEATURE_MAGNITUDE
from geoloc.common.settings import ServerSettings
from geoloc.gallery.config import GallerySettings
from geoloc.gallery.server import MAX_K, GalleryServicer, gallery_spec
from geoloc.orchestrator.config import SHIPPED_FUSION
from geoloc.orchestrator.inputs import MAX_TOP_K
from geoloc.orchestrator.parameters import load_fusion
from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.server import SamplerServicer, sampler_spec
from geoloc.tokens.config import TokensSettings
from geoloc.tokens.search import MAX_LEVEL
from geoloc.tokens.server import MIN_TEMPERATURE, TokensServicer, tokens_spec
from geoloc.v1 import (
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    gallery_pb2,
    gallery_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    sampler_pb2,
    sampler_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from tests.calls import assert_refused, default_statuses, served_in_background
from tests.servers import pooled_feature, small_gallery

pytestmark = [pytest.mark.timeout(600), pytest.mark.integration]

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DIM, BACKBONE = 1280, "efficientnet-lite2"
GALLERY_POINTS = 2000
CALL_TIMEOUT_S = 60

# Small limits: the largest valid request stays cheap on two shared cores.
SAMPLER = SamplerSettings(
    port=0,
    metrics_port=None,
    log_requests=False,
    default_samples=16,
    max_samples=64,
    default_steps=4,
    max_steps=8,
    max_sample_steps=256,
)
TOKENS = TokensSettings(
    port=0,
    metrics_port=None,
    log_requests=False,
    default_beam_width=3,
    max_beam_width=8,
    default_samples=8,
    max_samples=16,
    max_neighbors=16,
)


def fuzz(max_examples: int):
    """Deterministic hypothesis settings: the same requests on every run, no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=False,
    )


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def experts_channel(tmp_path_factory) -> Iterator[grpc.Channel]:
    """The gallery (over 2000 real MP-16 points), sampler and tokens services, in this process."""
    index = small_gallery(tmp_path_factory.mktemp("gallery"), GALLERY_POINTS)
    gallery = GallerySettings(port=0, metrics_port=None, gallery_dir=index, build_if_missing=False)
    specs = [
        gallery_spec(GalleryServicer(gallery)),
        sampler_spec(SamplerServicer(SAMPLER)),
        tokens_spec(TokensServicer(TOKENS)),
    ]
    with (
        served_in_background(ServerSettings(port=0, metrics_port=None, log_requests=False), specs) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield channel


def answer_or_error(call, request):
    try:
        return call(request, timeout=CALL_TIMEOUT_S), OK
    except grpc.RpcError as error:
        return error, error.code()


def field_exists(message, path: str) -> bool:
    """Whether `path` (say 'neighbors[3].lat_deg' or 'embedding.values') is a field that `message` has."""
    node = message
    for part in path.split("."):
        name, _, index = part.partition("[")
        if not hasattr(node, "DESCRIPTOR") or name not in node.DESCRIPTOR.fields_by_name:
            return False
        node = getattr(node, name)
        if index:
            i = int(index.rstrip("]"))
            if not 0 <= i < len(node):
                return False
            node = node[i]
    return True


def check_refusal(error: grpc.RpcError, request, problems: set[str]) -> None:
    """INVALID_ARGUMENT naming, first thing in its message, a field of the request that is wrong."""
    assert isinstance(error, grpc.RpcError), f"answered, though {sorted(problems)} are wrong"
    assert error.code() == INVALID, (error.code(), error.details())
    field = error.details().split(": ", 1)[0]
    assert field_exists(request, field), error.details()
    assert field in problems, (error.details(), problems)
    assert_refused(error, field)


def fuzz_rpc(call, requests: st.SearchStrategy, problems_of, check_answer, max_examples: int) -> Counter:
    """Sends each generated request: a valid one (no problems_of it) must be answered with a well-formed
    answer, an invalid one refused naming one of its problems. Returns the count of each code."""
    codes: Counter = Counter()

    @fuzz(max_examples)
    @given(requests)
    def run(request):
        problems = problems_of(request)
        answer, code = answer_or_error(call, request)
        codes[code.name] += 1
        if problems:
            check_refusal(answer, request, problems)
        else:
            assert code == OK, (code, answer.details())
            check_answer(request, answer)

    run()
    return codes


def assert_both_sides_reached(codes: Counter, least: int) -> None:
    """A run that never reached one side, answers or refusals, tested less than it claims."""
    assert codes["OK"] >= least and codes["INVALID_ARGUMENT"] >= least, dict(codes)


def in_range(lat: float, lon: float) -> bool:
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


# ---------------------------------------------------------------- strategies

# Values that break numeric code: float32's limits and subnormals, and powers of ten far out, which
# random floats reach too rarely for a few hundred examples.
EXTREME_FLOATS = st.sampled_from(
    [-0.0, 5e-324, 1e-45, 1.2e-38, 1e-30, 1e10, 1e20, 1e30, 3.4e38, -3.4e38, 1e39, 1.8e308]
)
ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(width=32), EXTREME_FLOATS)


def int32s(low: int, high: int) -> st.SearchStrategy[int]:
    """Any int32, drawing around the valid [low, high] as often as from the whole range."""
    return st.one_of(st.integers(low - 3, high + 3), st.integers(INT32_MIN, INT32_MAX))


def floats_around(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(low, high), ANY_FLOAT)


SEEDS = st.one_of(st.none(), st.integers(0, 2**64 - 1))


Fields = dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]  # name -> (valid values, any values)


@st.composite
def mixed_fields(draw, fields: Fields, only: str | None = None) -> dict:
    """A request's field values: all valid, all valid but one, or anything at all, each a third of
    the time, so that answers and refusals are both exercised and a lone bad field must be the one
    named. With `only`, every field is valid but that one, which takes any value."""
    mode = "one bad" if only else draw(st.sampled_from(["valid", "one bad", "anything"]))
    bad = only or (draw(st.sampled_from(sorted(fields))) if mode == "one bad" else None)
    return {
        name: draw(anything if mode == "anything" or name == bad else valid)
        for name, (valid, anything) in fields.items()
    }


def message_of(message_class, fields: dict, optional: tuple[str, ...]):
    """The request with `fields`; of the proto3 `optional` ones, only those not None are set, so that
    the others stay unset (not zero)."""
    message = message_class(**{k: v for k, v in fields.items() if k not in optional})
    for name in optional:
        if fields[name] is not None:
            setattr(message, name, fields[name])
    return message


@st.composite
def embeddings(draw) -> common_pb2.Embedding:
    """A made-up feature with any set of these defects, or none: another length, every value scaled
    by any float, a few values replaced by any float (NaN, infinite, huge), another backbone's name."""
    defects = draw(st.sets(st.sampled_from(["length", "scale", "patch", "backbone"])))
    values = np.asarray(pooled_feature(draw(st.integers(0, 2**16))), dtype=np.float64)
    if "length" in defects:
        values = np.resize(values, draw(st.integers(0, 2 * DIM)))
    if "scale" in defects:
        with np.errstate(all="ignore"):  # a scale of inf or NaN is one of the cases, not a mistake
            values = values * draw(ANY_FLOAT)
    if "patch" in defects and len(values):
        for index, value in draw(st.lists(st.tuples(st.integers(0, 2 * DIM), ANY_FLOAT), min_size=1, max_size=3)):
            values[index % len(values)] = value
    backbone = draw(st.text(max_size=12) if "backbone" in defects else st.sampled_from([BACKBONE, ""]))
    return common_pb2.Embedding(values=values.tolist(), backbone=common_pb2.ModelInfo(name=backbone, version="1"))


VALID_EMBEDDINGS = st.builds(
    lambda seed, scale, backbone: common_pb2.Embedding(
        values=(np.asarray(pooled_feature(seed)) * scale).tolist(),
        backbone=common_pb2.ModelInfo(name=backbone, version="1"),
    ),
    st.integers(0, 2**16),
    st.one_of(st.just(1.0), st.floats(0, 100)),
    st.sampled_from([BACKBONE, ""]),
)
EMBEDDINGS = (VALID_EMBEDDINGS, embeddings())


def embedding_problems(embedding: common_pb2.Embedding) -> set[str]:
    """The fields of a well-formed request's embedding that are wrong, from the documented rules."""
    values = np.asarray(embedding.values, dtype=np.float64)  # already float32 on the wire
    problems = set()
    if len(values) != DIM or not np.isfinite(values).all() or np.abs(values).max(initial=0) > MAX_FEATURE_MAGNITUDE:
        problems.add("embedding.values")
    if embedding.backbone.name not in ("", BACKBONE):
        problems.add("embedding.backbone.name")
    return problems


# Neighbour lists up to a few past the tokens service's limit, of points in and out of range.
NEIGHBOURS = st.lists(
    st.builds(
        common_pb2.WeightedPoint,
        lat_deg=floats_around(-90, 90),
        lon_deg=floats_around(-180, 180),
        weight=floats_around(0, 1),
    ),
    max_size=TOKENS.max_neighbors + 4,
)


# ---------------------------------------------------------------- Search


SEARCH_FIELDS = {"embedding": EMBEDDINGS, "k": (st.integers(1, MAX_K), int32s(1, MAX_K))}


def search_requests(only: str | None = None) -> st.SearchStrategy[gallery_pb2.SearchRequest]:
    return mixed_fields(SEARCH_FIELDS, only).map(lambda fields: gallery_pb2.SearchRequest(**fields))


def search_problems(request: gallery_pb2.SearchRequest) -> set[str]:
    return embedding_problems(request.embedding) | ({"k"} if not 1 <= request.k <= MAX_K else set())


def check_search_answer(request: gallery_pb2.SearchRequest, answer: gallery_pb2.SearchResponse) -> None:
    weights = np.array([p.weight for p in answer.points])
    assert len(answer.points) == min(request.k, GALLERY_POINTS) and answer.gallery_size == GALLERY_POINTS
    assert all(in_range(p.lat_deg, p.lon_deg) for p in answer.points)
    assert np.isfinite(weights).all() and (weights >= 0).all() and np.all(np.diff(weights) <= 1e-12)
    assert weights.sum() <= 1 + 1e-6  # softmax mass over the whole gallery: the top k hold at most all of it


def test_search_validation(experts_channel):
    stub = gallery_pb2_grpc.GalleryServiceStub(experts_channel)
    mixed = fuzz_rpc(stub.Search, search_requests(), search_problems, check_search_answer, 150)
    # The embedding is what the head computes on, so it gets a run of its own with k valid.
    embeddings_only = fuzz_rpc(stub.Search, search_requests("embedding"), search_problems, check_search_answer, 100)
    assert_both_sides_reached(mixed, 10)
    assert_both_sides_reached(embeddings_only, 10)
    good = gallery_pb2.SearchRequest(embedding=common_pb2.Embedding(values=pooled_feature(1)), k=5)
    assert len(stub.Search(good, timeout=CALL_TIMEOUT_S).points) == 5


# ---------------------------------------------------------------- Sample


METHODS = {0: "flow", sampler_pb2.SAMPLING_METHOD_FLOW: "flow", sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION: "sh"}


SAMPLE_FIELDS = {
    "embedding": EMBEDDINGS,
    # Valid on their own and together: 32 x 8 is SAMPLER.max_sample_steps.
    "n_samples": (st.one_of(st.just(0), st.integers(2, 32)), int32s(2, SAMPLER.max_samples)),
    "steps": (st.integers(0, SAMPLER.max_steps), int32s(1, SAMPLER.max_steps)),
    "method": (st.sampled_from(sorted(METHODS)), int32s(0, 2)),
    "guidance": (
        st.one_of(st.none(), st.floats(0, SAMPLER.max_guidance)),
        st.one_of(st.none(), floats_around(0, SAMPLER.max_guidance)),
    ),
    "seed": (SEEDS, SEEDS),
}


def sample_request(fields: dict) -> sampler_pb2.SampleRequest:
    return message_of(sampler_pb2.SampleRequest, fields, optional=("guidance", "seed"))


def sample_requests(only: str | None = None) -> st.SearchStrategy[sampler_pb2.SampleRequest]:
    return mixed_fields(SAMPLE_FIELDS, only).map(sample_request)


def sample_problems(request: sampler_pb2.SampleRequest) -> set[str]:
    s = SAMPLER
    problems = embedding_problems(request.embedding)
    if request.method not in METHODS:
        problems.add("method")
    n_samples, steps = request.n_samples or s.default_samples, request.steps or s.default_steps
    if not 2 <= n_samples <= s.max_samples:
        problems.add("n_samples")
    if not 1 <= steps <= s.max_steps:
        problems.add("steps")
    if "n_samples" not in problems and "steps" not in problems and n_samples * steps > s.max_sample_steps:
        problems.add("n_samples")
    if request.HasField("guidance") and not (
        math.isfinite(request.guidance) and 0 <= request.guidance <= s.max_guidance
    ):
        problems.add("guidance")
    return problems


def check_sample_answer(request: sampler_pb2.SampleRequest, answer: sampler_pb2.SampleResponse) -> None:
    n_samples = request.n_samples or SAMPLER.default_samples
    assert len(answer.samples) == n_samples and all(in_range(p.lat_deg, p.lon_deg) for p in answer.samples)
    assert all(p.weight == pytest.approx(1 / n_samples) for p in answer.samples)
    modes = np.array([m.weight for m in answer.modes])
    assert len(modes) >= 1 and (modes > 0).all() and modes.sum() == pytest.approx(1.0)  # shares of the samples
    assert all(in_range(m.lat_deg, m.lon_deg) and math.isfinite(m.radius_km) and m.radius_km > 0 for m in answer.modes)
    assert math.isfinite(answer.mean_log_density)
    assert METHODS[answer.method] == METHODS[request.method]
    if request.HasField("seed"):
        assert answer.seed == request.seed


def test_sample_validation(experts_channel):
    stub = sampler_pb2_grpc.SamplerServiceStub(experts_channel)
    mixed = fuzz_rpc(stub.Sample, sample_requests(), sample_problems, check_sample_answer, 150)
    embeddings_only = fuzz_rpc(stub.Sample, sample_requests("embedding"), sample_problems, check_sample_answer, 100)
    assert_both_sides_reached(mixed, 10)
    assert_both_sides_reached(embeddings_only, 10)
    good = sampler_pb2.SampleRequest(embedding=common_pb2.Embedding(values=pooled_feature(1)), method=2, seed=0)
    assert len(stub.Sample(good, timeout=CALL_TIMEOUT_S).samples) == SAMPLER.default_samples


# ---------------------------------------------------------------- Decode


STRATEGIES = {
    0: "beam",
    tokens_pb2.DECODE_STRATEGY_GREEDY: "greedy",
    tokens_pb2.DECODE_STRATEGY_BEAM: "beam",
    tokens_pb2.DECODE_STRATEGY_SAMPLE: "sample",
}


VALID_NEIGHBOURS = st.lists(
    st.builds(
        common_pb2.WeightedPoint, lat_deg=st.floats(-90, 90), lon_deg=st.floats(-180, 180), weight=st.floats(0, 1e6)
    ),
    max_size=TOKENS.max_neighbors,
)
DECODE_FIELDS = {
    "embedding": EMBEDDINGS,
    "strategy": (st.sampled_from(sorted(STRATEGIES)), int32s(0, 3)),
    "beam_width": (st.integers(0, TOKENS.max_beam_width), int32s(1, TOKENS.max_beam_width)),
    "n_samples": (st.integers(0, TOKENS.max_samples), int32s(1, TOKENS.max_samples)),
    "max_level": (st.integers(0, MAX_LEVEL), int32s(1, MAX_LEVEL)),
    "neighbors": (VALID_NEIGHBOURS, NEIGHBOURS),
    "temperature": (
        st.one_of(st.none(), st.floats(MIN_TEMPERATURE, TOKENS.max_temperature)),
        st.one_of(st.none(), floats_around(0, TOKENS.max_temperature)),
    ),
    "seed": (SEEDS, SEEDS),
}


def decode_request(fields: dict) -> tokens_pb2.DecodeRequest:
    return message_of(tokens_pb2.DecodeRequest, fields, optional=("temperature", "seed"))


def decode_requests(
    only: str | None = None, fields: Fields = DECODE_FIELDS
) -> st.SearchStrategy[tokens_pb2.DecodeRequest]:
    return mixed_fields(fields, only).map(decode_request)


def decode_problems(request: tokens_pb2.DecodeRequest) -> set[str]:
    t = TOKENS
    problems = embedding_problems(request.embedding)
    if request.strategy not in STRATEGIES:
        problems.add("strategy")
    if not 1 <= (request.beam_width or t.default_beam_width) <= t.max_beam_width:
        problems.add("beam_width")
    if not 1 <= (request.n_samples or t.default_samples) <= t.max_samples:
        problems.add("n_samples")
    temperature = request.temperature
    if request.HasField("temperature") and not (
        math.isfinite(temperature) and MIN_TEMPERATURE <= temperature <= t.max_temperature
    ):
        problems.add("temperature")
    if not 1 <= (request.max_level or MAX_LEVEL) <= MAX_LEVEL:
        problems.add("max_level")
    if len(request.neighbors) > t.max_neighbors:
        problems.add("neighbors")
    for i, p in enumerate(request.neighbors):
        if not (math.isfinite(p.lat_deg) and -90 <= p.lat_deg <= 90):
            problems.add(f"neighbors[{i}].lat_deg")
        if not (math.isfinite(p.lon_deg) and -180 <= p.lon_deg <= 180):
            problems.add(f"neighbors[{i}].lon_deg")
        if not (math.isfinite(p.weight) and p.weight >= 0):
            problems.add(f"neighbors[{i}].weight")
    return problems


def check_decode_answer(request: tokens_pb2.DecodeRequest, answer: tokens_pb2.DecodeResponse) -> None:
    t = TOKENS
    strategy, level = STRATEGIES[request.strategy], request.max_level or MAX_LEVEL
    most = {
        "greedy": 1,
        "beam": request.beam_width or t.default_beam_width,
        "sample": request.n_samples or t.default_samples,
    }
    assert STRATEGIES[answer.strategy] == strategy and 1 <= len(answer.cells) <= most[strategy]
    probabilities = np.array([c.probability for c in answer.cells])
    assert (probabilities > 0).all() and probabilities.sum() == pytest.approx(1.0)  # normalised over the returned cells
    assert all(
        c.level == level and in_range(c.lat_deg, c.lon_deg) and math.isfinite(c.log_probability) for c in answer.cells
    )
    assert len({c.cell_id for c in answer.cells}) == len(answer.cells)
    assert all(math.isfinite(p.radius_km) and p.radius_km > 0 for p in answer.points)


def test_decode_validation(experts_channel):
    stub = tokens_pb2_grpc.TokensServiceStub(experts_channel)
    mixed = fuzz_rpc(stub.Decode, decode_requests(), decode_problems, check_decode_answer, 200)
    embeddings_only = fuzz_rpc(stub.Decode, decode_requests("embedding"), decode_problems, check_decode_answer, 100)
    # The temperature only matters when sampling: a run of its own with that strategy.
    sampling = {**DECODE_FIELDS, "strategy": (st.just(tokens_pb2.DECODE_STRATEGY_SAMPLE),) * 2}
    temperatures_only = fuzz_rpc(
        stub.Decode, decode_requests("temperature", sampling), decode_problems, check_decode_answer, 60
    )
    for codes in (mixed, embeddings_only, temperatures_only):
        assert_both_sides_reached(codes, 10)
    good = tokens_pb2.DecodeRequest(embedding=common_pb2.Embedding(values=pooled_feature(1)))
    assert len(stub.Decode(good, timeout=CALL_TIMEOUT_S).cells) == TOKENS.default_beam_width


# ---------------------------------------------------------------- photos: Embed and Locate

SIGNATURES = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"II*\x00"]


@dataclass(frozen=True)
class PhotoRecipe:
    """How to make the photo bytes from the session's photos; `intact` means a real photo unchanged."""

    photo: int
    edits: tuple
    raw: bytes | None

    @property
    def intact(self) -> bool:
        return self.raw is None and not self.edits

    def make(self, photos: list[bytes]) -> bytes:
        if self.raw is not None:
            return self.raw
        data = bytearray(photos[self.photo])
        for kind, position, value in self.edits:
            at = position % (len(data) + 1)
            if kind == "set" and at < len(data):
                data[at] = value[0]
            elif kind == "insert":
                data[at:at] = value
            elif kind == "delete":
                del data[at : at + len(value)]
            elif kind == "truncate":
                del data[at:]
        return bytes(data)


PHOTOS_USED = 4
EDIT = st.tuples(
    st.sampled_from(["set", "insert", "delete", "truncate"]), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)
)
INTACT_PHOTOS = st.builds(PhotoRecipe, st.integers(0, PHOTOS_USED - 1), st.just(()), st.none())
EDITED_PHOTOS = st.builds(
    PhotoRecipe, st.integers(0, PHOTOS_USED - 1), st.lists(EDIT, min_size=1, max_size=6).map(tuple), st.none()
)
PHOTO_RECIPES = st.one_of(
    INTACT_PHOTOS,
    EDITED_PHOTOS,
    st.builds(PhotoRecipe, st.just(0), st.just(()), st.binary(max_size=2048)),  # random bytes, empty included
    st.builds(
        PhotoRecipe,
        st.just(0),
        st.just(()),
        st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=512)).map(lambda parts: parts[0] + parts[1]),
    ),  # a known signature, then garbage
)


@pytest.fixture(scope="module")
def real_photos(photos) -> list[bytes]:
    return [p.read_bytes() for p in photos[:PHOTOS_USED]]


def check_embedding(embedded: common_pb2.Embedding) -> None:
    values = np.asarray(embedded.values)
    assert len(values) == DIM and np.isfinite(values).all() and embedded.backbone.name == BACKBONE


def test_embed_validation(embedding_address, real_photos):
    codes: Counter = Counter()
    with grpc.insecure_channel(embedding_address) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)

        @fuzz(max_examples=80)
        @given(PHOTO_RECIPES)
        def run(recipe):
            request = embedding_pb2.EmbedRequest(image=recipe.make(real_photos))
            answer, code = answer_or_error(stub.Embed, request)
            codes[code.name] += 1
            if recipe.intact:
                assert code == OK, answer
            if code == OK:
                assert answer.dimension == DIM
                check_embedding(answer.embedding)
            else:
                check_refusal(answer, request, {"image"})  # which bytes are a photo is the decoder's call

        run()
        assert_both_sides_reached(codes, least=10)
        good = embedding_pb2.EmbedRequest(image=real_photos[0])
        check_embedding(stub.Embed(good, timeout=CALL_TIMEOUT_S).embedding)


SHIPPED_WEIGHTS = load_fusion(SHIPPED_FUSION).parameters.weights
EXPERT_VALUES = {
    orchestrator_pb2.EXPERT_GALLERY,
    orchestrator_pb2.EXPERT_SAMPLER_FLOW,
    orchestrator_pb2.EXPERT_SAMPLER_SH_DIFFUSION,
    orchestrator_pb2.EXPERT_TOKENS,
    orchestrator_pb2.EXPERT_TEXT,
}


OPTION_FIELDS = {
    "top_k": (st.integers(0, MAX_TOP_K), int32s(1, MAX_TOP_K)),
    "experts": (st.lists(st.sampled_from(sorted(EXPERT_VALUES)), max_size=5), st.lists(int32s(0, 5), max_size=5)),
    "include_distribution": (st.booleans(), st.booleans()),
    "include_expert_outputs": (st.booleans(), st.booleans()),
    "use_exif_gps": (st.booleans(), st.booleans()),
}


def locate_requests() -> st.SearchStrategy[tuple[PhotoRecipe, orchestrator_pb2.LocateOptions]]:
    options = mixed_fields(OPTION_FIELDS).map(lambda fields: orchestrator_pb2.LocateOptions(**fields))
    # Embed's run covers bytes at large; here real photos, intact or edited, come more often, so that
    # the options' answers are reached too.
    return st.tuples(st.one_of(INTACT_PHOTOS, EDITED_PHOTOS, PHOTO_RECIPES), options)


def options_problems(options: orchestrator_pb2.LocateOptions) -> set[str]:
    problems = {f"options.experts[{i}]" for i, e in enumerate(options.experts) if e not in EXPERT_VALUES}
    if not 1 <= (options.top_k or 5) <= MAX_TOP_K:
        problems.add("options.top_k")
    return problems


def check_locate_answer(request: orchestrator_pb2.LocateRequest, answer: orchestrator_pb2.LocateResponse) -> None:
    options = request.options
    hypotheses = list(answer.hypotheses)
    assert 1 <= len(hypotheses) <= (options.top_k or 5) and answer.best_guess == hypotheses[0]
    assert all(in_range(h.lat_deg, h.lon_deg) and 0 <= h.probability <= 1 for h in hypotheses)
    assert all(0 < h.radius_50_km <= h.radius_90_km and math.isfinite(h.radius_90_km) for h in hypotheses)
    assert sum(h.probability for h in hypotheses) <= 1 + 1e-6
    assert 0 < answer.radius_50_km <= answer.radius_90_km and 0 <= answer.localizability <= 1
    statuses = {o.expert: o.status for o in answer.expert_outputs}
    assert set(statuses) == EXPERT_VALUES, statuses
    if options.experts:
        ok, skipped = orchestrator_pb2.EXPERT_STATUS_OK, orchestrator_pb2.EXPERT_STATUS_SKIPPED
        wanted = {expert: ok if expert in options.experts else skipped for expert in EXPERT_VALUES}
    else:
        wanted = default_statuses(SHIPPED_WEIGHTS)
    assert statuses == wanted, answer.expert_outputs
    assert 0 <= sum(o.fusion_weight for o in answer.expert_outputs) < 1  # the prior holds the rest
    if options.include_distribution:
        assert sum(p.weight for p in answer.distribution) == pytest.approx(1.0)
        assert all(in_range(p.lat_deg, p.lon_deg) for p in answer.distribution)
    if options.include_expert_outputs:
        assert all(in_range(p.lat_deg, p.lon_deg) for o in answer.expert_outputs for p in o.points)


def test_locate_validation(orchestrator_address, real_photos):
    codes: Counter = Counter()
    with grpc.insecure_channel(orchestrator_address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

        @fuzz(max_examples=60)
        @given(locate_requests())
        def run(generated):
            recipe, options = generated
            request = orchestrator_pb2.LocateRequest(image=recipe.make(real_photos), options=options)
            problems = options_problems(options)
            answer, code = answer_or_error(stub.Locate, request)
            codes[code.name] += 1
            if recipe.intact and not problems:
                assert code == OK, answer
            if code == OK:
                assert not problems, (problems, options)
                check_locate_answer(request, answer)
            else:
                # Which bytes are a photo is the decoder's call, so a changed photo may be refused as
                # "image" whatever the options; an options field is named only when it is wrong.
                check_refusal(answer, request, problems if recipe.intact else problems | {"image"})

        run()
        assert_both_sides_reached(codes, least=5)
        good = stub.Locate(orchestrator_pb2.LocateRequest(image=real_photos[0]), timeout=CALL_TIMEOUT_S)
        assert {o.expert: o.status for o in good.expert_outputs} == default_statuses(SHIPPED_WEIGHTS)
