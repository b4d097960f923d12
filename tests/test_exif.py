"""exif_gps on photos built here: real Pillow-written EXIF, hand-built GPS directories with
exactly the malformed values under test, every truncation of a photo, and flipped bytes; and on
the repository's sample photo with EXIF GPS."""

from __future__ import annotations

import io
import logging
import struct
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoloc.orchestrator.exif import exif_gps, exif_message
from tests.photos import KAUAI, KAUAI_GPS

ASCII, SHORT, LONG, RATIONAL, SRATIONAL, DOUBLE = 2, 3, 4, 5, 10, 12

# exif.py installs this filter when imported, but pytest imports it inside a catch_warnings
# block (collection) that discards it afterwards.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")


def _photo(fmt: str = "JPEG", exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (16, 12), (90, 140, 200))
    if exif is None:
        image.save(buffer, fmt)
    else:
        image.save(buffer, fmt, exif=exif)
    return buffer.getvalue()


def _ref(letter: str) -> tuple[int, int, int, bytes]:
    return (ASCII, 2, letter.encode() + b"\x00")


def _rationals(*pairs: tuple[int, int], kind: int = RATIONAL) -> tuple[int, int, bytes]:
    code = "i" if kind == SRATIONAL else "I"
    return (kind, len(pairs), b"".join(struct.pack(f"<{code}{code}", n, d) for n, d in pairs))


def _exif(gps: dict[int, tuple[int, int, bytes]]) -> bytes:
    """b'Exif\\0\\0' + a little-endian TIFF whose IFD0 points at a GPS IFD holding `gps`,
    tag -> (type, count, value bytes), written verbatim: nothing is checked or repaired."""
    gps_ifd_at = 8 + 2 + 12 + 4
    data_at = gps_ifd_at + 2 + 12 * len(gps) + 4
    entries, data = b"", b""
    for tag, (kind, count, value) in sorted(gps.items()):
        if len(value) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            entries += struct.pack("<HHII", tag, kind, count, data_at + len(data))
            data += value + b"\x00" * (len(value) % 2)
    tiff = b"II*\x00" + struct.pack("<I", 8)
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x8825, LONG, 1, gps_ifd_at) + struct.pack("<I", 0)
    tiff += struct.pack("<H", len(gps)) + entries + struct.pack("<I", 0) + data
    return b"Exif\x00\x00" + tiff


def _gps(lat=((48, 1), (51, 1), (2376, 100)), lat_ref="N", lon=((2, 1), (21, 1), (792, 100)), lon_ref="E", **extra):
    gps = {1: _ref(lat_ref), 2: _rationals(*lat), 3: _ref(lon_ref), 4: _rationals(*lon)}
    gps.update({int(k[1:]): v for k, v in extra.items()})
    return gps


PARIS = (48 + 51 / 60 + 23.76 / 3600, 2 + 21 / 60 + 7.92 / 3600)


def test_a_photo_written_by_pillow_gives_signed_degrees_south_and_west():
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "S", (IFDRational(33, 1), IFDRational(51, 1), IFDRational(5432, 100))
    gps[3], gps[4] = "W", (IFDRational(151, 1), IFDRational(12, 1), IFDRational(3051, 100))
    lat, lon = exif_gps(_photo("JPEG", exif.tobytes()))
    assert lat == pytest.approx(-(33 + 51 / 60 + 54.32 / 3600), abs=1e-9)
    assert lon == pytest.approx(-(151 + 12 / 60 + 30.51 / 3600), abs=1e-9)


def test_north_and_east_are_positive_and_seconds_keep_their_precision():
    # 1/100000 of a second is 2.8e-9 degrees: the conversion must not round it away.
    exif = _exif(_gps(lat=((35, 1), (40, 1), (3412345, 100000)), lon=((139, 1), (39, 1), (106789, 100000))))
    lat, lon = exif_gps(_photo("JPEG", exif))
    assert abs(lat - (35 + 40 / 60 + 34.12345 / 3600)) < 1e-9
    assert abs(lon - (139 + 39 / 60 + 1.06789 / 3600)) < 1e-9
    assert lat > 0 and lon > 0


def test_decimal_minutes_with_zero_seconds_are_read():
    exif = _exif(_gps(lat=((10, 1), (305, 10), (0, 1)), lat_ref="S", lon=((20, 1), (0, 1), (0, 1)), lon_ref="W"))
    assert exif_gps(_photo("JPEG", exif)) == pytest.approx((-(10 + 30.5 / 60), -20.0), abs=1e-12)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_other_containers_carry_the_same_gps(fmt):
    photo = _photo(fmt, _exif(_gps()))
    assert Image.open(io.BytesIO(photo)).format == fmt
    assert exif_gps(photo) == pytest.approx(PARIS, abs=1e-12)


def test_a_multi_picture_jpeg_carries_the_same_gps():
    buffer = io.BytesIO()
    image = Image.new("RGB", (16, 12))
    image.save(buffer, "MPO", save_all=True, append_images=[image.copy()], exif=_exif(_gps()))
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert exif_gps(buffer.getvalue()) == pytest.approx(PARIS, abs=1e-12)


def test_photos_without_exif_or_without_gps_give_none():
    assert exif_gps(_photo("JPEG")) is None
    assert exif_gps(_photo("PNG")) is None
    only_make = Image.Exif()
    only_make[0x010F] = "Camera Maker"
    assert exif_gps(_photo("JPEG", only_make.tobytes())) is None
    assert exif_gps(_photo("JPEG", _exif({}))) is None


@pytest.mark.parametrize(
    "gps",
    [
        _gps(lat=((48, 0), (51, 1), (0, 1))),  # zero denominators, in each place
        _gps(lat=((48, 1), (51, 0), (0, 1))),
        _gps(lon=((2, 1), (21, 1), (7, 0))),
        _gps(lat=((95, 1), (0, 1), (0, 1))),  # out of range
        _gps(lat=((90, 1), (0, 1), (1, 1))),
        _gps(lon=((180, 1), (30, 1), (0, 1))),
        _gps(lat=((48, 1), (60, 1), (0, 1))),  # minutes or seconds of 60 are not DMS
        _gps(lon=((2, 1), (21, 1), (61, 1))),
        _gps(lat=((0, 1), (0, 1), (0, 1)), lon=((0, 1), (0, 1), (0, 1))),  # a camera without a fix
        _gps(lat_ref="X"),  # unknown, missing or mistyped references
        _gps(lon_ref="N"),
        {2: _rationals((48, 1), (51, 1), (0, 1)), 3: _ref("E"), 4: _rationals((2, 1), (21, 1), (0, 1))},
        _gps(g1=(SHORT, 1, struct.pack("<H", 78))),
        _gps(g2=(ASCII, 5, b"48.8\x00")),  # wrong types and counts
        _gps(g2=_rationals((48, 1), (51, 1))),
        _gps(g4=_rationals((2, 1), (21, 1), (7, 1), (1, 1))),
        _gps(g2=_rationals((-48, 1), (51, 1), (0, 1), kind=SRATIONAL)),
        _gps(g2=(DOUBLE, 3, struct.pack("<ddd", float("nan"), 0.0, 0.0))),
        _gps(g4=(DOUBLE, 3, struct.pack("<ddd", float("inf"), 0.0, 0.0))),
        _gps(g9=(ASCII, 2, b"V\x00")),  # the receiver says the measurement is void
    ],
)
def test_malformed_gps_gives_none(gps):
    assert exif_gps(_photo("JPEG", _exif(gps))) is None


def test_status_active_and_float_or_integer_components_are_accepted():
    gps = _gps(g9=(ASCII, 2, b"A\x00"), g2=(DOUBLE, 3, struct.pack("<ddd", 48.0, 51.0, 23.76)))
    assert exif_gps(_photo("JPEG", _exif(gps))) == pytest.approx(PARIS, abs=1e-12)
    gps = _gps(g2=(SHORT, 3, struct.pack("<HHH", 48, 51, 24)))
    assert exif_gps(_photo("JPEG", _exif(gps))) == pytest.approx((48 + 51 / 60 + 24 / 3600, PARIS[1]), abs=1e-12)


def test_garbage_and_wrong_types_give_none():
    rng = np.random.default_rng(0)
    for junk in (b"", b"\x00" * 64, b"\xff\xd8\xff\xe1\xff\xff" + b"Exif\x00\x00" + bytes(40), rng.bytes(4096)):
        assert exif_gps(junk) is None
    assert exif_gps("not bytes") is None  # type: ignore[arg-type]
    assert exif_gps(None) is None  # type: ignore[arg-type]
    # A TIFF header whose first directory points far past the end of the data.
    assert exif_gps(b"II*\x00" + struct.pack("<I", 1 << 30) + bytes(32)) is None


def test_every_truncation_gives_none_or_the_true_position():
    photo = _photo("JPEG", _exif(_gps()))
    app1_end = photo.index(b"\xff\xdb")  # the quantisation tables follow the EXIF segment
    found = 0
    for cut in range(len(photo)):
        got = exif_gps(photo[:cut])
        if cut < app1_end:
            assert got is None, cut
        else:
            assert got is None or got == pytest.approx(PARIS, abs=1e-12), cut
            found += got is not None
    assert found > 0  # some photos cut after their EXIF segment still give it: the second case was reached


def test_flipped_bytes_in_the_exif_never_give_an_out_of_range_position():
    photo = bytearray(_photo("JPEG", _exif(_gps())))
    start = photo.index(b"Exif\x00\x00")
    rng = np.random.default_rng(1)
    outcomes = Counter()
    for _ in range(400):
        mutated = bytearray(photo)
        for at in rng.integers(start, start + 200, size=3):
            mutated[at] = int(rng.integers(0, 256))
        got = exif_gps(bytes(mutated))
        assert got is None or (-90 <= got[0] <= 90 and -180 <= got[1] <= 180 and got != (0.0, 0.0)), got
        outcomes["none" if got is None else "intact" if got == pytest.approx(PARIS, abs=1e-12) else "moved"] += 1
    # The flips reached the GPS values: positions they moved were still read and checked, others refused.
    assert outcomes["moved"] >= 10 and outcomes["none"] >= 10, outcomes


def test_no_log_record_carries_the_raw_exif(caplog):
    caplog.set_level(logging.DEBUG)
    assert exif_gps(_photo("JPEG", _exif(_gps()))) is not None
    assert exif_gps(_photo("JPEG", _exif(_gps(lat=((48, 0), (51, 1), (0, 1)))))) is None
    # Pillow logs each tag's raw value at DEBUG from this logger; exif.py drops those records.
    assert [r for r in caplog.records if r.name == "PIL.TiffImagePlugin"] == []
    assert not any("2376" in r.getMessage() or "value" in r.getMessage() for r in caplog.records)


def test_the_sample_photo_with_gps_gives_the_written_position_as_the_apis_message():
    """samples/kauai_gps.jpg carries the GPS written into it (samples/README: 22.07 N, 159.66 W), read
    from a real camera-style JPEG and carried unrounded into the ExifGps the orchestrator returns;
    its twin without EXIF GPS gives none. (The radii of an EXIF answer are the orchestrator's, checked
    in tests/test_orchestrator.py.)"""
    position = exif_gps(KAUAI_GPS.read_bytes())
    assert position == pytest.approx((22.07, -159.66), abs=1e-9)
    message = exif_message(*position)
    assert message.DESCRIPTOR.full_name == "geoloc.v1.ExifGps"
    assert (message.lat_deg, message.lon_deg) == position  # doubles on the wire: nothing rounded away
    assert exif_gps(KAUAI.read_bytes()) is None


def test_every_service_that_configures_logging_drops_pillows_raw_exif_records():
    """The embedding service decodes the same photos with Pillow: configure_logging (every server
    calls it) installs the same filter, so debug logging there never carries raw EXIF either."""
    import logging

    from geoloc.common.logs import configure_logging

    source, root = logging.getLogger("PIL.TiffImagePlugin"), logging.getLogger()
    saved = (source.filters[:], root.handlers[:], root.level)
    try:
        source.filters[:] = []
        configure_logging("debug", "console")
        assert len(source.filters) == 1 and not source.filters[0].filter(
            logging.LogRecord("PIL.TiffImagePlugin", logging.DEBUG, __file__, 1, "tag: %s", ("raw",), None)
        )
        configure_logging("debug", "console")  # idempotent
        assert len(source.filters) == 1
    finally:
        source.filters[:], root.handlers[:] = saved[0], saved[1]
        root.setLevel(saved[2])
