"""Eyepiece field-of-view cropping and the quality gate on real fields."""

from __future__ import annotations

import cv2
import numpy as np

from edge.bench import eyepiece_frame
from edge.config import QualityConfig
from edge.dataset import read_rgb
from edge.fieldofview import crop_to_field, find_field_of_view
from edge.quality import measure_quality

from conftest import sample_paths


def test_disc_is_found_and_square_crop_stays_inside_it():
    frame = eyepiece_frame(read_rgb(sample_paths()[0]))
    fov = find_field_of_view(frame)
    assert fov is not None
    assert abs(fov.cx - 530) < 8 and abs(fov.cy - 380) < 8 and abs(fov.radius - 330) < 12
    crop, _ = crop_to_field(frame)
    x0, y0, x1, y1 = fov.box
    assert crop.shape[0] == crop.shape[1] == x1 - x0 > 400
    for x, y in ((x0, y0), (x1 - 1, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)):  # corners inside the disc
        assert (x - 530) ** 2 + (y - 380) ** 2 <= 332 ** 2
    assert (crop.reshape(-1, 3).max(axis=1) < 20).mean() < 0.01  # no vignette left in the crop


def test_frames_without_vignette_pass_through():
    for path in sample_paths():
        field = read_rgb(path)
        crop, fov = crop_to_field(field)
        assert fov is None and crop is field


def test_quality_passes_sharp_fields_and_names_the_problem_otherwise():
    cfg = QualityConfig()
    sharp = read_rgb(sample_paths()[0])
    assert measure_quality(sharp, cfg).ok
    blurred = measure_quality(cv2.GaussianBlur(sharp, (0, 0), 2.5), cfg)
    assert not blurred.ok and blurred.reasons[0].startswith("out of focus") and blurred.focus < cfg.min_focus
    washed = measure_quality(np.clip(sharp.astype(int) * 3, 0, 255).astype(np.uint8), cfg)
    assert washed.reasons[0].startswith("overexposed")
    dark = measure_quality((sharp // 10).astype(np.uint8), cfg)
    assert dark.reasons[0].startswith("too dark")
