"""Colour and exposure normalisation on real fields: casts and exposure changes that made the
device reject fields as "no cells" or shift its calls come back to one background."""

from __future__ import annotations

import numpy as np

from edge.analysis.imagefile import read_rgb
from edge.evaluation.degradation import gain
from edge.analysis.normalisation import MAX_GAIN, MIN_GAIN, TARGET_LEVEL, background_colour, normalise
from edge.analysis.segmentation import SegmentationParams, segment

from conftest import sample_paths

CASTS = {"warm": (1.12, 1.0, 0.85), "cool": (0.88, 1.0, 1.15), "green": (0.92, 1.08, 0.92), "dim": (0.75, 0.75, 0.75)}


def test_background_is_brought_to_one_neutral_level():
    for path in sample_paths():
        out = normalise(read_rgb(path))
        assert np.all(np.abs(background_colour(out.rgb) - TARGET_LEVEL) <= 3), path.name


def test_colour_casts_and_a_dimmer_lamp_are_undone():
    for path in sample_paths():
        field = read_rgb(path)
        reference = normalise(field).rgb.astype(np.float32)
        for name, gains in CASTS.items():
            cast = gain(field, *gains)
            before = np.abs(cast.astype(np.float32) - field).mean()
            after = np.abs(normalise(cast).rgb - reference).mean()
            assert after < 5 and after < before / 3, (path.name, name, before, after)


def test_segmentation_finds_the_cells_through_a_cast():
    """Warm and cool casts gave false "no cells" rejections; after normalisation the cells are
    found and the mask barely moves."""
    params = SegmentationParams()
    for path in sample_paths():
        field = read_rgb(path)
        reference = segment(normalise(field).rgb, params).mask
        for name in ("warm", "cool"):
            mask = segment(normalise(gain(field, *CASTS[name])).rgb, params).mask
            assert mask.any(), (path.name, name)
            overlap = (mask & reference).sum() / max((mask | reference).sum(), 1)
            assert overlap > 0.8, (path.name, name, overlap)


def test_the_lookup_table_is_the_per_pixel_gain():
    """The gains go through a lookup table for speed: every pixel must come out as scaling
    it by its channel's gain (rounded, clipped) does, on a real field with a colour cast."""
    rgb = np.clip(read_rgb(sample_paths()[0]).astype(np.float32) * [0.8, 0.95, 0.7], 0, 255).astype(np.uint8)
    result = normalise(rgb)
    gains = np.clip(TARGET_LEVEL / np.maximum(background_colour(rgb), 1.0), MIN_GAIN, MAX_GAIN)
    expected = np.clip(rgb.astype(np.float32) * gains.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(result.rgb, expected)
