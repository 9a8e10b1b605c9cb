"""Model inputs from RGB fields, computed exactly as the device computes them."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from edge.evaluation.dataset import Sample

from edge.analysis.imagefile import read_rgb
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import SegmentationParams, segment

from converter.model import INPUT_SIDE


def load_fields(samples: Sequence[Sample]) -> np.ndarray:
    """All fields as an (N, 224, 224, 3) uint8 array, resized like the device resizes."""
    out = np.empty((len(samples), INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
    for i, sample in enumerate(samples):
        rgb = read_rgb(sample.path)
        if rgb.shape[:2] != (INPUT_SIDE, INPUT_SIDE):
            rgb = cv2.resize(rgb, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
        out[i] = rgb
    return out


def model_inputs(fields: np.ndarray, params: SegmentationParams) -> dict[str, np.ndarray]:
    """The two float32 model inputs (0..255 pixels) for a batch of raw fields: normalised to
    the smear background, then segmented, as ``edge.pipeline`` does on the device."""
    normalised = np.stack([normalise(f).rgb for f in fields])
    segmented = np.stack([segment(f, params).segmented for f in normalised])
    return {"original": normalised.astype(np.float32), "segmented": segmented.astype(np.float32)}
