"""The load generator's bounds (geoloc.client.load): loopback targets only, a bounded run,
and its report's arithmetic on records whose answers are known."""

from __future__ import annotations

import asyncio

import pytest

from geoloc.client.load import MAX_CLIENTS, CallRecord, LoadReport, checked_load, drive, is_loopback_target


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "localhost:50051",
        "[::1]:50051",
        "127.0.0.2:1",
        "ipv4:127.0.0.1:1,127.0.0.1:2",
        "dns:///localhost:50051",
    ],
)
def test_loopback_targets_are_accepted(target):
    assert is_loopback_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "10.0.0.1:50051",
        "8.8.8.8:53",
        "ipv4:127.0.0.1:1,10.1.2.3:2",
        "[2001:db8::1]:50051",
        "no-such-host.invalid:1",
    ],
)
def test_other_targets_are_refused(target):
    assert not is_loopback_target(target)
    with pytest.raises(ValueError, match="loopback"):
        checked_load(target, 1, 1)


@pytest.mark.parametrize(
    ("clients", "seconds", "problem"),
    [
        (0, 10, "clients"),
        (MAX_CLIENTS + 1, 10, "clients"),
        (1, 0, "seconds"),
        (1, 1e6, "seconds"),
    ],
)
def test_runs_are_bounded(clients, seconds, problem):
    with pytest.raises(ValueError, match=problem):
        checked_load("127.0.0.1:50051", clients, seconds)
    with pytest.raises(ValueError, match=problem):
        asyncio.run(drive(None, "127.0.0.1:50051", [b"x"], clients, seconds))


def test_the_report_counts_codes_partial_answers_and_percentiles():
    ok = {"gallery": "EXPERT_STATUS_OK", "tokens": "EXPERT_STATUS_OK"}
    records = [
        CallRecord(0.0, 100.0, "OK", ok, overhead_ms=10),
        CallRecord(0.1, 200.0, "OK", {**ok, "gallery": "EXPERT_STATUS_UNAVAILABLE"}, overhead_ms=20),
        CallRecord(0.2, 300.0, "OK", {**ok, "sh": "EXPERT_STATUS_SKIPPED"}, overhead_ms=30),
        CallRecord(0.3, 5.0, "UNAVAILABLE", message="down"),
    ]
    report = LoadReport(clients=2, seconds=2.0, records=records, began=0.0)
    assert report.codes() == {"OK": 3, "UNAVAILABLE": 1}
    assert report.throughput() == 1.5
    assert report.latency_ms(50) == 200.0 and report.overhead_ms(50) == 20.0
    assert report.partial_share() == pytest.approx(1 / 3)  # a skipped expert is not a partial answer
    assert report.expert_statuses()["gallery UNAVAILABLE"] == 1
    assert records[1].ended_s == pytest.approx(0.3)
