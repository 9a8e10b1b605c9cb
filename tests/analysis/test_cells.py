"""White cells and magnification on real fields (the shipped samples and the dataset)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from edge.analysis.cells import (CellParams, CellCrops, cut_cells, detect_cells, measure_magnification, model_inputs,
                                 pool, working_scale)
from edge.analysis.imagefile import read_rgb
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import segment
from edge.evaluation.shortcuts import load_field, without_cells

from conftest import sample_paths

#: White cells a person counts in each shipped sample (cells more than 30% outside the field
#: not counted), as a range: a small lymphocyte or a pair touching may go either way.
EXPECTED = {"benign__WBC-Benign-182.jpg": (8, 13), "benign__WBC-Benign-498.jpg": (8, 12),
            "early_pre_b__WBC-Malignant-Early-163.jpg": (4, 6), "early_pre_b__WBC-Malignant-Early-703.jpg": (3, 4),
            "pre_b__WBC-Malignant-Pre-375.jpg": (10, 15), "pre_b__WBC-Malignant-Pre-608.jpg": (8, 14),
            "pro_b__WBC-Malignant-Pro-326.jpg": (4, 6), "pro_b__WBC-Malignant-Pro-560.jpg": (4, 6)}


def _cells(rgb: np.ndarray, params: CellParams = CellParams()):
    field = normalise(rgb).rgb
    seg = segment(field)
    magnification = measure_magnification(field, seg.mask)
    px_per_um, refused = working_scale(magnification, params)
    cells, labels = detect_cells(seg, px_per_um, params) if refused is None else ([], None)
    return field, magnification, px_per_um, refused, cells, labels


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_cells_are_detected_on_the_shipped_samples(path):
    _, magnification, _, refused, cells, labels = _cells(read_rgb(path))
    low, high = EXPECTED[path.name]
    assert refused is None and low <= len(cells) <= high, (len(cells), magnification)
    assert all(5.0 <= c.diameter_um <= 28.0 for c in cells)  # platelets and clumps left out
    assert sorted(np.unique(labels)[1:].tolist()) == list(range(1, len(cells) + 1))
    for i, c in enumerate(cells):  # each cell's box, area and centre are its own label's pixels
        own = (labels == i + 1).astype(np.uint8)
        ys, xs = np.nonzero(own)
        assert cv2.boundingRect(own) == (c.x, c.y, c.w, c.h) and c.area_px == len(ys)
        assert np.allclose(c.centre, (xs.mean(), ys.mean()))
    # the red-cell ruler lands within the dataset's own spread (7-14 px at 224 px)
    assert 0.7 <= magnification.ratio(CellParams()) <= 1.5


def _zoom(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The same smear seen through a stronger objective: the centre enlarged by ``factor``."""
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y:y + h, x:x + w])


@pytest.mark.parametrize("path", sample_paths()[::2], ids=lambda p: p.name)
def test_a_wrong_objective_is_refused(path):
    """4x larger (100x objective where the model was set up for 40x; the ruler reads it at
    about 2.5-3x) and 4x smaller (10x): refused with a reason a technician can act on."""
    rgb = read_rgb(path)
    small = cv2.resize(rgb, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    wide = np.tile(small, (4, 4, 1))  # a 4x wider view at the same pixel size: 16 fields' worth of smear
    for seen in (_zoom(rgb, 4.0), wide):
        assert seen.shape == rgb.shape
        _, _, _, refused, cells, _ = _cells(seen)
        assert refused is not None and cells == []
        assert refused.startswith(("wrong magnification: use the objective", "magnification cannot be measured")), refused


def test_scale_within_the_rulers_scatter_is_the_models_and_beyond_it_the_fields_own():
    from edge.analysis.cells import Magnification

    params = CellParams()
    at = lambda ratio: Magnification(ratio * params.model_ruler_px)  # noqa: E731
    assert working_scale(at(1.3), params) == (params.model_px_per_um, None)
    px, refused = working_scale(at(1.5), params)
    assert refused is None and abs(px / params.model_px_per_um - 1.5) < 1e-9
    assert working_scale(at(1.7), params)[1].startswith("wrong magnification")
    assert working_scale(at(0.55), params)[1].startswith("wrong magnification")
    assert working_scale(Magnification(None), params)[1].startswith("magnification cannot be measured")


def test_the_scale_limits_are_inclusive_and_a_refused_field_says_its_size():
    """At exactly the limits a field is still read (at the model's scale up to
    ``rescale_beyond``, at its own up to ``max_scale_factor``); a refused field reports the
    scale it was measured at. Limits and ruler chosen as exact binary fractions."""
    from edge.analysis.cells import Magnification

    params = CellParams(model_ruler_px=8.0, rescale_beyond=1.25, max_scale_factor=2.0)
    at = lambda ratio: Magnification(ratio * params.model_ruler_px)  # noqa: E731
    assert working_scale(at(1.25), params) == (params.model_px_per_um, None)
    assert working_scale(at(0.8), params) == (params.model_px_per_um, None)
    assert working_scale(at(2.0), params) == (params.model_px_per_um * 2.0, None)
    assert working_scale(at(0.5), params) == (params.model_px_per_um * 0.5, None)
    px, refused = working_scale(at(2.5), params)
    assert px == params.model_px_per_um * 2.5 and "2.5 times" in str(refused)


def test_a_cell_is_read_in_one_to_eight_orientations():
    assert CellParams(views=8).views == 8 and CellParams().views == 1
    for views in (0, 9):
        with pytest.raises(ValueError, match="1 to 8 orientations"):
            CellParams(views=views)


@pytest.mark.parametrize("path", sample_paths()[::3], ids=lambda p: p.name)
def test_a_field_without_white_cells_has_none(path):
    """Every stained object inpainted away (the leukocyte-free shortcut field): no cells."""
    from edge.analysis.segmentation import SegmentationParams

    field = load_field(path, "x", SegmentationParams())
    _, _, _, refused, cells, _ = _cells(without_cells(field))
    assert refused is None and cells == []


def test_crops_take_the_stain_away_and_keep_nothing_of_the_surroundings():
    path = next(p for p in sample_paths() if "Early-703" in p.name)
    field, _, px_per_um, _, cells, labels = _cells(read_rgb(path))
    crops = cut_cells(field, labels, cells, px_per_um)
    first, second = model_inputs(crops)
    assert first.shape == second.shape == (len(cells), 96, 96, 3)
    assert (first[..., 0] == first[..., 1]).all() and (first[..., 1] == first[..., 2]).all()  # grey
    assert (first[~crops.near] == 255).all() and (second[~crops.own] == 0).all()  # surroundings neutral
    # a restained cell (hue moved, stain darker) gives nearly the same input
    restained = CellCrops(np.clip(crops.rgb.astype(np.float32)[..., ::-1] * 0.85, 0, 255).astype(np.uint8),
                          crops.own, crops.near)
    moved = np.abs(model_inputs(restained)[0].astype(int) - first.astype(int))[crops.near].mean()
    assert moved < 25, moved


def test_pooling_lets_many_cells_outweigh_one():
    cells = np.array([[0.1, 0.7, 0.1, 0.1]] * 5 + [[0.97, 0.01, 0.01, 0.01]])
    assert int(np.argmax(pool(cells))) == 1 and abs(pool(cells).sum() - 1) < 1e-9


def test_the_histogram_percentile_is_numpys_linear_percentile():
    """The ruler reads its two order statistics off 8-bit histograms for speed; they must be
    what ``np.percentile`` gives, for odd and even counts and ties."""
    from edge.analysis.histogram import percentile_u8 as _percentile_u8

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 11, 1000, 50176):
        values = rng.integers(0, 256, n).astype(np.uint8) if n % 2 else rng.integers(100, 104, n).astype(np.uint8)
        for q in (0.0, 50.0, 90.0, 100.0):
            assert _percentile_u8(np.bincount(values, minlength=256), q) == pytest.approx(np.percentile(values, q))


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_the_ruler_is_its_plain_definition(path):
    """The ruler as its docstring defines it, written with numpy's percentiles: the darkness
    below the field's 90th lightness percentile, the white cells and a 3 px rim set to the
    median darkness of the rest, the slow shading taken away, and the first lag at which the
    directional autocorrelation falls below ``RULER_LEVEL``, interpolated."""
    from edge.analysis.cells import RULER_LEVEL, _radial_autocorrelation, _slow_shading

    rgb = normalise(read_rgb(path)).rgb
    stained = segment(rgb).mask
    lightness = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0], (3, 3), 0).astype(np.float64)
    rim = cv2.dilate(stained.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    bright = np.percentile(lightness, 90)
    darkness = np.clip(bright - lightness, 0, None)
    darkness[rim] = max(bright - np.median(lightness[~rim]), 0.0)
    darkness = darkness.astype(np.float32)
    darkness -= _slow_shading(darkness)
    profile = _radial_autocorrelation(darkness)
    k = int(np.argmax(profile < RULER_LEVEL))
    assert k > 0
    want = k - 1 + (profile[k - 1] - RULER_LEVEL) / (profile[k - 1] - profile[k])
    assert measure_magnification(rgb, stained).ruler_px == pytest.approx(want, abs=1e-6)


@pytest.mark.filterwarnings("error")  # refused up front, not through a 0/0 autocorrelation
def test_a_field_with_no_texture_has_no_ruler():
    """A blank or barely textured field, or one stained all over, has no ruler. (A field
    stained all over is refused by either of two guards; this cannot tell which.)"""
    from edge.analysis.cells import Magnification

    blank = np.full((224, 224, 3), 200, np.uint8)
    assert measure_magnification(blank, np.zeros((224, 224), bool)) == Magnification(None)
    faint = blank.copy()
    faint[::2] = 201  # one grey level of texture: below what the ruler reads as red cells
    assert measure_magnification(faint, np.zeros((224, 224), bool)) == Magnification(None)
    covered = np.ones((224, 224), bool)  # every pixel stained: nothing left to measure by
    assert measure_magnification(read_rgb(sample_paths()[0]), covered) == Magnification(None)


@pytest.mark.parametrize("path", sample_paths()[::3], ids=lambda p: p.name)
def test_the_ruler_is_the_autocorrelation_of_the_whole_zero_padded_field(path):
    """The short-padded, windowed autocorrelation gives the directional average of the plain
    definition: the field zero-padded to twice its side, every lag averaged by whole radius."""
    from edge.analysis.cells import MAX_RULER_PX, _radial_autocorrelation

    image = cv2.cvtColor(normalise(read_rgb(path)).rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    image -= cv2.GaussianBlur(image, (0, 0), 24.0)
    h, w = image.shape
    auto = np.fft.fftshift(np.fft.irfft2(np.abs(np.fft.rfft2(image, s=(2 * h, 2 * w))) ** 2, s=(2 * h, 2 * w)))
    yy, xx = np.indices(auto.shape)
    radius = np.hypot(yy - h, xx - w).astype(np.int64).ravel()
    plain = (np.bincount(radius, auto.ravel()) / np.maximum(np.bincount(radius), 1))[:MAX_RULER_PX]
    np.testing.assert_allclose(_radial_autocorrelation(image), plain / plain[0], atol=1e-6)


@pytest.mark.parametrize("path", sample_paths()[::2], ids=lambda p: p.name)
def test_the_subsampled_shading_reads_the_ruler_of_the_full_blur(path, monkeypatch):
    """The slow shading is blurred at a quarter of the resolution for speed: the ruler it
    gives must be the one the full-resolution Gaussian gives, to a small part of a pixel."""
    import edge.analysis.cells as cells_module

    field = normalise(read_rgb(path)).rgb
    mask = segment(field).mask
    fast = measure_magnification(field, mask).ruler_px
    monkeypatch.setattr(cells_module, "_slow_shading",
                        lambda image: cv2.GaussianBlur(image, (0, 0), cells_module.RULER_HIGHPASS_PX))
    full = measure_magnification(field, mask).ruler_px
    assert fast is not None and full is not None
    assert abs(fast - full) < 0.1, (fast, full)


@pytest.mark.parametrize("path", sample_paths()[::3], ids=lambda p: p.name)
def test_crops_and_inputs_are_their_plain_definitions(path):
    """Each crop's own mask is the warped mask of its label alone, and input 1 is the grey crop
    stretched between the 2nd and 98th percentiles (``np.percentile``) of the cell and its
    rim: the fast paths (one warp of the label image, histogram percentiles) give the same
    inputs, to one grey level of rounding."""
    field, _, px_per_um, refused, cells, labels = _cells(read_rgb(path))
    assert refused is None and cells
    crops = cut_cells(field, labels, cells, px_per_um)
    first, second = model_inputs(crops)
    side, half = crops.rgb.shape[1], 0.5 * CellParams().crop_um * px_per_um
    scale = side / (2 * half)
    for i, cell in enumerate(cells):
        cx, cy = cell.centre
        m = np.array([[scale, 0, side / 2 - scale * cx], [0, scale, side / 2 - scale * cy]], np.float32)
        own = cv2.warpAffine((labels == i + 1).astype(np.uint8), m, (side, side), flags=cv2.INTER_NEAREST) > 0
        np.testing.assert_array_equal(crops.own[i], own)
        grey = cv2.cvtColor(crops.rgb[i], cv2.COLOR_RGB2GRAY).astype(np.float64)
        low, high = np.percentile(grey[crops.near[i]], (2.0, 98.0))
        plain = np.clip((grey - low) * (255.0 / max(high - low, 8.0)), 0, 255).astype(np.uint8)
        expected = np.where(crops.near[i], plain, 255)
        assert np.abs(first[i, ..., 0].astype(int) - expected).max() <= 1
        assert (first[i, ..., 0] != expected).mean() < 0.01
        assert np.array_equal(second[i, ..., 0] > 0, crops.own[i] & (plain > 0))


@pytest.mark.parametrize("shape", ["ellipse", "disc"])
@pytest.mark.parametrize("size", [1, 3, 9, 17, 23, 31, 45])
def test_the_disc_dilation_is_opencvs_dilation_by_the_element(size, shape):
    """Touching nuclei are split at the distance map's local maxima over a disc; the union of
    rectangles must give exactly what OpenCV's dilation by the segmentation's element gives,
    on a real field's map."""
    from edge.analysis.cells import dilate_disc
    from edge.analysis.morphology import element

    field = normalise(read_rgb(sample_paths()[2])).rgb
    distance = cv2.distanceTransform(segment(field).mask.astype(np.uint8), cv2.DIST_L2, 5)
    expected = cv2.dilate(distance, element(shape, size))
    np.testing.assert_array_equal(dilate_disc(distance, size, shape), expected)


def _stained(mask: np.ndarray):
    from edge.analysis.segmentation import Segmentation

    rgb = np.full((*mask.shape, 3), 230, np.uint8)
    return Segmentation(mask=mask, segmented=np.where(mask[..., None], rgb, 0).astype(np.uint8),
                        cell_count=1, area_fraction=float(mask.mean()), threshold=140, reason=None)


def test_touching_cells_are_split_and_what_is_not_a_cell_is_left_out():
    """Two nuclei that touch give two cells, each centred on its own; a platelet (under
    5 um), a cell mostly outside the field and a clump (over 28 um) give none."""
    params = CellParams()
    px = params.model_px_per_um
    mask = np.zeros((224, 224), np.uint8)
    cv2.circle(mask, (80, 60), 12, 1, -1)  # two 10.6 um nuclei, 22 px apart: touching
    cv2.circle(mask, (102, 60), 12, 1, -1)
    cv2.circle(mask, (180, 60), 5, 1, -1)  # 4.8 um: a platelet (or a clump of them)
    cv2.circle(mask, (3, 160), 12, 1, -1)  # 60% of its crop outside the field
    cv2.circle(mask, (140, 160), 14, 1, -1)  # one cell alone
    cells, labels = detect_cells(_stained(mask > 0), px, params)
    centres = sorted((round(c.centre[0]), round(c.centre[1])) for c in cells)
    assert len(cells) == 3, centres
    for (x, y), (ex, ey) in zip(centres, [(80, 60), (102, 60), (140, 160)]):
        assert abs(x - ex) <= 3 and abs(y - ey) <= 2, centres
    lone = next(c for c in cells if c.centre[1] > 100)
    # the watershed's dividing line takes the object's outermost pixels, the same in training
    disc = np.zeros_like(mask)
    cv2.circle(disc, (140, 160), 14, 1, -1)
    assert 0.75 * disc.sum() <= lone.area_px <= disc.sum() and lone.area_px == int((labels == cells.index(lone) + 1).sum())
    assert abs(lone.diameter_um - 2 * np.sqrt(disc.sum() / np.pi) / px) < 1.0
    pair = [c for c in cells if c.centre[1] < 100]
    assert abs(pair[0].area_px - pair[1].area_px) < 0.1 * pair[0].area_px  # split down the middle
    clump = np.zeros((224, 224), np.uint8)
    cv2.circle(clump, (112, 112), 70, 1, -1)  # 62 um across
    assert detect_cells(_stained(clump > 0), px, params)[0] == []


def test_the_differential_reads_as_the_four_labels_without_what_is_not_a_white_cell():
    from edge.analysis.cells import four_class
    from edge.analysis.labels import DIFFERENTIAL, LABELS

    p = np.zeros((2, len(DIFFERENTIAL)))
    p[0, DIFFERENTIAL.index("neutrophil")], p[0, DIFFERENTIAL.index("pre_b")] = 0.5, 0.3
    p[0, DIFFERENTIAL.index("not_a_white_cell")] = 0.2
    p[1, DIFFERENTIAL.index("benign")], p[1, DIFFERENTIAL.index("ig")] = 0.4, 0.6
    four = four_class(p, DIFFERENTIAL)
    assert four.shape == (2, 4)
    np.testing.assert_allclose(four[0], [0.625, 0, 0.375, 0])  # neutrophil is benign; the platelet share left out
    np.testing.assert_allclose(four[1], [1, 0, 0, 0])
    same = np.random.default_rng(0).dirichlet(np.ones(4), 3)
    assert four_class(same, LABELS) is not None and np.array_equal(four_class(same, LABELS), same)


def test_a_cell_read_as_not_a_white_cell_is_never_counted():
    from edge.analysis.cells import Cell, CellCall
    from edge.analysis.result import Result

    def call(label, familiar=True):
        return CellCall(Cell(0, 0, 5, 5, 20, 8.0, (2.0, 2.0)), label, {label: 0.9}, 1.0, familiar)

    cells = [call("pre_b"), call("neutrophil"), call("not_a_white_cell"), call("benign"), call("pro_b", familiar=False)]
    result = Result.__new__(Result)
    result.cells = cells
    assert result.white_cells == 3 and result.blasts == 1  # a neutrophil is no blast; the platelet and the stranger not counted


def test_a_differentials_field_is_its_share_of_blasts_and_one_normal_cell_vetoes_nothing():
    from edge.analysis.cells import pool, pool_share

    blast, neutrophil = [0.02, 0.03, 0.93, 0.02], [0.999998, 0.000001, 0.0000005, 0.0000005]
    cells = np.array([blast] * 4 + [neutrophil])
    share = pool_share(cells)
    assert share[0] == pytest.approx((4 * 0.02 + 0.999998) / 5) and 1 - share[0] > 0.75  # 4 of 5 cells blasts
    assert pool(cells)[0] > 1.5 * share[0]  # the geometric mean: the one neutrophil nearly doubles "benign"


def _boxes_overlapping(cells, share: float = 0.5) -> list[tuple[int, int]]:
    """Pairs of cells whose boxes overlap by at least ``share`` of the smaller box."""
    out = []
    for i, a in enumerate(cells):
        for j, b in enumerate(cells[i + 1:], i + 1):
            iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
            ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
            if iy > 0 and ix > 0 and iy * ix >= share * min(a.w * a.h, b.w * b.h):
                out.append((i, j))
    return out


def test_on_a_real_clump_each_box_holds_one_nucleus_when_cut_by_nearest_core():
    """Issue 32, one cell one vote: on the shipped Pre-B sample the watershed hands a cell's
    rim to its neighbour, so one box spans two touching cells and holds a second box (two
    votes for one cell, half a vote for another). Cut by nearest core, no box holds another
    and the pair under it is two boxes, one per nucleus; no other sample field loses a cell."""
    from edge.model.bundle import default_bundle_path, load_bundle

    bundle = load_bundle(default_bundle_path())
    params = bundle.cells
    assert params is not None and params.partition == "watershed"  # the shipped bundle: as it was calibrated
    nearest = dataclasses.replace(params, partition="nearest_core")
    for path in sample_paths():
        field = normalise(read_rgb(path)).rgb
        seg = segment(field, bundle.segmentation)
        px_per_um, reason = working_scale(measure_magnification(field, seg.mask, bundle.segmentation.element), params)
        assert reason is None
        before, _ = detect_cells(seg, px_per_um, params)
        after, labels = detect_cells(seg, px_per_um, nearest)
        assert _boxes_overlapping(after) == [], path.name
        assert len(after) >= len(before), path.name
        for k, cell in enumerate(after, 1):  # each cell's centre lies on its own pixels: a compact region
            cx, cy = (int(round(v)) for v in cell.centre)
            assert labels[cy, cx] == k, (path.name, k)
        if "Pre-375" in path.name:
            assert len(_boxes_overlapping(before)) == 2  # the defect, as the watershed cuts it
    with pytest.raises(ValueError, match="partition"):
        CellParams(partition="kmeans")
