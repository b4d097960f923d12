"""The judge's pure parts: reading the model's reply, the circuit breaker, the prompt, Retry-After,
and its settings (a key file that is not there stops the service at start)."""

from __future__ import annotations

import base64
import contextlib
import io
import threading

import pytest
from PIL import Image

from geoloc.common.settings import SettingsError, load_settings
from geoloc.judge.answer import GUESS_RADIUS_KM, SURE_RADIUS_KM, Candidate, UnusableAnswer, parse_answer
from geoloc.judge.breaker import BreakerOpen, BreakerState, CircuitBreaker
from geoloc.judge.client import backoff_s, retry_after_s
from geoloc.judge.config import JudgeSettings
from geoloc.judge.prompt import chat_messages, photo_data_url, task_text

CANDIDATES = [
    Candidate(38.7223, -9.1393, 0.6, "Lisbon, Portugal"),
    Candidate(40.4168, -3.7038, 0.3, "Madrid, Spain"),
    Candidate(-33.8688, 151.2093, 0.1, "Sydney, Australia"),
]


def free(reply):
    return parse_answer(reply, CANDIDATES, pool_selection=False)


def pool(reply):
    return parse_answer(reply, CANDIDATES, pool_selection=True)


@pytest.mark.parametrize(
    "reply",
    [
        '{"lat": 48.8566, "lon": 2.3522, "place": "Paris, France", "confidence": 0.8}',
        'Looking at the architecture, I think this is Paris.\n```json\n{"lat": 48.8566, "lon": 2.3522, '
        '"place": "Paris, France", "confidence": 0.8}\n```\nHope that helps!',
        'Answer: {"latitude": "48.8566", "longitude": "2.3522", "place": "Paris,   France", "confidence": 0.8} (sure)',
        '{"note": "thinking"} then {"LAT": 48.8566, "LON": 2.3522, "Place": "Paris, France", "confidence": 0.8}',
    ],
)
def test_an_answer_is_read_through_prose_fences_and_spelling(reply):
    answer = free(reply)
    assert (answer.lat_deg, answer.lon_deg, answer.place, answer.confidence) == (48.8566, 2.3522, "Paris, France", 0.8)
    assert answer.candidate_index is None


def test_the_replay_formats_no_answer_and_prose_cannot_tell_read_as_no_point():
    assert free('{"lat": null, "lon": null, "place": null, "confidence": 0}') is None
    assert pool('{"lat": null, "lon": null, "place": null, "confidence": 0}') is None
    assert free("I cannot tell where this photo was taken.") is None
    assert free("Sorry, I'm unable to determine the location from this image.") is None


def test_confidence_is_optional_and_sets_the_radius():
    answer = free('{"lat": 1, "lon": 2, "place": "x"}')
    assert answer.confidence is None and answer.radius_km == 0  # fusion uses the fitted bandwidth
    assert free('{"lat": 1, "lon": 2, "confidence": 1}').radius_km == pytest.approx(SURE_RADIUS_KM)
    assert free('{"lat": 1, "lon": 2, "confidence": 0}').radius_km == pytest.approx(GUESS_RADIUS_KM)
    assert SURE_RADIUS_KM < free('{"lat": 1, "lon": 2, "confidence": 0.5}').radius_km < GUESS_RADIUS_KM


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("", "empty"),
        (None, "empty"),
        ("It looks like somewhere sunny.", "no_json"),
        ('{"lat": 48.8, "lon": 2.3', "no_json"),
        ('{"lat": 48.8, "place": "Paris"}', "missing_field"),
        ('{"lat": 123.0, "lon": 2.3}', "out_of_range"),
        ('{"lat": 48.8, "lon": -200}', "out_of_range"),
        ('{"lat": NaN, "lon": 2.3}', "out_of_range"),
        ('{"lat": 48.8, "lon": 2.3, "confidence": 1.5}', "out_of_range"),
        ('{"lat": "north", "lon": 2.3}', "bad_value"),
        ('{"lat": true, "lon": 2.3}', "bad_value"),
        ('{"lat": [48.8], "lon": 2.3}', "bad_value"),
    ],
)
def test_an_unusable_reply_raises_naming_its_defect(reply, kind):
    with pytest.raises(UnusableAnswer) as error:
        free(reply)
    assert error.value.kind == kind and str(error.value).startswith(f"{kind}: ")


def test_pool_selection_reads_a_candidate_by_its_number_or_its_coordinates():
    by_number = pool('I choose {"candidate": 2, "confidence": 0.7}')
    assert (by_number.lat_deg, by_number.lon_deg, by_number.place) == (40.4168, -3.7038, "Madrid, Spain")
    assert by_number.candidate_index == 1 and by_number.confidence == 0.7
    assert pool("3").candidate_index == 2 and pool("Candidate #1.").candidate_index == 0
    rounded = pool('{"lat": 38.7, "lon": -9.1, "place": "Lisboa", "confidence": 0.9}')
    assert (rounded.lat_deg, rounded.lon_deg, rounded.place, rounded.candidate_index) == (38.7223, -9.1393, "Lisboa", 0)
    with pytest.raises(UnusableAnswer, match="not_a_candidate: candidate 4 is not in 1..3"):
        pool('{"candidate": 4}')
    with pytest.raises(UnusableAnswer, match="not_a_candidate: .* km from the nearest candidate"):
        pool('{"lat": 48.8566, "lon": 2.3522}')  # Paris, far from all three
    with pytest.raises(UnusableAnswer, match="no_json"):
        free("3")  # a bare number is an answer only when choosing among candidates


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_closes_after_a_good_trial():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=10, clock=clock)
    for _ in range(2):
        breaker.failed(breaker.admit())
    breaker.succeeded(breaker.admit())  # a success in between resets the count
    for _ in range(3):
        assert breaker.state() is BreakerState.CLOSED
        breaker.failed(breaker.admit())
    assert breaker.state() is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.admit()
    assert refused.value.retry_after_s == pytest.approx(10)
    clock.now += 10
    assert breaker.state() is BreakerState.HALF_OPEN
    trial = breaker.admit()
    assert trial.trial
    with pytest.raises(BreakerOpen):
        breaker.admit()  # one trial at a time
    breaker.failed(trial)
    assert breaker.state() is BreakerState.OPEN  # a failed trial opens it for another open_s
    clock.now += 9.9
    with pytest.raises(BreakerOpen):
        breaker.admit()
    clock.now += 0.1
    breaker.succeeded(breaker.admit())
    assert breaker.state() is BreakerState.CLOSED
    assert not breaker.admit().trial


def test_a_released_trial_lets_the_next_call_try():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=1, clock=clock)
    breaker.failed(breaker.admit())
    clock.now += 1
    breaker.released(breaker.admit())  # its caller went away: no verdict
    assert breaker.admit().trial


def test_the_breaker_admits_one_trial_among_threads():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=1, clock=clock)
    breaker.failed(breaker.admit())
    clock.now += 1
    tickets, start = [], threading.Barrier(8)

    def call():
        start.wait()
        with contextlib.suppress(BreakerOpen):
            tickets.append(breaker.admit())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t.trial for t in tickets] == [True]


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date():
    assert retry_after_s({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert 0 <= retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) <= 0  # past: at once
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    assert 0.75 * 0.25 <= backoff_s(1) <= 0.25 and 0.75 * 4 <= backoff_s(10) <= 4


def test_the_prompt_lists_the_candidates_and_carries_the_photo_shrunk():
    photo = Image.new("RGB", (2000, 1000), (10, 200, 30))
    url = photo_data_url(photo, 512)
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "JPEG" and sent.size == (512, 256)
    assert Image.open(io.BytesIO(base64.b64decode(photo_data_url(Image.new("RGB", (100, 80)), 512)[23:]))).size == (
        100,
        80,
    )  # never enlarged
    text = task_text(CANDIDATES, pool_selection=True)
    assert "1. Lisbon, Portugal: lat 38.7223, lon -9.1393, probability 0.600" in text
    assert "3. Sydney, Australia" in text and "Choose" in text and '"lat"' in text
    assert "hints" in task_text(CANDIDATES, pool_selection=False)
    system, user = chat_messages(url, CANDIDATES, pool_selection=True)
    assert system["role"] == "system" and user["content"][1] == {"type": "image_url", "image_url": {"url": url}}


def test_a_missing_or_empty_key_file_is_refused_at_start_naming_the_setting_and_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLOC_JUDGE_URL", "https://llm.example/v1")
    monkeypatch.setenv("GEOLOC_JUDGE_MODEL", "some-vlm")
    missing = tmp_path / "secret" / "api-key"
    monkeypatch.setenv("GEOLOC_JUDGE_API_KEY_FILE", str(missing))
    with pytest.raises(SettingsError, match=f"GEOLOC_JUDGE_API_KEY_FILE='{missing}'.*missing or not readable"):
        load_settings(JudgeSettings)
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    monkeypatch.setenv("GEOLOC_JUDGE_API_KEY_FILE", str(empty))
    with pytest.raises(SettingsError, match="GEOLOC_JUDGE_API_KEY_FILE.*is empty"):
        load_settings(JudgeSettings)
    key = tmp_path / "key"
    key.write_text("sk-test-123\n")
    monkeypatch.setenv("GEOLOC_JUDGE_API_KEY_FILE", str(key))
    settings = load_settings(JudgeSettings)
    assert settings.api_key() == "sk-test-123" and "sk-test-123" not in repr(settings)
    assert settings.temperature == 0.7 and settings.max_tokens == 200 and settings.image_max_side_px == 512


def test_the_service_process_exits_2_before_starting_on_a_missing_key_file(tmp_path, monkeypatch, capsys):
    from geoloc.common.server import EXIT_BAD_SETTINGS, run_service

    monkeypatch.setenv("GEOLOC_JUDGE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GEOLOC_JUDGE_MODEL", "m")
    monkeypatch.setenv("GEOLOC_JUDGE_API_KEY_FILE", str(tmp_path / "nope"))
    assert run_service(JudgeSettings, lambda s: pytest.fail("started")) == EXIT_BAD_SETTINGS
    assert f"GEOLOC_JUDGE_API_KEY_FILE='{tmp_path / 'nope'}'" in capsys.readouterr().err


def test_an_endpoint_needs_a_model_and_an_http_url():
    with pytest.raises(SettingsError, match="url, GEOLOC_JUDGE_MODEL: .*model is empty"):
        load_settings(JudgeSettings, url="http://127.0.0.1:8000/v1")
    with pytest.raises(SettingsError, match="must start with http"):
        load_settings(JudgeSettings, url="127.0.0.1:8000", model="m")
    assert not load_settings(JudgeSettings).enabled
