"""Order statistics of 8-bit images read off their histograms.

A field's lightness, grey or a cell's grey takes at most 256 values, so a percentile needs
a histogram (one pass) instead of a sort; this runs several times on every frame.
"""

from __future__ import annotations

import numpy as np


def percentile_u8(hist: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of 8-bit values given their histogram."""
    n = int(hist.sum())
    position = (n - 1) * q / 100.0
    below, above = int(np.floor(position)), int(np.ceil(position))
    cumulative = np.cumsum(hist)
    low, high = np.searchsorted(cumulative, [below + 1, above + 1])
    return float(low + (high - low) * (position - below))


def percentile_of_u8(image: np.ndarray, q: float) -> float:
    """``np.percentile(image, q)`` of an 8-bit image."""
    return percentile_u8(np.bincount(image.ravel(), minlength=256), q)
