"""From a camera frame to the square field the model reads, as training made it."""

from __future__ import annotations

import cv2
import numpy as np

from edge.analysis.fieldofview import crop_to_field
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import Segmentation, SegmentationParams, segment


def fit_to_input(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize a field to the model's square input as training did (area interpolation)."""
    if rgb.shape[:2] == (side, side):
        return rgb
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def model_inputs(frame: np.ndarray, params: SegmentationParams, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The two images the model reads for a frame (original field, segmented field), exactly
    as ``Pipeline.process`` makes them but without the quality gate: reference outputs use it."""
    field_rgb, seg = field_and_segmentation(frame, params, side)
    return field_rgb, seg.segmented


def field_and_segmentation(frame: np.ndarray, params: SegmentationParams, side: int) -> tuple[np.ndarray, Segmentation]:
    """The normalised square field at ``side`` and its segmentation, without the gate."""
    cropped, _ = crop_to_field(frame)
    field_rgb = normalise(np.ascontiguousarray(fit_to_input(cropped, side))).rgb
    return field_rgb, segment(field_rgb, params)
