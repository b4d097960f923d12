"""Photo decoding and the crop geometry, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geoloc.common.errors import InvalidArgument
from geoloc.common.photos import PhotoLimits, decode_photo
from geoloc.embedding.preprocessing import CropSpec
from tests.photos import encode

LIMITS = PhotoLimits(max_bytes=1 << 20, max_pixels=1_000_000, min_side=32)


def test_exif_orientation_is_applied_for_every_value():
    """Orientations 2-8 each undo their own transform, so all eight decode to the same pixels."""
    upright = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    stored_as = {  # how a camera stores the upright picture under each EXIF orientation
        1: upright,
        2: upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: upright.transpose(Image.Transpose.ROTATE_180),
        4: upright.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: upright.transpose(Image.Transpose.TRANSPOSE),
        6: upright.transpose(Image.Transpose.ROTATE_90),
        7: upright.transpose(Image.Transpose.TRANSVERSE),
        8: upright.transpose(Image.Transpose.ROTATE_270),
    }
    for orientation, stored in stored_as.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        decoded = decode_photo(encode(stored, "PNG", exif=exif.tobytes()), LIMITS)
        assert np.array_equal(np.asarray(decoded), np.asarray(upright)), orientation


def test_transparent_pixels_are_shown_on_white_and_greyscale_becomes_rgb():
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert np.asarray(decode_photo(encode(clear, "PNG"), LIMITS)).min() == 255
    grey = decode_photo(encode(Image.new("L", (40, 40), 90), "PNG"), LIMITS)
    assert grey.mode == "RGB" and np.asarray(grey).max() == 90


def test_a_large_jpeg_decodes_at_reduced_scale_but_never_below_the_side_asked_for():
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (800, 1000, 3), dtype=np.uint8))
    decoded = decode_photo(encode(photo, "JPEG"), LIMITS, draft_side=300)
    assert decoded.size == (500, 400)  # the 1/2-scale DCT decode; 1/4 would be under 300


NOISE_JPEG = encode(Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "is empty"),
        (NOISE_JPEG[: len(NOISE_JPEG) // 2], "could not be decoded, the JPEG data is truncated or corrupt"),
        (b"\x89PNG\r\n" + bytes(3), "not an image in a supported format"),
        (b"GIF89a" + bytes(3), "is a GIF image; supported formats are JPEG, PNG, WebP or BMP"),
        (encode(Image.new("RGB", (64, 64)), "GIF"), "is a GIF image; supported formats are JPEG, PNG, WebP or BMP"),
        (encode(Image.new("RGB", (64, 64)), "TIFF"), "is a TIFF image"),
        (bytes(2 << 20), "over the limit of 1048576 bytes"),
        (encode(Image.new("1", (2000, 600)), "PNG"), "is 2000x600 = 1200000 pixels, over the limit of 1000000 pixels"),
        (encode(Image.new("RGB", (31, 200)), "BMP"), "is 31x200 pixels; both sides must be at least 32"),
    ],
)
def test_bad_photos_raise_invalid_argument_naming_the_field(data, problem):
    with pytest.raises(InvalidArgument) as error:
        decode_photo(data, LIMITS, field="images[3]")
    assert error.value.field == "images[3]" and problem in error.value.problem


def test_padded_center_crop_is_efficientnets_evaluation_crop():
    """Side 260/292 of the shorter side, centred with TF's rounding, resized to 260."""
    spec = CropSpec(size=260, crop="padded_center_crop", padding=32, resample="bicubic")
    photo = np.zeros((300, 500, 3), dtype=np.uint8)
    side = int(260 / 292 * 300)  # 267
    top, left = (300 - side + 1) // 2, (500 - side + 1) // 2
    photo[top : top + side, left : left + side] = 200  # exactly the crop window is bright
    crop = spec.model_input(Image.fromarray(photo))
    assert crop.shape == (260, 260, 3) and crop.dtype == np.uint8
    assert crop[1:-1, 1:-1].min() >= 199  # nothing outside the window leaked in (edges aside)


def test_resize_then_center_crop_is_clips_crop():
    spec = CropSpec(size=224, crop="resize_then_center_crop", padding=0, resample="bicubic")
    photo = np.zeros((448, 896, 3), dtype=np.uint8)
    photo[:, 224:672] = 255  # the middle half: after the resize to 224 x 448, the central square
    crop = spec.model_input(Image.fromarray(photo))
    assert crop.shape == (224, 224, 3)
    assert crop[:, 2:-2].min() == 255 and crop[:, 0].max() < 255  # edges blend with the dark sides


def test_a_crop_spec_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="unknown preprocess_crop"):
        CropSpec(size=224, crop="squash", padding=0, resample="bicubic")
    with pytest.raises(ValueError, match="lacks the parameter 'preprocess_crop'"):
        CropSpec.from_model_config({"input": [{"dims": ["224", "224", "3"]}], "parameters": {}})
