"""The structuring element (``edge.analysis.morphology``): the disc is the same under every
symmetry of the square and OpenCV's ellipse is not; a real field turned or mirrored gives the
turned or mirrored stain mask, exactly, when segmented with the disc; the element is a
segmentation parameter, recorded in the bundle, and bundles that do not name one keep the
ellipse they were trained with."""

from __future__ import annotations

import numpy as np
import pytest

from edge.analysis.imagefile import read_rgb
from edge.analysis.morphology import element
from edge.analysis.preprocess import field_and_segmentation
from edge.analysis.segmentation import SegmentationParams

from conftest import sample_paths

MOVES = {"quarter": lambda a: np.rot90(a), "half": lambda a: np.rot90(a, 2), "mirror": lambda a: a[:, ::-1],
         "transpose": lambda a: np.swapaxes(a, 0, 1)}


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 15, 31])
def test_the_disc_is_the_same_under_every_symmetry_of_the_square(size):
    disc = element("disc", size)
    assert disc.shape == (size, size) and disc.dtype == np.uint8
    for move in MOVES.values():
        assert np.array_equal(move(disc), disc)
    r = size // 2
    assert disc[r, 0] == disc[0, r] == disc[r, r] == 1  # it reaches the middle of every side
    assert size < 5 or disc[0, 0] == 0  # and is round, not a square


@pytest.mark.parametrize("size", [5, 7, 9, 15])
def test_opencvs_ellipse_is_not_the_same_turned(size):
    """Why the disc exists: the ellipse's transpose differs, so a turned field was cut differently."""
    ellipse = element("ellipse", size)
    assert not np.array_equal(ellipse.T, ellipse)


def test_an_element_has_a_known_shape_and_an_odd_side():
    for size in (0, 4):
        with pytest.raises(ValueError, match="odd side"):
            element("disc", size)
    with pytest.raises(ValueError, match="unknown structuring element 'square'"):
        element("square", 3)
    with pytest.raises(ValueError, match="unknown structuring element 'square'"):
        SegmentationParams(element="square")
    with pytest.raises(ValueError):
        element("disc", 3)[0, 0] = 1  # shared between calls, so not writable


def test_bundles_that_name_no_element_keep_the_ellipse():
    assert SegmentationParams.from_dict({"open_radius": 1}).element == "ellipse"
    assert SegmentationParams.from_dict({"element": "disc"}).element == "disc"


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
@pytest.mark.parametrize("move", list(MOVES))
def test_a_turned_field_gives_the_turned_stain_mask_with_the_disc(path, move):
    turn = MOVES[move]
    frame = read_rgb(path)
    params = SegmentationParams(element="disc")
    _, upright = field_and_segmentation(frame, params, 224)
    _, turned = field_and_segmentation(np.ascontiguousarray(turn(frame)), params, 224)
    assert upright.mask.any() and upright.element == "disc"
    np.testing.assert_array_equal(turned.mask, turn(upright.mask))


def test_with_the_ellipse_some_turned_sample_field_is_segmented_differently():
    """The same check with the ellipse fails on the samples, so the test above can fail."""
    differs = 0
    for path in sample_paths():
        frame = read_rgb(path)
        _, upright = field_and_segmentation(frame, SegmentationParams(), 224)
        _, turned = field_and_segmentation(np.ascontiguousarray(np.rot90(frame)), SegmentationParams(), 224)
        differs += not np.array_equal(turned.mask, np.rot90(upright.mask))
    assert differs > 0


def _ruler(frame: np.ndarray, shape: str) -> float:
    from edge.analysis.cells import measure_magnification

    field, seg = field_and_segmentation(np.ascontiguousarray(frame), SegmentationParams(element=shape), 224)
    ruler = measure_magnification(field, seg.mask, seg.element).ruler_px
    assert ruler is not None
    return ruler


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_the_red_cell_ruler_of_a_turned_field_is_the_same_with_the_disc(path):
    """The ruler's rim around the stained cells is grown with the segmentation's element too."""
    frame = read_rgb(path)
    upright = _ruler(frame, "disc")
    for move in MOVES.values():
        assert _ruler(move(frame), "disc") == pytest.approx(upright, abs=1e-6)


def test_with_the_ellipse_the_ruler_of_a_turned_sample_field_moves():
    moved = [abs(_ruler(np.rot90(read_rgb(p)), "ellipse") - _ruler(read_rgb(p), "ellipse")) for p in sample_paths()]
    assert max(moved) > 1e-3
