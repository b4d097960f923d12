"""The text expert's gRPC edge: photo bytes in, the places and countries its text points to out.

Reading runs the ONNX models on onnxruntime's own threads, which already use every core, so
requests are read one at a time, off the event loop. The text read is returned only when the
caller asks (include_text), and never logged: a photo's text can be private (a name, a plate).
"""

from __future__ import annotations

import asyncio
import os
import sys

from PIL import Image, ImageDraw, ImageFont

from geoloc.common.errors import InvalidArgument, NotReady
from geoloc.common.photos import decode_photo
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.tracing import step
from geoloc.text.config import TextSettings
from geoloc.text.evidence import TextAnswerer, TextEvidence
from geoloc.text.reading import ReadLine, TextReader
from geoloc.v1 import common_pb2, text_pb2, text_pb2_grpc


def warm_up_photo() -> Image.Image:
    """A sign to read once before SERVING, so that the first caller does not pay the models' first run."""
    image = Image.new("RGB", (480, 200), (60, 100, 150))
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 60, 450, 140), fill=(240, 240, 235))
    draw.text((50, 75), "LISBOA", font=ImageFont.load_default(size=48), fill=(20, 20, 20))
    return image


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, settings: TextSettings):
        self.settings = settings
        self.limits = settings.photo_limits()
        self._reader: TextReader | None = None
        self._answerer: TextAnswerer | None = None
        self._model: common_pb2.ModelInfo | None = None
        self._one_at_a_time = asyncio.Lock()

    async def warm_up(self) -> None:
        self._reader, self._answerer = await asyncio.to_thread(self._load)
        prior = self._answerer.prior
        self._model = common_pb2.ModelInfo(name=f"text/{self._reader.engines}", version=prior.version)
        lines = await asyncio.to_thread(self._reader.read, warm_up_photo())
        await asyncio.to_thread(self._answerer.answer, lines)

    def _load(self) -> tuple[TextReader, TextAnswerer]:
        reader = TextReader(**self.settings.reader_options(), threads=self.settings.threads)
        return reader, self.settings.answerer()

    async def Read(self, request: text_pb2.ReadRequest, context) -> text_pb2.ReadResponse:
        if self._reader is None or self._answerer is None:
            raise NotReady("the text expert is still loading")
        if not request.image:
            raise InvalidArgument("image", "is empty; send the encoded photo's bytes")
        with step("text.decode_photo"):
            photo = await asyncio.to_thread(decode_photo, request.image, self.limits, "image")
        async with self._one_at_a_time:
            with step("text.read_lines"):
                lines = await asyncio.to_thread(self._reader.read, photo)
        with step("text.match_places", lines=len(lines)):
            evidence = await asyncio.to_thread(self._answerer.answer, lines)
        return self._response(evidence, lines if request.include_text else [])

    def _response(self, evidence: TextEvidence, lines: list[ReadLine]) -> text_pb2.ReadResponse:
        used = {id(line) for line in evidence.lines}
        return text_pb2.ReadResponse(
            points=[
                common_pb2.WeightedPoint(lat_deg=p.lat_deg, lon_deg=p.lon_deg, weight=p.weight, radius_km=p.radius_km)
                for p in evidence.points
            ],
            lines=[line_message(line, id(line) in used) for line in lines],
            places=[
                text_pb2.NamedPlace(
                    name=m.city.name,
                    country_code=m.city.country,
                    lat_deg=m.city.lat_deg,
                    lon_deg=m.city.lon_deg,
                    population=m.city.population,
                    matched_text=m.text,
                    exact=m.quality == 1.0,
                    weight=w,
                )
                for m, w in evidence.places
            ],
            countries=[
                text_pb2.CountryShare(country_code=c, probability=p)
                for c, p in sorted(evidence.countries.items(), key=lambda kv: -kv[1])
            ],
            scripts=sorted(evidence.scripts, key=lambda s: -evidence.scripts[s]),
            language=evidence.language,
            language_confidence=evidence.language_confidence,
            model=self._model,
        )


def line_message(line: ReadLine, used: bool) -> text_pb2.TextLine:
    return text_pb2.TextLine(
        text=line.text,
        confidence=line.confidence,
        box=[text_pb2.Vertex(x=x, y=y) for x, y in line.box],
        engine=line.engine,
        used=used,
    )


def text_spec(servicer: TextServicer) -> ServiceSpec:
    return servicer_spec(text_pb2, "TextService", text_pb2_grpc.add_TextServiceServicer_to_server, servicer)


if __name__ == "__main__":
    # Before anything loads libgomp, which reads it once: Tesseract on one thread (text/tesseract.py).
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    sys.exit(run_service(TextSettings, lambda settings: [text_spec(TextServicer(settings))]))
