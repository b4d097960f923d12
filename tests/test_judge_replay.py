"""`geoloc judge replay`: a recorded MLLM run answered through the real openai client, on loopback.

Synthetic photos (tests/photos.py) with a small CSV of answers need no data; the Im2GPS3k tests
replay the recorded Gemini run (data/mllm/) over the train+val photos. Photos are sent as the
judge sends them: shrunk and re-encoded, never by name.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from geoloc.common.paths import CHECKOUT, data_root
from geoloc.judge.replay import (
    CANNOT_TELL,
    HASH_BITS,
    MATCH_THRESHOLD,
    RECORDED_CONFIDENCE,
    PhotoIndex,
    Replay,
    create_replay_server,
    hamming_distances,
    perceptual_hash,
    read_answers,
)
from tests.photos import encode, synthetic_photo

HEADER = "IMG_ID,LAT_pred,LON_pred,location,success,model_name\n"
# name: (lat, lon, place, success); "none-*" has no row at all.
RECORDED = {
    "lisbon.jpg": (38.7223, -9.1393, "Lisbon, Portugal", True),
    "kyoto.jpg": (35.0116, 135.7681, "Kyoto, Japan", True),
    "quito.png": (-0.1807, -78.4678, "Quito, Ecuador", True),
    "perth.webp": (-31.9523, 115.8613, "Perth, Australia", True),
    "failed.jpg": (0.0, 0.0, "", False),
    "silent.jpg": (0.0, 0.0, "", True),  # the run's 0, 0 without a place: no answer either
}
FORMATS = {".jpg": ("JPEG", {"quality": 90}), ".png": ("PNG", {}), ".webp": ("WEBP", {"quality": 90})}
NOT_RECORDED_SEED = 40


def shrunk(image: Image.Image, side: int = 256) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def data_url(image: Image.Image, format: str = "JPEG", **options) -> str:
    media = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}[format]
    return f"data:image/{media};base64,{base64.b64encode(encode(image, format, **options)).decode()}"


def as_judge_sends(image: Image.Image) -> str:
    return data_url(shrunk(image), "JPEG", quality=70)


def messages(url: str | None) -> list[dict]:
    content = [{"type": "text", "text": "Where was this photo taken? Candidates: 1. Paris, France (0.4)"}]
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": content}]


def ask(client: openai.OpenAI, url: str | None):
    return client.chat.completions.create(model="any", messages=messages(url))


def answer_of(response) -> dict:
    return json.loads(response.choices[0].message.content)


def recorded_reply(lat: float, lon: float, place: str) -> dict:
    return {"lat": lat, "lon": lon, "place": place, "confidence": RECORDED_CONFIDENCE}


def post(base_url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """A folder of seeded synthetic photos (one a name of RECORDED, one more without a row), their
    answers' CSV, and the images themselves by name."""
    root = tmp_path_factory.mktemp("replay")
    folder = root / "photos"
    folder.mkdir()
    images = {}
    for seed, name in enumerate([*RECORDED, "none-row.jpg"]):
        images[name] = synthetic_photo(seed)
        format, options = FORMATS[Path(name).suffix]
        (folder / name).write_bytes(encode(images[name], format, **options))
    rows = [
        f'{name},{lat},{lon},"{place}",{success},test-model\n' for name, (lat, lon, place, success) in RECORDED.items()
    ]
    (root / "answers.csv").write_text(HEADER + "".join(rows))
    return {"csv": root / "answers.csv", "folder": folder, "images": images}


@pytest.fixture(scope="module")
def replay_server(synthetic):
    server, port = create_replay_server(synthetic["csv"], [synthetic["folder"]], "127.0.0.1", 0)
    assert port == server.port > 0
    with server:
        yield server


@pytest.fixture()
def client(replay_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=replay_server.base_url, api_key="unused", max_retries=0, timeout=30)


def test_a_shrunk_reencoded_photo_gets_its_recorded_answer(client, synthetic):
    for name, (lat, lon, place, success) in RECORDED.items():
        if success and place:
            response = ask(client, as_judge_sends(synthetic["images"][name]))
            assert answer_of(response) == recorded_reply(lat, lon, place), name
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "replay-test-model"
    assert response.created > 0
    choice = response.choices[0]
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "stop")
    usage = response.usage
    assert 255 < usage.prompt_tokens < 2000  # the image's 255 and the prompt's words, not the base64
    assert 0 < usage.completion_tokens < 100
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("format", ["PNG", "WEBP", "JPEG"])
def test_png_webp_and_jpeg_are_read(client, synthetic, format):
    image = shrunk(synthetic["images"]["kyoto.jpg"], 384)
    options = {} if format == "PNG" else {"quality": 80}
    assert answer_of(ask(client, data_url(image, format, **options))) == recorded_reply(*RECORDED["kyoto.jpg"][:3])


@pytest.mark.parametrize("name", ["failed.jpg", "silent.jpg", "none-row.jpg"])
def test_a_photo_without_an_answer_gets_cannot_tell(client, synthetic, name):
    assert answer_of(ask(client, as_judge_sends(synthetic["images"][name]))) == CANNOT_TELL


def test_a_photo_not_recorded_gets_cannot_tell(client, replay_server):
    image = synthetic_photo(NOT_RECORDED_SEED)
    match = replay_server.replay.match(encode(shrunk(image), "JPEG", quality=70))
    assert match.photo is None and match.distance > MATCH_THRESHOLD
    assert answer_of(ask(client, as_judge_sends(image))) == CANNOT_TELL


def test_bad_requests_get_a_400_and_the_server_goes_on(client, replay_server, synthetic):
    good = as_judge_sends(synthetic["images"]["lisbon.jpg"])
    jpeg = encode(shrunk(synthetic["images"]["lisbon.jpg"]), "JPEG", quality=70)
    garbage, truncated = (
        f"data:image/jpeg;base64,{base64.b64encode(b).decode()}" for b in (os.urandom(2000), jpeg[:-500])
    )
    for url in (None, garbage, truncated, "data:image/jpeg;base64,not*base64", "https://example.com/a.jpg"):
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, url)
        assert refused.value.body["type"] == "invalid_request_error"
        assert refused.value.body["message"]
        assert answer_of(ask(client, good)) == recorded_reply(*RECORDED["lisbon.jpg"][:3])
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", json.dumps({"model": "m"}).encode()):
        status, error = post(replay_server.base_url, body)
        assert status == 400
        assert error["error"]["type"] == "invalid_request_error"
    assert answer_of(ask(client, good))["place"] == "Lisbon, Portugal"


def test_models_lists_the_replay(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["replay-test-model"]
    assert client.models.retrieve("replay-test-model").id == "replay-test-model"


def test_index_and_answers(synthetic):
    index = PhotoIndex.build([synthetic["folder"]])
    assert sorted(index.names) == sorted([*RECORDED, "none-row.jpg"])
    assert index.hashes.shape == (len(index.names), (HASH_BITS + 7) // 8)
    answers, model = read_answers(synthetic["csv"])
    assert model == "test-model"
    assert answers["failed.jpg"] is None and answers["silent.jpg"] is None
    assert answers["quito.png"].place == "Quito, Ecuador"
    replay = Replay(index, answers, model)
    assert replay.answered == 4
    # Each synthetic photo, shrunk and re-encoded, is within the threshold of its own hash (the
    # grass of the field scenes moves most: 16 to 20 bits) and far beyond it from every other.
    for name, image in synthetic["images"].items():
        sent = encode(shrunk(image), "JPEG", quality=70)
        match = replay.match(sent)
        assert match.photo == name and match.distance <= MATCH_THRESHOLD
        with Image.open(io.BytesIO(sent)) as opened:
            distances = hamming_distances(index.hashes, perceptual_hash(opened))
        assert np.sort(distances)[1] > 3 * MATCH_THRESHOLD


def test_unreadable_inputs_are_refused_at_start(tmp_path, synthetic):
    (tmp_path / "bad.csv").write_text("IMG_ID,lat,lon\n")
    with pytest.raises(ValueError, match="no column"):
        read_answers(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no photos"):
        PhotoIndex.build([tmp_path])
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    with pytest.raises(ValueError, match="broken.jpg"):
        PhotoIndex.build([tmp_path])


def test_close_releases_the_port(synthetic):
    server, port = create_replay_server(synthetic["csv"], [synthetic["folder"]])
    server.close()
    server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_the_command_line_serves_until_sigterm(synthetic):
    """`geoloc judge replay` prints the base URL, answers on it, and exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT / "services")}
    command = [sys.executable, "-m", "geoloc.cli", "judge", "replay", "--answers", str(synthetic["csv"])]
    process = subprocess.Popen(
        [*command, "--photos", str(synthetic["folder"]), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=CHECKOUT,
    )
    try:
        summary = process.stdout.readline()
        # An empty line is the end of stdout: the process has exited, and stderr says why.
        assert "7 photos indexed" in summary and "4 with an answer" in summary, summary or process.stderr.read()
        base_url = process.stdout.readline().strip().removeprefix("base URL: ")
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
        assert answer_of(ask(client, as_judge_sends(synthetic["images"]["perth.webp"])))["place"] == "Perth, Australia"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# The recorded Gemini run over Im2GPS3k train+val.
MLLM_CSV = data_root() / "mllm" / "g3-gemini-2.0-flash_im2gps3k-trainval.csv"


def im2gps3k_folders() -> list[Path]:
    return [data_root() / "im2gps3k" / split / "images" for split in ("train", "val")]


@pytest.fixture(scope="module")
def recorded_server():
    if not MLLM_CSV.is_file():
        pytest.skip(f"needs the recorded MLLM run: {MLLM_CSV} (data/README.md, mllm/)")
    server, _ = create_replay_server(MLLM_CSV, im2gps3k_folders())
    with server:
        yield server


@pytest.fixture()
def recorded_client(recorded_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=recorded_server.base_url, api_key="unused", max_retries=0, timeout=30)


def recorded_rows() -> list[dict]:
    import csv

    with open(MLLM_CSV, newline="") as file:
        return list(csv.DictReader(file))


def photo_file(name: str) -> Path:
    return next(folder / name for folder in im2gps3k_folders() if (folder / name).exists())


@pytest.mark.im2gps3k
def test_recorded_photos_shrunk_to_256_get_their_answers(recorded_client, recorded_server):
    assert len(recorded_server.replay.index.names) == 1902
    answered = [r for r in recorded_rows() if r["success"] == "True" and r["location"]]
    for row in answered[:: len(answered) // 12][:12]:
        with Image.open(photo_file(row["IMG_ID"])) as photo:
            sent = as_judge_sends(photo)
        reply = answer_of(ask(recorded_client, sent))
        assert reply == recorded_reply(float(row["LAT_pred"]), float(row["LON_pred"]), row["location"]), row["IMG_ID"]


@pytest.mark.im2gps3k
def test_recorded_without_answer_and_unknown_photos_get_cannot_tell(recorded_client):
    failed = next(r["IMG_ID"] for r in recorded_rows() if r["success"] == "False")
    with Image.open(photo_file(failed)) as photo:
        assert answer_of(ask(recorded_client, as_judge_sends(photo))) == CANNOT_TELL
    assert answer_of(ask(recorded_client, as_judge_sends(synthetic_photo(NOT_RECORDED_SEED)))) == CANNOT_TELL


@pytest.mark.im2gps3k
def test_no_image_is_a_400_and_the_next_request_succeeds(recorded_client):
    with pytest.raises(openai.BadRequestError):
        ask(recorded_client, None)
    row = next(r for r in recorded_rows() if r["success"] == "True" and r["location"])
    with Image.open(photo_file(row["IMG_ID"])) as photo:
        assert answer_of(ask(recorded_client, as_judge_sends(photo)))["place"] == row["location"]


@pytest.mark.im2gps3k
def test_no_two_recorded_photos_lie_within_the_threshold(recorded_server):
    """The match is never ambiguous: every pair of the 1,902 photos is further apart than
    MATCH_THRESHOLD (measured: 40 bits at the closest, two shots of one garden)."""
    bits = np.unpackbits(recorded_server.replay.index.hashes, axis=1)[:, :HASH_BITS].astype(np.float32)
    distances = bits @ (1 - bits).T + (1 - bits) @ bits.T
    np.fill_diagonal(distances, HASH_BITS)
    assert distances.min() > MATCH_THRESHOLD


def test_the_judge_service_asks_the_replay_end_to_end(replay_server, synthetic):
    """The whole live path of a judge call on recorded answers: the judge's gRPC server, asked for a
    full-size photo, shrinks and re-encodes it, asks the replay through the openai client, and
    answers the recorded point; a photo without an answer gets no point and no failure; in pool
    selection a recorded point that is no candidate is an unusable answer (the replay answers
    freely), told in `failure`."""
    import asyncio

    import grpc

    from geoloc.common.server import serving
    from geoloc.judge.config import JudgeSettings
    from geoloc.judge.server import JudgeServicer, judge_spec
    from geoloc.v1 import judge_pb2, judge_pb2_grpc

    settings = JudgeSettings(port=0, metrics_port=None, url=replay_server.base_url, model="replay", timeout_s=20)
    madrid = judge_pb2.Candidate(lat_deg=40.4168, lon_deg=-3.7038, probability=0.5, place="Madrid, Spain")

    def photo(name: str) -> bytes:
        return (synthetic["folder"] / name).read_bytes()

    async def scenario():
        async with serving(settings, [judge_spec(JudgeServicer(settings))], grace_s=0) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = judge_pb2_grpc.JudgeServiceStub(channel)
                free = judge_pb2.JUDGE_MODE_FREE_GENERATION
                answered = await stub.Judge(
                    judge_pb2.JudgeRequest(image=photo("kyoto.jpg"), candidates=[madrid], mode=free), timeout=30
                )
                silent = await stub.Judge(judge_pb2.JudgeRequest(image=photo("failed.jpg"), mode=free), timeout=30)
                pool = await stub.Judge(
                    judge_pb2.JudgeRequest(
                        image=photo("kyoto.jpg"), candidates=[madrid], mode=judge_pb2.JUDGE_MODE_POOL_SELECTION
                    ),
                    timeout=30,
                )
                return answered, silent, pool

    answered, silent, pool = asyncio.run(scenario())
    lat, lon, place, _ = RECORDED["kyoto.jpg"]
    assert len(answered.points) == 1 and not answered.failure
    assert (answered.points[0].lat_deg, answered.points[0].lon_deg) == pytest.approx((lat, lon))
    assert answered.place == place and answered.confidence == pytest.approx(RECORDED_CONFIDENCE)
    assert answered.tokens_in > 0 and answered.tokens_out > 0
    assert not silent.points and not silent.failure
    assert not pool.points and pool.failure.startswith("not_a_candidate")
