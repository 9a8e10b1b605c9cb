"""Decoding an uploaded image safely, in bounded memory.

Only JPEG and PNG are decoded: what a phone or a camera produces (phones hand a browser's
file picker a JPEG even for HEIC photos). Every other format is refused before decoding:
Pillow would otherwise run Ghostscript on an EPS upload. Width, height and pixel count are
checked from the header, before any pixel is decoded. A large JPEG is decoded at a reduced
scale (libjpeg's DCT scaling), any image is brought down to ``WORKING_SIDE`` (the field is
classified at 224 px), at most one large image is decoded at a time, and the EXIF orientation
is applied (a phone photo taken sideways arrives as the clinician saw it).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Image files the dataset reader and the replay camera accept.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8, raising ``ValueError`` naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

FORMATS = ("JPEG", "PNG")
#: Longest side kept after decoding: well above the eyepiece camera's 1024x768 frames.
WORKING_SIDE = 2048
#: Longest side accepted at all (a 1 x 40,000,000 PNG is 78 KB and decodes to 1.1 GB).
MAX_SIDE = 16384
#: A PNG cannot be decoded at reduced scale (a JPEG can): a large PNG costs its full size in
#: memory before it is reduced, and a few in parallel took the daemon past its memory target
#: (``python -m tools.hardening`` measures it).
#: 12 Mpx is a 4000x3000 phone photo or screenshot; larger fields should come as JPEG.
MAX_PNG_PIXELS = 12_000_000
#: Images above this many pixels are decoded one at a time.
LARGE_PIXELS = 4_000_000
_large_decode = threading.BoundedSemaphore(1)

class ImageRejected(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def draft(img: Image.Image) -> None:
    """Make a JPEG decode at 1/2, 1/4 or 1/8 scale when that still leaves WORKING_SIDE on the
    long side. Pillow keeps both sides >= the requested size, so ask for the image's own aspect:
    asking for a square decoded a 6000x4000 JPEG at full size (72 MB) because 4000/2 < 2048."""
    if img.format == "JPEG":
        k = min(1.0, WORKING_SIDE / max(img.size))
        img.draft("RGB", (max(1, int(img.size[0] * k)), max(1, int(img.size[1] * k))))


def _decode(img: Image.Image) -> np.ndarray:
    draft(img)
    img.load()
    # upright as the phone meant it: all eight EXIF orientations, by Pillow (on the drafted
    # image, so at most twice the working side)
    img = ImageOps.exif_transpose(img)
    factor = -(-max(img.size) // WORKING_SIDE)  # ceiling: the result is at most WORKING_SIDE
    if factor > 1:
        img = img.reduce(factor)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB uint8 array from image bytes, or ``ImageRejected`` with an HTTP status and reason."""
    if not data:
        raise ImageRejected(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size  # read from the header, before any pixel is decoded
            if max(width, height) > MAX_SIDE:
                raise ImageRejected(413, f"image is {width}x{height} pixels; the limit is {MAX_SIDE} pixels a side")
            if width * height > max_pixels:
                raise ImageRejected(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
            if img.format == "PNG" and width * height > MAX_PNG_PIXELS:
                raise ImageRejected(413, f"PNG is {width}x{height} pixels; PNGs are limited to {MAX_PNG_PIXELS:,} pixels "
                                         "because they cannot be decoded at reduced size: send a JPEG")
            if width * height <= LARGE_PIXELS:
                return _decode(img)
            with _large_decode:
                return _decode(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(415, "not a JPEG or PNG image (send the photo as JPEG or PNG)") from None
    except Image.DecompressionBombError:
        raise ImageRejected(413, f"image has too many pixels; the limit is {max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, f"image is damaged or truncated ({exc})") from None
