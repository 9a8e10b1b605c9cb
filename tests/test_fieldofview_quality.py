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


def test_a_frame_without_a_disc_is_cropped_to_its_centre_never_squashed(default_bundle):
    """A 4:3 frame with no eyepiece disc (a C-mount camera, or stray light hiding the disc):
    the centre square is classified; squashing the whole frame would distort every cell."""
    from edge.bundle import load_bundle
    from edge.pipeline import Pipeline

    pipeline = Pipeline.on_cpu(load_bundle(default_bundle))
    for path in [p for p in sample_paths() if not p.name.startswith("benign__WBC-Benign-384")]:
        field = cv2.resize(read_rgb(path), (768, 768), interpolation=cv2.INTER_CUBIC)
        frame = cv2.copyMakeBorder(field, 0, 0, 128, 128, cv2.BORDER_REFLECT)  # 1024x768, bright to the edges
        crop, fov = crop_to_field(frame)
        assert fov is None and crop.shape == (768, 768, 3) and np.array_equal(crop, field)
        result = pipeline.process(frame)
        assert result.classified and result.screening.label == path.name.split("__")[0], path.name


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


def test_noise_is_caught_before_focus_whatever_the_class():
    """Pixel noise inflates the Laplacian: noisy fields must be rejected as too noisy, not
    classified (the robustness suite saw malignant fields called negative under noise)."""
    cfg = QualityConfig()
    rng = np.random.default_rng(0)
    for path in sample_paths():  # every class, clean: passes
        field = read_rgb(path)
        assert measure_quality(field, cfg).ok, path.name
        noisy = np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)
        q = measure_quality(noisy, cfg)
        assert q.reasons[0].startswith("too noisy") and q.noise > cfg.max_noise, path.name


def test_a_field_too_bright_by_a_quarter_is_overexposed():
    cfg = QualityConfig()
    bright = [measure_quality(np.clip(read_rgb(p) * 1.25, 0, 255).astype(np.uint8), cfg) for p in sample_paths()]
    assert sum(bool(q.reasons) and q.reasons[0].startswith("overexposed") for q in bright) >= 6
    assert sum(q.clipped_fraction > 0.9 for q in bright) <= 1  # the old limit let nearly all of them through
