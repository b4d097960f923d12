"""The experts and the services of the suite, each defined once: everything else reads these tables.

An expert is one source of weighted points that the orchestrator fuses. Its entry says what the
API calls it (its short name, as command lines, CSV columns, metrics and the fusion's parameters
spell it, and its `Expert` enum), which service answers it and through which RPC, what the
orchestrator asks (the request, built from the orchestrator's settings named in `asked`), which of
the response's points are fused and which are shown to callers, its checkpoint's place in a
models folder and in a bundle, and its in-process answer function: the code that the fitting path
calls and that the service's own handler calls too (`answer`, "module:function"; imported only
when used, so this table loads with the stubs alone).

A service is one gRPC server of the suite: its port's place after the base port, its stub, the
orchestrator's address and timeout settings for it, whether it loads files from a bundle.

Adding an expert is its service folder (if it is a new service), one entry in EXPERT_TABLE (and
SERVICE_TABLE), and its k8s objects; tests/test_experts.py fails on any other file that names an
expert in a string literal.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from geoloc.v1 import gallery_pb2, orchestrator_pb2, sampler_pb2, text_pb2, tokens_pb2


@dataclass(frozen=True)
class Service:
    """One gRPC server of the suite."""

    name: str
    stub: str  # "module:class" of its generated client stub (imported when used: the stubs load grpc)
    port_offset: int  # listens on the suite's base port + this (the orchestrator is the base)
    bundle: bool  # loads its files from a model bundle when given one
    address_setting: str | None = None  # the orchestrator's setting of its address (None: the orchestrator)
    timeout_setting: str | None = None  # the orchestrator's setting of the longest call to it

    def stub_class(self) -> Callable:
        return _imported(self.stub)


@dataclass(frozen=True)
class Expert:
    """One expert the orchestrator asks and fuses."""

    name: str
    enum: int  # orchestrator_pb2.Expert
    service: str  # the name of the Service that answers it
    rpc: str  # the stub's method
    reads: Literal["embedding", "photo"]  # what its request carries
    asked: tuple[str, ...]  # the orchestrator settings its request (and so its answer) depends on
    build_request: Callable[[Any, Mapping[str, Any]], Any]  # (embedding or photo, asked values) -> request
    fused_points: Callable[[Any], list]  # the response's WeightedPoints the fusion reads
    shown_points: Callable[[Any], list]  # the points shown to a caller who asks for expert outputs
    answer: str  # "module:function", the in-process answer the fitting path and the service share
    loader: str | None = None  # "module:function" loading its checkpoint as the service holds it
    models_file: str | None = None  # its checkpoint in a models folder; {model}: the backbone's Triton model
    bundle_file: str | None = None  # its checkpoint's path inside a bundle
    extras: Callable[[Any], dict[str, list]] = field(default=lambda response: {})  # cells, text lines
    fold_trainer: str | None = None  # "module:class" of its training/fold_budget.FoldTrainer, built with its name
    photo_answers: str | None = None  # "module:function" (photo paths, cache dir) -> its CV answers, if it reads photos
    # Its points are draws from its density, each weighing 1/n: its own answer is their densest mode.
    sampled: bool = False
    # Its points crowd where photos crowd: the fusion tilts their weights by the photo density
    # (FusionParameters.gallery_density_power, the one such power: a retrieval's).
    density_tilted: bool = False

    @property
    def trained(self) -> bool:
        """Trained on backbone features and answered in-process by the fitting path (the text expert
        reads pixels, and its answers come from training/text_outputs)."""
        return self.reads == "embedding"

    def request(self, carried, asked: Mapping[str, Any]):
        """The request the orchestrator sends for one photo (its embedding or its bytes), at `asked`."""
        return self.build_request(carried, {name: asked[name] for name in self.asked})

    def answer_function(self) -> Callable:
        return _imported(self.answer)

    def photo_answers_function(self) -> Callable:
        """(photo paths, cache dir) -> [n, points, 4]: its answers to photo files, for `geoloc cv`."""
        if self.photo_answers is None:
            raise ValueError(f"the {self.name} expert does not read photos")
        return _imported(self.photo_answers)

    def trainer(self):
        """Its fold trainer (training/fold_budget.FoldTrainer): how it is trained, saved and served."""
        if self.fold_trainer is None:
            raise ValueError(f"the {self.name} expert is not trained on backbone features")
        return _imported(self.fold_trainer)(self.name)

    def load(self, path):
        """The expert's model from its checkpoint, as its service holds it."""
        if self.loader is None:
            raise ValueError(f"the {self.name} expert has no checkpoint")
        return _imported(self.loader)(path)


def _imported(target: str) -> Callable:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def _service(name: str, stub: str, port_offset: int, bundle: bool) -> Service:
    return Service(
        name, f"geoloc.v1.{name}_pb2_grpc:{stub}", port_offset, bundle, f"{name}_address", f"{name}_timeout_s"
    )


SERVICE_TABLE = (
    Service("orchestrator", "geoloc.v1.orchestrator_pb2_grpc:OrchestratorServiceStub", 0, bundle=True),
    replace(_service("embedding", "EmbeddingServiceStub", 1, True), timeout_setting="embed_timeout_s"),
    _service("gallery", "GalleryServiceStub", 2, True),
    _service("sampler", "SamplerServiceStub", 3, True),
    _service("tokens", "TokensServiceStub", 4, True),
    _service("text", "TextServiceStub", 5, False),
)


def _sample_request(method: int, samples: str, steps: str):
    # seed 0: the same photo gets the same samples, the ones the fusion was fitted on.
    return lambda embedding, asked: sampler_pb2.SampleRequest(
        embedding=embedding, method=method, n_samples=asked[samples], steps=asked[steps], seed=0
    )


def _sampler(name: str, method: int, enum: int) -> Expert:
    return Expert(
        name=name,
        enum=enum,
        service="sampler",
        rpc="Sample",
        reads="embedding",
        asked=(f"{name}_samples", f"{name}_steps"),
        build_request=_sample_request(method, f"{name}_samples", f"{name}_steps"),
        fused_points=lambda response: list(response.samples),
        shown_points=lambda response: list(response.modes),
        answer="geoloc.sampler.answers:sampled_points",
        loader="geoloc.sampler.model:load_sampler",
        models_file=f"sampler/{name}.pt",
        bundle_file=f"experts/sampler/{name}.pt",
        fold_trainer="geoloc.training.sampler:SamplerFoldTrainer",
        sampled=True,
    )


EXPERT_TABLE = (
    Expert(
        name="gallery",
        enum=orchestrator_pb2.EXPERT_GALLERY,
        service="gallery",
        rpc="Search",
        reads="embedding",
        asked=("gallery_k",),
        build_request=lambda embedding, asked: gallery_pb2.SearchRequest(embedding=embedding, k=asked["gallery_k"]),
        fused_points=lambda response: list(response.points),
        shown_points=lambda response: list(response.points),
        answer="geoloc.gallery.answers:gallery_points",
        loader="geoloc.gallery.heads:load_head",
        models_file="gallery/{model}_head.pt",
        bundle_file="experts/gallery/head.pt",
        fold_trainer="geoloc.training.gallery_head:HeadFoldTrainer",
        density_tilted=True,
    ),
    _sampler("flow", sampler_pb2.SAMPLING_METHOD_FLOW, orchestrator_pb2.EXPERT_SAMPLER_FLOW),
    _sampler("sh", sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION, orchestrator_pb2.EXPERT_SAMPLER_SH_DIFFUSION),
    Expert(
        name="tokens",
        enum=orchestrator_pb2.EXPERT_TOKENS,
        service="tokens",
        rpc="Decode",
        reads="embedding",
        asked=("tokens_beam_width",),
        build_request=lambda embedding, asked: tokens_pb2.DecodeRequest(
            embedding=embedding, strategy=tokens_pb2.DECODE_STRATEGY_BEAM, beam_width=asked["tokens_beam_width"]
        ),
        fused_points=lambda response: list(response.points),
        shown_points=lambda response: list(response.points),
        answer="geoloc.tokens.answers:beam_points",
        loader="geoloc.tokens.model:load_token_model",
        models_file="tokens/decoder.pt",
        bundle_file="experts/tokens/decoder.pt",
        extras=lambda response: {"cells": list(response.cells)},
        fold_trainer="geoloc.training.token_decoder:DecoderFoldTrainer",
    ),
    Expert(
        name="text",
        enum=orchestrator_pb2.EXPERT_TEXT,
        service="text",
        rpc="Read",
        reads="photo",
        asked=("include_text",),
        build_request=lambda image, asked: text_pb2.ReadRequest(image=image, include_text=asked["include_text"]),
        fused_points=lambda response: list(response.points),
        shown_points=lambda response: list(response.points),
        answer="geoloc.text.answers:text_evidence",
        extras=lambda response: {"text": list(response.lines)},
        photo_answers="geoloc.training.text_outputs:cv_text_answers",
    ),
)

SERVICES_BY_NAME: dict[str, Service] = {s.name: s for s in SERVICE_TABLE}
SERVICES = tuple(SERVICES_BY_NAME)  # the six gRPC services, in port order
EXPERTS_BY_NAME: dict[str, Expert] = {e.name: e for e in EXPERT_TABLE}
EXPERTS = tuple(EXPERTS_BY_NAME)  # every expert's short name, in the API's order
TRAINED_EXPERTS = tuple(e.name for e in EXPERT_TABLE if e.trained)  # the fusion fit answers these in-process
EXPERT_SERVICES = tuple(dict.fromkeys(e.service for e in EXPERT_TABLE))  # the services that answer experts
EXPERT_ENUMS = {e.name: e.enum for e in EXPERT_TABLE}
EXPERT_NAMES = {e.enum: e.name for e in EXPERT_TABLE}
# The experts that read the photo, not its embedding: the fusion fits each as an add-on beside the
# others (it answers only some photos), and `geoloc cv` reports the answer with and without it.
PHOTO_EXPERTS = tuple(e.name for e in EXPERT_TABLE if e.reads == "photo")
SAMPLED_EXPERTS = frozenset(e.name for e in EXPERT_TABLE if e.sampled)
DENSITY_TILTED_EXPERTS = frozenset(e.name for e in EXPERT_TABLE if e.density_tilted)
TEXT_QUERY_SERVICE = "gallery"  # LocateText's answer: this service's search for the text's embedding
WORKLOADS = (*SERVICES, "triton")  # what runs as a Deployment: the services and Triton


def expert(name: str) -> Expert:
    """The expert of this short name; ValueError naming the known ones otherwise."""
    if name not in EXPERTS_BY_NAME:
        raise ValueError(f"no expert named {name!r}; the experts are {', '.join(EXPERTS)}")
    return EXPERTS_BY_NAME[name]
