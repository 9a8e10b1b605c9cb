"""Segmentation on real smear images: exactness against cv2.kmeans, empty fields, params."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.analysis.imagefile import read_rgb
from edge.analysis.segmentation import (SegmentationParams, kmeans_threshold_reference, segment,
                               two_means_threshold)

from conftest import sample_paths


def _a_star(rgb: np.ndarray) -> np.ndarray:
    return cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 1)


def _sse(values: np.ndarray, threshold: int) -> float:
    low, high = values[values <= threshold], values[values > threshold]
    return float(((low - low.mean()) ** 2).sum() + ((high - high.mean()) ** 2).sum())


def _same_split(rgb: np.ndarray) -> bool:
    """True when the exact split and cv2.kmeans pick the same threshold. Otherwise
    cv2.kmeans must have stopped at an adjacent level (its convergence tolerance) and the
    exact split must be at least as good, i.e. a tie or a strictly better optimum."""
    a = _a_star(rgb)
    exact = two_means_threshold(cv2.calcHist([a], [0], None, [256], [0, 256]))[0]
    reference = kmeans_threshold_reference(rgb)
    if exact == reference:
        return True
    values = a.ravel().astype(np.float64)
    assert abs(exact - reference) == 1, (exact, reference)
    assert _sse(values, exact) <= _sse(values, reference) + 1e-6
    return False


def test_exact_two_means_matches_cv2_kmeans_on_shipped_samples():
    for path in sample_paths():
        assert _same_split(read_rgb(path)), path


@pytest.mark.system
def test_exact_two_means_matches_cv2_kmeans_on_real_dataset(dataset_dir):
    paths = sorted(dataset_dir.glob("*/*.jpg"))[::10]  # 268 fields across all classes
    same = sum(_same_split(read_rgb(p)) for p in paths)
    # Measured: 251/268 identical; the rest one level apart with cv2.kmeans worse.
    assert same >= 0.9 * len(paths), f"only {same}/{len(paths)} splits identical"


def test_two_means_threshold_on_known_histogram():
    hist = np.zeros(256)
    hist[100] = 50
    hist[180] = 10
    t, low, high = two_means_threshold(hist)
    assert 100 <= t < 180 and low == 100 and high == 180
    assert two_means_threshold(np.eye(256)[42] * 9) is None  # one distinct value: no split


def test_real_field_yields_cells_mask_and_segmented_image():
    rgb = read_rgb(sample_paths()[0])
    seg = segment(rgb)
    assert seg.reason is None and seg.cell_count >= 1
    assert seg.mask.shape == rgb.shape[:2] and seg.mask.dtype == bool
    assert 0.005 < seg.area_fraction < 0.6
    assert seg.area_fraction == pytest.approx(seg.mask.mean())
    assert seg.segmented.dtype == np.uint8 and seg.segmented.shape == rgb.shape
    assert not seg.segmented[~seg.mask].any(), "background must be black"
    assert np.array_equal(seg.segmented[seg.mask], rgb[seg.mask]), "cells keep their RGB"
    # kept pixels are the stained (high a*) ones
    a = _a_star(rgb)
    assert a[seg.mask].mean() > a[~seg.mask].mean() + 15


@pytest.mark.parametrize("fill", [0, 255, 128])
def test_uniform_field_is_empty_with_reason(fill):
    seg = segment(np.full((224, 224, 3), fill, np.uint8))
    assert seg.empty and seg.mask.sum() == 0 and not seg.segmented.any()
    assert "blank" in seg.reason


def test_overexposed_real_field_is_empty_with_reason():
    rgb = read_rgb(sample_paths()[0])
    washed = np.clip(rgb.astype(np.int32) * 8, 0, 255).astype(np.uint8)
    seg = segment(washed)
    assert seg.empty and seg.reason


def test_background_only_noise_is_empty():
    rng = np.random.default_rng(0)
    pinkish = np.clip(rng.normal((230, 200, 210), 3, (224, 224, 3)), 0, 255).astype(np.uint8)
    seg = segment(pinkish)
    assert seg.empty and "contrast" in seg.reason


def test_segmentation_scales_with_frame_size():
    rgb = read_rgb(sample_paths()[2])
    small = segment(rgb)
    large = segment(cv2.resize(rgb, (1024, 1024), interpolation=cv2.INTER_LINEAR))
    assert large.area_fraction == pytest.approx(small.area_fraction, abs=0.02)


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segment(np.zeros((10, 10), np.uint8))


def test_params_round_trip_and_refuse_unknown_keys():
    params = SegmentationParams(open_radius=2)
    assert SegmentationParams.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match="unknown segmentation parameter"):
        SegmentationParams.from_dict({**params.to_dict(), "k": 3})


def test_few_cell_fields_are_read_and_the_rest_refused_not_classified_from_the_field(default_bundle, dataset_dir):
    """Pro-B 336-345 are real malignant fields whose first a* split is weak. The field model
    classified such fields "from the field" (a path training only ever showed malignant fields);
    the cell model never classifies a field without a white cell. With the second split
    (``segmentation.resplit``, on in the shipped bundle) the ones with a few well-stained white
    cells are read, and called what their file names say; the rest are refused with a reason
    that says the stain may be faint, so the technician checks it instead of only moving the
    stage; a background with no stain at all is told only to move the stage. Without the second
    split every one of them is refused."""
    import dataclasses

    from edge.analysis.cells import FAINT_STAIN, NO_WHITE_CELLS
    from edge.model.bundle import load_bundle
    from edge.pipeline import Pipeline

    bundle = load_bundle(default_bundle)
    assert bundle.segmentation.resplit
    pipeline = Pipeline.on_cpu(bundle)
    once = Pipeline(dataclasses.replace(bundle, segmentation=dataclasses.replace(bundle.segmentation, resplit=False)),
                    pipeline.backends)
    fields = {n: read_rgb(dataset_dir / "Pro" / f"WBC-Malignant-Pro-{n}.jpg") for n in (336, 340, 342, 343, 345)}
    for number, frame in fields.items():
        before = once.process(frame)
        assert before.segmentation.empty and before.segmentation.faint and before.reasons == [FAINT_STAIN], number
        record = pipeline.process(frame).to_dict()
        if number <= 342:
            assert record["call"] == "positive" and record["label"] == "pro_b", (number, record)
        else:
            assert record["status"] == "rejected" and record["reasons"] == [FAINT_STAIN], (number, record)
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal((230, 200, 210), 3, (224, 224, 3)), 0, 255).astype(np.uint8)
    blank = pipeline.process(background)
    assert not blank.classified and blank.reasons == [NO_WHITE_CELLS]
    assert not blank.segmentation.faint


#: Training-split fields of the dataset with one or two white cells among many red cells (the
#: truth is in the folder and file name): the best two-way split of their a* is the background
#: against the red cells, the centres 6 to 12 levels apart.
FEW_CELL_FIELDS = ["Pre/WBC-Malignant-Pre-001.jpg", "Pre/WBC-Malignant-Pre-007.jpg",
                   "Pro/WBC-Malignant-Pro-046.jpg", "Early/WBC-Malignant-Early-290.jpg"]


@pytest.mark.parametrize("name", FEW_CELL_FIELDS)
def test_a_field_with_few_white_cells_is_found_by_the_second_split(dataset_dir, name):
    from edge.analysis.cells import CellParams, detect_cells, measure_magnification, working_scale
    from edge.analysis.normalisation import normalise

    field = normalise(read_rgb(dataset_dir / name)).rgb
    once = segment(field, SegmentationParams())
    assert once.empty and once.faint  # without the second split: refused as faintly stained
    again = segment(field, SegmentationParams(resplit=True))
    assert not again.empty and not again.faint
    assert again.threshold > once.threshold  # the split between red cells and white cells
    a = _a_star(field)
    assert a[again.mask].mean() >= a[~again.mask].mean() + 12  # violet cells, not red ones
    px_per_um, refused = working_scale(measure_magnification(field, again.mask), CellParams())
    cells, _ = detect_cells(again, px_per_um)
    assert refused is None and 1 <= len(cells) <= 3, len(cells)
    # with the white cells inpainted away (the leukocyte-free test), the red cells are not taken for them
    from edge.evaluation.shortcuts import load_field, without_cells

    removed = normalise(without_cells(load_field(dataset_dir / name, "x", SegmentationParams(resplit=True)))).rgb
    left = segment(removed, SegmentationParams(resplit=True))
    px_per_um, _ = working_scale(measure_magnification(removed, left.mask), CellParams())
    assert detect_cells(left, px_per_um)[0] == []


def test_the_second_split_leaves_a_field_with_clear_contrast_as_it_was():
    for path in sample_paths():
        field = read_rgb(path)
        once, again = segment(field, SegmentationParams()), segment(field, SegmentationParams(resplit=True))
        assert once.threshold == again.threshold and np.array_equal(once.mask, again.mask)


def test_the_second_split_takes_no_red_cells_for_white_cells():
    """The shipped samples with their white cells inpainted away: some have the close a* centres
    that start a second split (faint), and its red cells alone are not far enough apart in a*
    to be taken for stained cells, so every one stays empty."""
    from edge.analysis.normalisation import normalise
    from edge.evaluation.shortcuts import load_field, without_cells

    resplit = SegmentationParams(resplit=True)
    seen = [segment(normalise(without_cells(load_field(p, "x", resplit))).rgb, resplit) for p in sample_paths()]
    assert all(s.empty for s in seen)
    assert sum(s.faint for s in seen) >= 2


def _plain_segmentation(rgb: np.ndarray, params: SegmentationParams) -> np.ndarray:
    """The published method written out step by step, with the radii and minimum area scaled
    from the 224 px reference side to the frame's shorter side."""
    a = _a_star(rgb)
    t = two_means_threshold(np.bincount(a.ravel(), minlength=256))[0]
    binary = np.where(a > t, 255, 0).astype(np.uint8)
    scale = min(rgb.shape[:2]) / 224
    for radius, op in ((params.open_radius, cv2.MORPH_OPEN), (params.close_radius, cv2.MORPH_CLOSE)):
        r = max(1, round(radius * scale))
        side = 2 * r + 1
        element = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)) if params.element == "ellipse" else
                   ((np.mgrid[-r:r + 1, -r:r + 1] ** 2).sum(0) <= r * r + r).astype(np.uint8))
        binary = cv2.morphologyEx(binary, op, element)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    big = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= params.min_object_fraction * a.size]
    return np.isin(labels, big)


@pytest.mark.parametrize("factor", [1, 3])
@pytest.mark.parametrize("shape", ["ellipse", "disc"])
def test_the_mask_is_its_plain_definition_at_any_frame_size(factor, shape):
    """At the reference side and at three times it (the morphology radii and the minimum area
    scale with the frame), with either element, on every shipped sample."""
    params = SegmentationParams(element=shape)
    for path in sample_paths():
        rgb = read_rgb(path)
        rgb = cv2.resize(rgb, (224 * factor, 224 * factor), interpolation=cv2.INTER_LINEAR)
        got = segment(rgb, params)
        want = _plain_segmentation(rgb, params)
        np.testing.assert_array_equal(got.mask, want)
        assert got.cell_count == len(np.unique(cv2.connectedComponents(want.astype(np.uint8), connectivity=8)[1])) - 1
        assert got.area_fraction == pytest.approx(want.mean())
        assert np.array_equal(got.segmented, np.where(want[..., None], rgb, 0))
