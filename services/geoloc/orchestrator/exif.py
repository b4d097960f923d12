"""The GPS position a photo's EXIF claims, read defensively.

`exif_gps` reads only the container's metadata (JPEG/MPO APP1, PNG eXIf before the pixel
data, WebP EXIF chunk, TIFF tags); it never decodes pixels, so a small file declaring a huge
image costs nothing. Whatever the bytes are, it returns a (lat, lon) pair of signed decimal
degrees or None; it never raises, and nothing of the raw EXIF leaves this module: not in a
return value, an exception or a log line.

A position is returned only when all of this holds (anything else is None):

* GPSLatitude and GPSLongitude are three non-negative finite numbers (degrees, minutes,
  seconds; rationals with a zero denominator are rejected), minutes and seconds below 60;
* GPSLatitudeRef is N or S and GPSLongitudeRef E or W (without them the sign is unknown);
* GPSStatus, when present, is not "V" (the EXIF spec's "measurement void");
* the result is within [-90, 90] x [-180, 180] and is not exactly (0, 0), which is what
  cameras without a fix write far more often than a photo is taken at 0 N, 0 E.

`answer_with_exif` is the answer a caller gets with `use_exif_gps`: the EXIF position alone, with
the radii of a consumer GPS fix.
"""

from __future__ import annotations

import io
import math
import warnings
from numbers import Real

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoloc.common.logs import silence_raw_exif_logging
from geoloc.v1 import orchestrator_pb2

EXIF_RADIUS_KM = (0.01, 0.03)  # r50, r90 of a consumer GPS fix, about 10 m and 30 m
GPS_IFD = 0x8825
_GPS_LATITUDE_REF, _GPS_LATITUDE, _GPS_LONGITUDE_REF, _GPS_LONGITUDE, _GPS_STATUS = 1, 2, 3, 4, 9

# Formats whose EXIF we read; Image.open tries only these, which keeps the rest of Pillow's
# parsers (EPS, PSD, ...) away from untrusted bytes. MPO has no opener of its own: the JPEG one
# returns it.
_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")


silence_raw_exif_logging()  # also done by configure_logging, for every service that decodes photos
# Its warnings about corrupt EXIF name only tag numbers and sizes, but a client chooses them:
# each new text would go to stderr and stay in the warnings registry for good. Silence them.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def exif_gps(image: bytes) -> tuple[float, float] | None:
    """(latitude, longitude) in signed decimal degrees from the photo's EXIF GPS, or None."""
    try:
        return _exif_gps(bytes(image))
    except Exception:
        return None


def exif_message(lat_deg: float, lon_deg: float) -> orchestrator_pb2.ExifGps:
    """The API's ExifGps message for a position from exif_gps."""
    return orchestrator_pb2.ExifGps(lat_deg=lat_deg, lon_deg=lon_deg)


def answer_with_exif(
    response: orchestrator_pb2.LocateResponse, exif: tuple[float, float], place: orchestrator_pb2.Place
) -> None:
    """Overrides the fused answer in `response` with the EXIF position (named `place`): the only
    hypothesis, localizability 1, answer_source EXIF_GPS."""
    best = orchestrator_pb2.Hypothesis(
        lat_deg=exif[0],
        lon_deg=exif[1],
        probability=1.0,
        radius_50_km=EXIF_RADIUS_KM[0],
        radius_90_km=EXIF_RADIUS_KM[1],
        place=place,
    )
    response.best_guess.CopyFrom(best)
    del response.hypotheses[:]
    response.hypotheses.append(best)
    response.radius_50_km, response.radius_90_km = EXIF_RADIUS_KM
    response.localizability = 1.0
    response.answer_source = orchestrator_pb2.ANSWER_SOURCE_EXIF_GPS


def _exif_gps(data: bytes) -> tuple[float, float] | None:
    with Image.open(io.BytesIO(data), formats=_FORMATS) as photo:
        raw = photo.info.get("exif")
        if isinstance(raw, bytes):
            exif = Image.Exif()
            exif.load(raw)
        elif photo.format == "TIFF":
            # A TIFF's EXIF is its own tag directory, already parsed by open().
            exif = photo.getexif()
        else:
            # Not PNG's getexif(): without an eXIf chunk before the pixel data it decodes the
            # whole image to look for one after it.
            return None
        gps = exif.get_ifd(GPS_IFD)
    if not gps:
        return None
    if _ascii(gps.get(_GPS_STATUS)) == "V":
        return None
    lat = _signed(_degrees(gps.get(_GPS_LATITUDE)), _ascii(gps.get(_GPS_LATITUDE_REF)), "N", "S")
    lon = _signed(_degrees(gps.get(_GPS_LONGITUDE)), _ascii(gps.get(_GPS_LONGITUDE_REF)), "E", "W")
    if lat is None or lon is None or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    if lat == 0.0 and lon == 0.0:
        return None
    return lat, lon


def _ascii(value: object) -> str | None:
    """A one-letter EXIF reference, upper-cased; Pillow gives str, or bytes for odd types."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ").upper() or None


def _number(value: object) -> float | None:
    if isinstance(value, IFDRational):
        # IFDRational turns n/0 into NaN; reject it by its denominator before anything else.
        if value.denominator == 0:
            return None
        number = float(value.numerator) / float(value.denominator)
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) and number >= 0.0 else None


def _degrees(value: object) -> float | None:
    """Decimal degrees (unsigned) from EXIF's (degrees, minutes, seconds)."""
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    parts = [_number(v) for v in value]
    if any(p is None for p in parts):
        return None
    degrees, minutes, seconds = parts
    if minutes >= 60.0 or seconds >= 60.0:
        return None
    return degrees + minutes / 60.0 + seconds / 3600.0


def _signed(degrees: float | None, ref: str | None, positive: str, negative: str) -> float | None:
    if degrees is None:
        return None
    if ref == positive:
        return degrees
    if ref == negative:
        return -degrees
    return None
