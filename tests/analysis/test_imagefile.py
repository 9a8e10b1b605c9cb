"""Upload decoding on real fields: formats, header bounds, reduced decoding, EXIF orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge.analysis.imagefile import MAX_SIDE, WORKING_SIDE, ImageRejected, decode_image

from conftest import sample_paths

LIMIT = 24_000_000


def _field() -> Image.Image:
    """A real smear field, made non-square so that a rotation shows in the shape."""
    img = Image.open(sample_paths()[0]).convert("RGB")
    return img.crop((0, 0, img.width, img.height * 3 // 4))


def _jpeg(img: Image.Image, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, **kw)
    return out.getvalue()


# How a camera stores an upright picture under each EXIF orientation (the inverse of what
# the viewer applies): all eight, mirrors included, so swapped mirrors cannot pass.
@pytest.mark.parametrize("orientation, stored", [
    (1, None), (2, Image.Transpose.FLIP_LEFT_RIGHT), (3, Image.Transpose.ROTATE_180),
    (4, Image.Transpose.FLIP_TOP_BOTTOM), (5, Image.Transpose.TRANSPOSE), (6, Image.Transpose.ROTATE_90),
    (7, Image.Transpose.TRANSVERSE), (8, Image.Transpose.ROTATE_270),
])
def test_exif_orientation_is_applied(orientation, stored):
    upright = _field()
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(_jpeg(upright.transpose(stored) if stored is not None else upright, exif=exif), LIMIT)
    assert decoded.shape == (upright.height, upright.width, 3)
    assert np.abs(decoded.astype(int) - np.asarray(upright, dtype=int)).mean() < 4


def test_a_large_jpeg_is_decoded_at_reduced_size():
    big = _field().resize((5600, 4200), Image.Resampling.BICUBIC)
    decoded = decode_image(_jpeg(big), LIMIT)
    assert max(decoded.shape[:2]) <= WORKING_SIDE and decoded.shape[1] / decoded.shape[0] == pytest.approx(5600 / 4200, 0.01)


def test_png_is_brought_down_to_the_working_size():
    out = io.BytesIO()
    _field().resize((4000, 3000)).save(out, "PNG")
    decoded = decode_image(out.getvalue(), LIMIT)
    assert max(decoded.shape[:2]) <= WORKING_SIDE


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF", "EPS"])
def test_formats_other_than_jpeg_and_png_are_refused(fmt):
    out = io.BytesIO()
    if fmt == "EPS":
        out.write(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto showpage\n")
    else:
        _field().save(out, fmt)
    with pytest.raises(ImageRejected, match="not a JPEG or PNG") as exc:
        decode_image(out.getvalue(), LIMIT)
    assert exc.value.status == 415


def test_sides_and_pixels_are_bounded_from_the_header():
    one_line = Image.new("L", (MAX_SIDE + 1, 1))
    out = io.BytesIO()
    one_line.save(out, "PNG")
    with pytest.raises(ImageRejected, match=f"{MAX_SIDE} pixels a side"):
        decode_image(out.getvalue(), LIMIT)
    with pytest.raises(ImageRejected, match="limit is 1,000 pixels"):
        decode_image(_jpeg(_field()), 1000)


def test_a_3_to_2_jpeg_is_drafted_at_half_size_not_full_size():
    """A 6000x4000 JPEG: asking Pillow for a 2048 square kept it at full size (4000/2 < 2048),
    72 MB per upload; asking in the image's own aspect decodes it at 3000x2000."""
    from edge.analysis.imagefile import draft

    with Image.open(io.BytesIO(_jpeg(_field().resize((6000, 4000))))) as img:
        draft(img)
        assert img.size == (3000, 2000)


def test_a_png_above_12_mpx_is_refused_with_advice():
    from edge.analysis.imagefile import MAX_PNG_PIXELS

    out = io.BytesIO()
    Image.new("RGB", (4001, 3000)).save(out, "PNG")
    with pytest.raises(ImageRejected, match="PNGs are limited to 12,000,000 pixels .* send a JPEG") as exc:
        decode_image(out.getvalue(), LIMIT)
    assert exc.value.status == 413 and 4001 * 3000 > MAX_PNG_PIXELS
