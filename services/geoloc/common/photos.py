"""Decoding a client's photo bytes into an upright RGB image, or a clear INVALID_ARGUMENT.

Accepted: JPEG (and its multi-picture variant MPO), PNG, WebP and BMP, the formats cameras,
phones and photo tools write. GIF is refused: a 256-colour palette format, often animated, that
no camera writes, so a GIF is a graphic or a copy whose colours were quantised, not a photo.
Only the four accepted formats' parsers ever read a client's bytes; a few other formats are
recognised by their signature, so that the refusal names what was sent without running a
parser the service does not need.

The size limits are checked on the header, before any pixel is decoded, so that a small file
declaring a huge image (a decompression bomb) costs nothing. EXIF orientation is applied, so a
phone photo stored sideways is embedded upright.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from geoloc.common.errors import InvalidArgument

SUPPORTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
SUPPORTED_NAMES = "JPEG, PNG, WebP or BMP"
# Pillow's openers tried on a client's bytes; MPO has none of its own, the JPEG one returns it.
_OPENERS = ("JPEG", "PNG", "WEBP", "BMP")
# Signatures of formats that are refused by name: (offset, bytes, name).
_REFUSED_SIGNATURES = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (4, b"ftypheic", "HEIF"),
    (4, b"ftypheix", "HEIF"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
)

# The configured limit, checked on the same header right after opening, replaces Pillow's
# process-wide guard, which would otherwise refuse first with its own fixed limit and wording.
Image.MAX_IMAGE_PIXELS = None
# Reading a JPEG's EXIF for its orientation warns about corrupt tags with numbers the client
# chose: each new text would go to stderr and stay in the warnings registry for good.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


@dataclass(frozen=True)
class PhotoLimits:
    max_bytes: int
    max_pixels: int
    min_side: int


def decode_photo(data: bytes, limits: PhotoLimits, field: str = "image", draft_side: int | None = None) -> Image.Image:
    """The photo as an upright RGB image; raises InvalidArgument naming `field` and the problem.

    `draft_side` lets a large JPEG decode at 1/2, 1/4 or 1/8 scale, never below that side,
    which is all a backbone that sees a few hundred pixels needs.
    """
    if not data:
        raise InvalidArgument(field, f"is empty; send the photo's encoded bytes ({SUPPORTED_NAMES})")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(field, f"is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    image = _open(data, field)
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            field, f"is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise InvalidArgument(field, f"is {width}x{height} pixels; both sides must be at least {limits.min_side}")
    if draft_side is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_side, draft_side))
    try:
        image.load()
        upright = _upright(image)
        return _to_rgb(upright)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(
            field, f"could not be decoded, the {image.format} data is truncated or corrupt ({exc})"
        ) from None


def _open(data: bytes, field: str) -> Image.Image:
    refused = refused_format(data)
    if refused is not None:
        raise InvalidArgument(field, f"is a {refused} image; supported formats are {SUPPORTED_NAMES}")
    try:
        image = Image.open(io.BytesIO(data), formats=_OPENERS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidArgument(field, f"is not an image in a supported format ({SUPPORTED_NAMES})") from None
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidArgument(field, f"is a {image.format} image; supported formats are {SUPPORTED_NAMES}")
    return image


def refused_format(data: bytes) -> str | None:
    """The name of a known but unsupported image format that `data` starts like, or None."""
    for offset, signature, name in _REFUSED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    return None


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are shown on white, as a viewer would, not on their hidden colour.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value / 256).convert("L")  # 16-bit greyscale to 8 bits
    return image.convert("RGB")
