"""Decoding an uploaded image safely: size and pixel limits before decoding, truncation
detected, every failure a reason the phone can show."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageRejected(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB uint8 array from image bytes, or ``ImageRejected`` with an HTTP status and reason."""
    if not data:
        raise ImageRejected(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise ImageRejected(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(400, "not a readable image (expected JPEG, PNG, BMP or TIFF)") from None
    except Image.DecompressionBombError:
        raise ImageRejected(413, f"image has too many pixels; the limit is {max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, f"image is damaged or truncated ({exc})") from None
