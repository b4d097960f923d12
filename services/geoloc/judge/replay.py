"""A recorded MLLM run served as an OpenAI-compatible chat-completions endpoint (`geoloc judge replay`).

The recorded run (data/mllm/, one row a photo: IMG_ID, LAT_pred, LON_pred, location, success,
model_name) answers the photos of a few folders. A caller (the judge service) sends a photo as a
data: URL in the user message, downscaled and re-encoded, never its file name, so the photo is
found by its content: a DCT perceptual hash of a 64 x 64 greyscale thumbnail, the signs of its 255
lowest frequencies against their median (the DC term left out: it is the brightness, which
re-encoding shifts without changing the scene), matched to the nearest hash of the folders' photos
by Hamming distance.

The threshold was measured on the 1,902 Im2GPS3k train+val photos (bench/judge_replay_match.py):
each sent back downscaled to 256 px and re-encoded as JPEG at quality 70 lies at most 22 bits from
its own hash (99 % within 8), and at least 40 from any other photo's (the 40 are two shots of one
garden by one photographer; every other photo is 44 or more from its nearest, the median 100). A
match within MATCH_THRESHOLD = 32 bits is the photo; beyond it the photo is not one of the recorded
ones. Both hashes hold exactly 127 ones (the median splits 255 values), so every distance is even.
The index of those photos builds in about 2 s on two busy cores (a JPEG is decoded at a reduced scale),
so it is built at every start rather than cached.

The reply is what a model asked for JSON would write, as the whole message content: the recorded
point and place with a fixed confidence (the run stated none), whatever the prompt asks (the
candidates are ignored: a free-generation replay). A photo with no usable answer (not found, no
row, `success` False, or the run's 0, 0 with no place, which is its way of not answering) gets the
cannot-tell reply: every field null, confidence 0. A request the replay cannot read (not JSON, no
image, an image it cannot decode) is refused with HTTP 400 and an OpenAI-style error body, and the
server goes on serving.

The server is the standard library's threaded HTTP/1.1 server: one small request at a time per
connection, keep-alive for clients that reuse theirs (the openai client does), no dependency.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geoloc.common.logs import get_logger

HASH_SIDE = 64
HASH_FREQUENCIES = 16  # the 16 x 16 lowest frequencies, less the DC term: 255 bits
HASH_BITS = HASH_FREQUENCIES**2 - 1
MATCH_THRESHOLD = 32
# The recorded run stated no confidence; a fixed, fairly high one stands for "answered".
RECORDED_CONFIDENCE = 0.8
CANNOT_TELL = {"lat": None, "lon": None, "place": None, "confidence": 0}
MODEL_PREFIX = "replay-"

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
MEDIA_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"})
# Only these parsers ever read a caller's bytes.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_BODY_BYTES = 32 << 20
MAX_PIXELS = 50_000_000  # checked on the header, before any pixel is decoded

# The token counts are estimates, near what OpenAI's vision models report: text at about four
# characters a token, a high-detail image at 85 tokens plus 170 per 512 x 512 tile.
CHARACTERS_PER_TOKEN = 4
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_TILE_SIDE = 512

ANSWER_COLUMNS = ("IMG_ID", "LAT_pred", "LON_pred", "location", "success", "model_name")

log = get_logger("geoloc.judge.replay")


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix: M @ x transforms a column, M @ X @ M.T an n x n block."""
    frequency = np.arange(n)[:, None]
    sample = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * sample + 1) * frequency / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(HASH_SIDE)


def perceptual_hash(image: Image.Image) -> np.ndarray:
    """The image's 255-bit DCT hash, packed into 32 bytes. `image` is freshly opened, not loaded:
    a JPEG is then decoded at a reduced scale, which is most of why the index builds quickly."""
    # At twice the thumbnail's side the reduced decode changes no bit that matters: an original
    # and its 256 px copy are decoded at different scales and still land within a few bits.
    image.draft("L", (2 * HASH_SIDE, 2 * HASH_SIDE))
    # The caller sends the photo upright (the judge applies EXIF orientation before shrinking it).
    upright = ImageOps.exif_transpose(image)
    grey = upright.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    frequencies = (_DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T)[:HASH_FREQUENCIES, :HASH_FREQUENCIES]
    low = frequencies.ravel()[1:]
    return np.packbits(low > np.median(low))


def hamming_distances(hashes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Bits differing between `query` (packed) and each row of `hashes` (packed)."""
    return np.unpackbits(np.bitwise_xor(hashes, query), axis=-1).sum(axis=-1)


@dataclass(frozen=True)
class PhotoIndex:
    """Every photo of some folders by file name, with its perceptual hash."""

    names: tuple[str, ...]
    hashes: np.ndarray  # (len(names), 32) uint8
    seconds: float = 0.0  # how long the build took

    @classmethod
    def build(cls, folders: Iterable[Path]) -> PhotoIndex:
        started = time.monotonic()
        paths = []
        for folder in map(Path, folders):
            if not folder.is_dir():
                raise ValueError(f"{folder}: not a folder of photos")
            paths.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES))
        if not paths:
            raise ValueError(f"no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) in {', '.join(map(str, folders))}")
        hashes = []
        for path in paths:
            try:
                with Image.open(path, formats=IMAGE_FORMATS) as image:
                    hashes.append(perceptual_hash(image))
            except (OSError, ValueError) as error:  # UnidentifiedImageError is an OSError
                raise ValueError(f"{path}: not a readable photo ({error})") from None
        return cls(tuple(p.name for p in paths), np.stack(hashes), time.monotonic() - started)

    def nearest(self, query: np.ndarray) -> tuple[str, int]:
        """The indexed photo nearest to the hash `query`, and its distance in bits."""
        distances = hamming_distances(self.hashes, query)
        best = int(np.argmin(distances))
        return self.names[best], int(distances[best])


@dataclass(frozen=True)
class RecordedAnswer:
    lat: float
    lon: float
    place: str


def read_answers(path: Path) -> tuple[dict[str, RecordedAnswer | None], str]:
    """{photo name: its answer, or None where the run gave none} and the run's model name."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in ANSWER_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (expected {', '.join(ANSWER_COLUMNS)})")
        answers: dict[str, RecordedAnswer | None] = {}
        models: Counter[str] = Counter()
        for line, row in enumerate(reader, start=2):
            models[row["model_name"]] += 1
            try:
                lat, lon = float(row["LAT_pred"]), float(row["LON_pred"])
            except ValueError:
                raise ValueError(f"{path}:{line}: LAT_pred and LON_pred must be numbers") from None
            success = row["success"].strip().lower() == "true"
            place = row["location"].strip()
            # The run writes 0, 0 and no place where it failed without saying so (two rows).
            said_nothing = lat == 0 and lon == 0 and not place
            if success and not said_nothing and not (abs(lat) <= 90 and abs(lon) <= 180):
                raise ValueError(f"{path}:{line}: ({lat}, {lon}) is not a point on Earth")
            answers[row["IMG_ID"]] = RecordedAnswer(lat, lon, place) if success and not said_nothing else None
    if not answers:
        raise ValueError(f"{path}: no answers")
    return answers, models.most_common(1)[0][0]


class RequestError(Exception):
    """A request the replay refuses: HTTP 400 with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param, "code": None}}


@dataclass(frozen=True)
class Match:
    """What the replay made of a photo: the nearest indexed photo and whether it is close enough."""

    nearest: str
    distance: int
    photo: str | None  # `nearest` when within MATCH_THRESHOLD, else None
    answer: RecordedAnswer | None


def _last_image_url(request: dict) -> str:
    """The url of the last image_url part of the user messages: the photo asked about comes last."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array", "messages")
    found = None
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError("each message must be an object", "messages")
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else image_url
                if not isinstance(url, str):
                    raise RequestError("an image_url part must carry a url", "messages")
                found = url
    if found is None:
        raise RequestError("no image: the replay answers a user message with an image_url content part", "messages")
    return found


def _data_url_bytes(url: str) -> tuple[bytes, int]:
    """The bytes a data: URL carries, and the length of its base64 text."""
    if not url.startswith("data:"):
        raise RequestError("the replay reads images sent inline only, as data:image/...;base64 URLs", "messages")
    header, comma, payload = url[len("data:") :].partition(",")
    media_type, *parameters = header.split(";")
    if not comma or "base64" not in parameters:
        raise RequestError("the image's data URL is not base64", "messages")
    if media_type.strip().lower() not in MEDIA_TYPES:
        raise RequestError(f"image type {media_type!r} is not one of {', '.join(sorted(MEDIA_TYPES))}", "messages")
    try:
        return base64.b64decode(payload, validate=True), len(payload)
    except (binascii.Error, ValueError):
        raise RequestError("the image's data URL is not valid base64", "messages") from None


def _image_hash(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            size = image.size
            if size[0] * size[1] > MAX_PIXELS:
                raise RequestError(f"the image is {size[0]} x {size[1]}: at most {MAX_PIXELS} pixels", "messages")
            return perceptual_hash(image), size
    except UnidentifiedImageError:
        raise RequestError("the image is not a JPEG, PNG or WebP file", "messages") from None
    except Image.DecompressionBombError:
        raise RequestError(f"the image has more than {MAX_PIXELS} pixels", "messages") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt: Pillow's own wording
        raise RequestError(f"the image could not be decoded: {error}", "messages") from None


def _image_tokens(size: tuple[int, int]) -> int:
    tiles = math.ceil(size[0] / IMAGE_TILE_SIDE) * math.ceil(size[1] / IMAGE_TILE_SIDE)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


class Replay:
    """The recorded answers and the index of the photos they answer."""

    def __init__(self, index: PhotoIndex, answers: dict[str, RecordedAnswer | None], model: str) -> None:
        self.index = index
        self.answers = answers
        self.model = f"{MODEL_PREFIX}{model}"
        self.created = int(time.time())

    @classmethod
    def load(cls, answers_csv: Path, photo_dirs: Iterable[Path]) -> Replay:
        answers, model = read_answers(Path(answers_csv))
        return cls(PhotoIndex.build(photo_dirs), answers, model)

    @property
    def answered(self) -> int:
        """How many indexed photos have an answer to give."""
        return sum(self.answers.get(name) is not None for name in self.index.names)

    def match(self, data: bytes) -> Match:
        """The recorded photo `data` (an encoded image) is, if any, and its answer."""
        return self._match(_image_hash(data)[0])

    def _match(self, query: np.ndarray) -> Match:
        nearest, distance = self.index.nearest(query)
        if distance > MATCH_THRESHOLD:
            return Match(nearest, distance, None, None)
        return Match(nearest, distance, nearest, self.answers.get(nearest))

    def complete(self, body: bytes) -> dict:
        """The chat.completion object answering a request body; raises RequestError."""
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"the body is not JSON: {error}") from None
        if not isinstance(request, dict):
            raise RequestError("the body must be a JSON object")
        if request.get("stream"):
            raise RequestError("the replay does not stream: leave 'stream' unset", "stream")
        data, encoded_length = _data_url_bytes(_last_image_url(request))
        query, size = _image_hash(data)
        match = self._match(query)
        answer = match.answer
        reply = (
            {"lat": answer.lat, "lon": answer.lon, "place": answer.place, "confidence": RECORDED_CONFIDENCE}
            if answer
            else CANNOT_TELL
        )
        content = json.dumps(reply)
        log.info(
            "replayed",
            nearest=match.nearest,
            distance_bits=match.distance,
            matched=match.photo is not None,
            answered=answer is not None,
        )
        # The image counts as an image, not as its base64 text; the rest of the body as text.
        prompt_tokens = math.ceil((len(body) - encoded_length) / CHARACTERS_PER_TOKEN) + _image_tokens(size)
        completion_tokens = max(1, math.ceil(len(content) / CHARACTERS_PER_TOKEN))
        return {
            "id": f"chatcmpl-replay-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def model_object(self) -> dict:
        return {"id": self.model, "object": "model", "created": self.created, "owned_by": "geoloc-replay"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses its connections
    server_version = "geoloc-judge-replay"
    # An idle kept-alive connection is dropped after this, so its thread does not outlive a shutdown long.
    timeout = 30
    server: _ReplayHTTPServer

    def log_message(self, format, *args) -> None:
        """The structured "replayed" line is the log; the base class's access lines would go to stderr."""

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/")

    def do_GET(self) -> None:
        replay = self.server.replay
        path = self._route()
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [replay.model_object()]})
        elif path == f"/v1/models/{replay.model}":
            self._send_json(200, replay.model_object())
        else:
            self._send_error(404, f"no such route: GET {path}")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True  # a body of unknown length cannot be skipped to the next request
            self._send_error(411, "a Content-Length header is required")
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send_error(413, f"the body is {length} bytes: at most {MAX_BODY_BYTES}")
            return
        body = self.rfile.read(length)
        if self._route() != "/v1/chat/completions":
            self._send_error(404, f"no such route: POST {self._route()}")
            return
        try:
            self._send_json(200, self.server.replay.complete(body))
        except RequestError as error:
            self._send_json(400, error.body())
        except Exception:  # a bug here must not end the server: the caller gets a 500, the log the traceback
            log.exception("replay failed")
            self._send_error(500, "the replay failed on this request", "server_error")


class _ReplayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], replay: Replay) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.replay = replay
        super().__init__(address, _Handler)


class ReplayServer:
    """The replay on a port, served from a background thread until close()."""

    def __init__(self, replay: Replay, host: str = "127.0.0.1", port: int = 0) -> None:
        self.replay = replay
        self.host = host
        self._http = _ReplayHTTPServer((host, port), replay)
        self.port = int(self._http.server_address[1])
        # A short poll: close() waits for the loop to see the shutdown, and tests and the suite close often.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, name="judge-replay", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """What the judge's client takes as its base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def close(self) -> None:
        """Stops accepting, waits for the serving loop to end and releases the port. Idempotent."""
        if self._thread.is_alive():
            self._http.shutdown()
            self._thread.join()
        self._http.server_close()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def create_replay_server(
    answers_csv: Path, photo_dirs: Iterable[Path], host: str = "127.0.0.1", port: int = 0
) -> tuple[ReplayServer, int]:
    """Indexes the photos, reads the answers and serves them on `port` (0: a free one); returns the
    serving server (close() it, or use it as a context manager) and its port."""
    server = ReplayServer(Replay.load(answers_csv, photo_dirs), host, port)
    return server, server.port
