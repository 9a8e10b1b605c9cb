"""The cells' appearance numbers on real fields: a stained cell's dark parts are its stained
parts, and a cell with its lightness turned inside out says otherwise; the check built on
them round-trips through the manifest and refuses a list of numbers this software does not
measure."""

from __future__ import annotations

import numpy as np
import pytest

from edge.analysis.appearance import FEATURES, features
from edge.analysis.cells import CellCrops, cut_cells, detect_cells, measure_magnification, working_scale
from edge.analysis.imagefile import read_rgb
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import segment
from edge.evaluation.degradation import inverted_cells
from edge.model.bundle import default_bundle_path, load_bundle
from edge.model.ood import AppearanceCheck, fit_appearance

from conftest import sample_paths



@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def _rows(rgb: np.ndarray, bundle) -> np.ndarray:
    field = normalise(rgb).rgb
    seg = segment(field, bundle.segmentation)
    px_per_um, reason = working_scale(measure_magnification(field, seg.mask), bundle.cells)
    assert reason is None
    cells, labels = detect_cells(seg, px_per_um, bundle.cells)
    return features(cut_cells(field, labels, cells, px_per_um, bundle.cells), bundle.cells)


def test_in_stained_cells_the_darker_pixels_are_the_stained_ones(bundle):
    redder, bluer = FEATURES.index("darker_is_redder"), FEATURES.index("darker_is_bluer")
    for path in sample_paths():
        clean = _rows(read_rgb(path), bundle)
        inverted = _rows(inverted_cells(read_rgb(path), bundle.segmentation), bundle)
        assert clean.shape == (len(clean), len(FEATURES)) and np.isfinite(clean).all()
        assert np.median(clean[:, redder]) > 0.5 and np.median(clean[:, bluer]) > 0.5, path.name
        assert np.median(inverted[:, redder]) < np.median(clean[:, redder]) - 0.5, path.name
        # the cells were found again, at their size: only the lightness changed
        diameter = FEATURES.index("diameter_um")
        assert abs(np.median(inverted[:, diameter]) - np.median(clean[:, diameter])) < 1.5, path.name


def test_the_check_round_trips_and_measures_from_the_training_mean():
    rng = np.random.default_rng(0)
    rows = rng.normal([10, 160, 160, 80, 10, 0, 1.4, 0.9, 0.8, 0.9, 0.3], [3, 20, 9, 13, 4, 5, .4, .1, .1, .1, .9],
                      (500, len(FEATURES)))
    check = AppearanceCheck(**{**fit_appearance(rows).__dict__, "limit": 4.0})
    again = AppearanceCheck.from_dict(check.to_dict())
    assert np.allclose(again.distances(rows[:20]), check.distances(rows[:20]), atol=1e-3)
    assert check.distances(rows.mean(0))[0] < 0.1  # the training mean is at distance 0
    far = rows.mean(0) + 6 * rows.std(0) * (np.arange(len(FEATURES)) == FEATURES.index("darker_is_redder"))
    assert check.distances(far)[0] > 5.5  # six spreads along one feature
    assert check.field_distance(np.array([1.0, 9.0, 2.0])) == 2.0  # the median, not one odd cell


def test_a_check_of_other_numbers_is_refused():
    check = fit_appearance(np.random.default_rng(1).normal(size=(50, len(FEATURES))))
    data = {**check.to_dict(), "limit": 3.0}
    with pytest.raises(ValueError, match="not the ones this software measures"):
        AppearanceCheck.from_dict({**data, "features": list(FEATURES[:-1]) + ["hue"]})
    with pytest.raises(ValueError, match="do not fit"):
        AppearanceCheck.from_dict({**data, "mean": data["mean"][:-1]})
    with pytest.raises(ValueError, match="scale must be positive"):
        AppearanceCheck.from_dict({**data, "scale": [0.0] * len(FEATURES)})


def _plain_features(rgb: np.ndarray, own: np.ndarray, um_per_px: float, sigma_px: float) -> np.ndarray:
    """The appearance numbers as their definitions say, pixel by pixel with numpy."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    inside = lab[own]
    spread = inside[:, 0].std()
    depth = cv2.distanceTransform(own.astype(np.uint8), cv2.DIST_L2, 3)
    core = own & (depth >= 0.5 * depth.max())
    ring = own & ~core
    interior = cv2.erode(own.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    laplacian = np.abs(cv2.Laplacian(lab[..., 0].astype(np.float32), cv2.CV_32F, ksize=3))
    contours, _ = cv2.findContours(own.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    coarse = cv2.GaussianBlur(lab.astype(np.float32), (0, 0), sigma_px)[own].astype(np.float64)
    centred = inside[:, 0] - inside[:, 0].mean()
    return np.array([2 * np.sqrt(own.sum() / np.pi) * um_per_px, *inside.mean(0), spread,
                     lab[..., 0][core].mean() - lab[..., 0][ring].mean(), laplacian[interior].mean() / max(spread, 1),
                     min(own.sum() / hull, 1.0), np.corrcoef(-coarse[:, 0], coarse[:, 1])[0, 1],
                     -np.corrcoef(-coarse[:, 0], coarse[:, 2])[0, 1], np.mean(centred ** 3) / max(spread, 1) ** 3])


def test_the_numbers_are_their_plain_definitions(bundle):
    """The device's reductions (masked OpenCV means, one dot product per correlation) give
    each number as its definition does: a changed formula would move the check's distances
    away from those its limit was fitted on."""
    from edge.analysis.appearance import STAIN_SCALE_UM
    from edge.analysis.cells import cut_cells as cut

    params = bundle.cells
    um_per_px = params.crop_um / params.crop_px
    for path in sample_paths()[::2]:
        field = normalise(read_rgb(path)).rgb
        seg = segment(field, bundle.segmentation)
        px_per_um, _ = working_scale(measure_magnification(field, seg.mask), params)
        cells, labels = detect_cells(seg, px_per_um, params)
        crops = cut(field, labels, cells, px_per_um, params)
        rows = features(crops, params)
        for i in range(len(crops)):
            plain = _plain_features(crops.rgb[i], crops.own[i], um_per_px, STAIN_SCALE_UM / um_per_px)
            np.testing.assert_allclose(rows[i], plain, rtol=1e-4, atol=1e-4, err_msg=f"{path.name} cell {i}")


def test_a_cell_too_small_to_measure_is_not_fitted_on(bundle):
    """Five platelets of a few pixels each once set the fitted spread near 10^5 and the limit
    at 0.03, so inverted fields passed: the fit leaves such rows out, and a field of them is
    still far from every training cell."""
    clean = np.concatenate([_rows(read_rgb(p), bundle) for p in sample_paths()])
    tiny = np.zeros((1, bundle.cells.crop_px, bundle.cells.crop_px), bool)
    tiny[0, 10, 10:12] = True  # two pixels: under the four a measurement needs
    rgb = np.full((1, bundle.cells.crop_px, bundle.cells.crop_px, 3), 200, np.uint8)
    unmeasured = features(CellCrops(rgb, tiny, tiny), bundle.cells)
    assert (unmeasured >= 1e6).all()
    with_tiny = fit_appearance(np.concatenate([clean, np.repeat(unmeasured, 5, 0)]))
    without = fit_appearance(clean)
    assert np.allclose(with_tiny.scale, without.scale) and np.allclose(with_tiny.mean, without.mean)
    assert with_tiny.distances(unmeasured)[0] > 1e3
    assert np.median(with_tiny.distances(clean)) > 1.0  # distances keep their size


def test_a_speck_too_small_to_measure_does_not_set_a_fields_distance(bundle):
    """A differential build's limit once came out 1.2e7: a field of two cells, one a speck too
    small to measure, had its median at the speck's sentinel, and the check then refused no
    foreign field. The field's distance is the median of its measured cells; a field with none
    is as far as the sentinel."""
    clean = _rows(read_rgb(sample_paths()[0]), bundle)
    check = fit_appearance(np.concatenate([_rows(read_rgb(p), bundle) for p in sample_paths()]))
    tiny = np.zeros((1, bundle.cells.crop_px, bundle.cells.crop_px), bool)
    tiny[0, 10, 10:12] = True
    rgb = np.full((1, bundle.cells.crop_px, bundle.cells.crop_px, 3), 200, np.uint8)
    speck = features(CellCrops(rgb, tiny, tiny), bundle.cells)
    two = np.concatenate([clean[:1], speck])
    assert check.field_distance(check.distances(two), two) == pytest.approx(float(check.distances(clean[:1])[0]))
    assert check.field_distance(check.distances(speck), speck) >= 1e6  # nothing measured: far from everything
    assert check.field_distance(check.distances(clean), clean) == pytest.approx(float(np.median(check.distances(clean))))
