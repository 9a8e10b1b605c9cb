"""Blast-cell segmentation shared by training (converter) and the device (edge).

The method follows the published pipeline: RGB to CIE-LAB, 2-means on the a* channel,
keep the cluster with the higher a* centre (violet-stained nuclei), morphological
opening and closing, removal of small objects, mask applied to the RGB frame.

2-means on a one-dimensional 8-bit channel has an exact optimum: the optimal partition
is a threshold, and the threshold that minimises the within-cluster sum of squares is
the one that maximises the between-cluster variance (Otsu's criterion). It is found
from the 256-bin histogram in one pass, which is both faster and more reliable than
iterative ``cv2.kmeans`` (which can stop at a local optimum).

Both halves of BlastScope must segment identically, so every tunable lives in
``SegmentationParams``; the converter records it in the bundle manifest and the
device rebuilds it from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import cv2
import numpy as np

from edge.analysis.morphology import ELEMENTS, element as structuring_element

#: Frame side (pixels) at which the morphology radii and minimum area are specified.
REFERENCE_SIDE = 224
#: a* centre gap below which a field has no stain at all: background with pixel noise of sigma
#: up to 5 measures at most 5.3; the faintest malignant field of the dataset measures 6.6.
BLANK_GAP = 6.0


def from_known_keys(cls: type, data: Mapping[str, Any], what: str) -> Any:
    """A parameters dataclass from a manifest section; an unknown key is an error, so a newer
    bundle is never run with parameters this software would silently drop."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} parameter(s): {', '.join(sorted(unknown))}")
    return cls(**dict(data))


@dataclass(frozen=True)
class SegmentationParams:
    """Every parameter of the segmentation, recorded in the bundle manifest.

    Radii and the minimum object area are given for a ``REFERENCE_SIDE`` frame and
    scaled with the frame's shorter side, so a 1024x768 camera frame and a 224x224
    training image remove the same physical structures.
    """

    open_radius: int = 1
    close_radius: int = 2
    min_object_fraction: float = 0.002
    #: Minimum distance (a* levels) between the two cluster centres. Below it the field
    #: has no stained structure worth separating (blank, background only, overexposed).
    min_centre_gap: float = 12.0
    #: The structuring element of every opening, closing and dilation of the field and its
    #: cells (``edge.analysis.morphology``): "disc" is the same under every turn of the field;
    #: "ellipse", OpenCV's, is what bundles that do not name one were trained with.
    element: str = "ellipse"
    #: When the two a* centres are closer than ``min_centre_gap`` (but the field is not blank),
    #: split the upper cluster a second time. In a field with only one or two white cells the
    #: best two-way split of a* is the background against the red cells, with the few stained
    #: pixels in the upper cluster; splitting that cluster again finds them. Off in bundles
    #: that do not name it, which refuse such fields as faintly stained.
    resplit: bool = False

    def __post_init__(self) -> None:
        if self.element not in ELEMENTS:
            raise ValueError(f"unknown structuring element {self.element!r}: expected one of {', '.join(ELEMENTS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegmentationParams":
        """Rebuild from a manifest; unknown keys are an error so a newer bundle is not
        silently segmented with the wrong method."""
        return from_known_keys(cls, data, "segmentation")


@dataclass(frozen=True)
class Segmentation:
    """The outcome of segmenting one RGB field."""

    mask: np.ndarray  # HxW bool, True on kept (stained) objects
    segmented: np.ndarray  # HxWx3 uint8, the RGB frame with the background black
    cell_count: int
    area_fraction: float
    threshold: int | None  # a* level separating the clusters (pixels above it are kept)
    reason: str | None  # why the mask is empty, in words a technician understands
    #: Empty with the a* centres ``BLANK_GAP`` to ``min_centre_gap`` apart (and, with
    #: ``resplit``, no second split that finds stained cells): the stain may be faint, or the
    #: field holds no white cell, and the refusal says both. Real malignant fields with one or
    #: two white cells among many red cells look like this to the first split.
    faint: bool = False
    #: The structuring element it was made with, which the cell path uses too.
    element: str = "ellipse"

    @property
    def empty(self) -> bool:
        return self.cell_count == 0


def two_means_threshold(histogram: np.ndarray) -> tuple[int, float, float] | None:
    """Exact 2-means split of a 256-bin histogram.

    Returns ``(t, low_centre, high_centre)`` where values ``<= t`` form the low cluster,
    or ``None`` when the histogram holds fewer than two distinct values. Ties between
    equally good thresholds resolve to the lowest one.
    """
    counts = np.asarray(histogram, dtype=np.float64).ravel()
    levels = np.arange(counts.size, dtype=np.float64)
    w0 = np.cumsum(counts)
    s0 = np.cumsum(counts * levels)
    total, total_sum = w0[-1], s0[-1]
    w1 = total - w0
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return None
    m0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    m1 = np.divide(total_sum - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1.0)
    t = int(np.argmax(between))
    return t, float(m0[t]), float(m1[t])


def _empty(rgb: np.ndarray, threshold: int | None, reason: str, element: str, faint: bool = False) -> Segmentation:
    h, w = rgb.shape[:2]
    return Segmentation(
        mask=np.zeros((h, w), dtype=bool),
        segmented=np.zeros_like(rgb),
        cell_count=0,
        area_fraction=0.0,
        threshold=threshold,
        reason=reason,
        faint=faint,
        element=element,
    )


def segment(rgb: np.ndarray, params: SegmentationParams = SegmentationParams()) -> Segmentation:
    """Segment the stained cells of an RGB uint8 field (HxWx3).

    A field without stained structure returns an empty mask and a reason instead of
    raising, because "no cells in view" is an ordinary outcome at the microscope.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    a_star = cv2.extractChannel(lab, 1)
    histogram = cv2.calcHist([a_star], [0], None, [256], [0, 256])
    split = two_means_threshold(histogram)
    if split is None:
        return _empty(rgb, None, "blank field: no colour contrast", params.element)
    t, low_centre, high_centre = split
    if params.resplit and BLANK_GAP <= high_centre - low_centre < params.min_centre_gap:
        upper = np.asarray(histogram, np.float64).ravel().copy()
        upper[: t + 1] = 0
        again = two_means_threshold(upper)
        if again is not None and again[2] - again[1] >= params.min_centre_gap:
            t, low_centre, high_centre = again
    if high_centre - low_centre < params.min_centre_gap:
        return _empty(rgb, t, "no stained cells: colour contrast too low (blank or overexposed field)",
                      params.element, faint=high_centre - low_centre >= BLANK_GAP)

    _, binary = cv2.threshold(a_star, t, 255, cv2.THRESH_BINARY)
    scale = min(rgb.shape[:2]) / REFERENCE_SIDE
    open_r = max(1, round(params.open_radius * scale)) if params.open_radius > 0 else 0
    close_r = max(1, round(params.close_radius * scale)) if params.close_radius > 0 else 0
    if open_r:
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, structuring_element(params.element, 2 * open_r + 1))
    if close_r:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, structuring_element(params.element, 2 * close_r + 1))

    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    min_area = params.min_object_fraction * rgb.shape[0] * rgb.shape[1]
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # label 0 is the background
    cell_count = int(keep.sum())
    if cell_count == 0:
        return _empty(rgb, t, "no stained cells large enough to be a cell", params.element)
    mask = keep[labels]
    segmented = cv2.bitwise_and(rgb, rgb, mask=mask.view(np.uint8))
    return Segmentation(
        mask=mask,
        segmented=segmented,
        cell_count=cell_count,
        area_fraction=float(stats[1:, cv2.CC_STAT_AREA][keep[1:]].sum()) / mask.size,
        threshold=t,
        reason=None,
        element=params.element,
    )


def kmeans_threshold_reference(rgb: np.ndarray, attempts: int = 3) -> int | None:
    """The split found by iterative ``cv2.kmeans`` (K=2 on a*), as the published method
    does it: the largest a* level assigned to the low cluster. Kept to verify and benchmark
    ``two_means_threshold`` against, not used on the device."""
    a_star = cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 1)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.01)
    cv2.setRNGSeed(0)
    # OpenCV's stubs do not admit None for bestLabels, which its documentation allows
    _, labels, centres = cv2.kmeans(a_star.reshape(-1, 1).astype(np.float32), 2, None,  # type: ignore[call-overload]
                                    criteria, attempts, cv2.KMEANS_PP_CENTERS)
    low = int(np.argmin(centres.ravel()))
    low_values = a_star.ravel()[labels.ravel() == low]
    if low_values.size in (0, a_star.size):
        return None
    return int(low_values.max())
