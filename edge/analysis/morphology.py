"""The structuring element of every opening, closing and dilation of a field and its cells.

A cell on a smear has no orientation, and neither has the camera on the eyepiece, so the masks
a field gives should not depend on how the field is turned. OpenCV's elliptic element
(``cv2.MORPH_ELLIPSE``) is symmetric left to right and top to bottom but not under a quarter
turn: its transpose differs at every size from 5 up, and a field turned by 90 degrees was
segmented and split into cells differently. The disc holds the pixels whose centres lie within
half a pixel more than the radius of the centre, the same under all eight symmetries of the
square.

Which of the two a bundle's training cells were cut with is a segmentation parameter
(``SegmentationParams.element``): a model learns the masks it was trained on, so the device
must cut with the same element; bundles that do not record it were cut with the ellipse.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

#: The element shapes a bundle may name.
ELEMENTS = ("ellipse", "disc")


@functools.lru_cache(maxsize=64)
def _element(shape: str, size: int) -> np.ndarray:
    if shape == "ellipse":
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    r = size // 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return ((x * x + y * y) <= r * r + r).astype(np.uint8)  # within about r + 1/2 of the centre


def element(shape: str, size: int) -> np.ndarray:
    """The structuring element ``shape`` (one of ``ELEMENTS``) of odd side ``size``, uint8 with
    1 inside. It is shared between calls: callers must not write to it."""
    if shape not in ELEMENTS:
        raise ValueError(f"unknown structuring element {shape!r}: expected one of {', '.join(ELEMENTS)}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"a structuring element has an odd side, not {size}")
    out = _element(shape, size)
    out.flags.writeable = False
    return out
