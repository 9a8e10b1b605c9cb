"""The device cuts cells with the structuring element its bundle records
(``segmentation.element``): a model learns the masks it was trained on. With the shipped int8
model on the CPU and a real sample field."""

from __future__ import annotations

import numpy as np

from edge.analysis.imagefile import read_rgb
from edge.model.bundle import load_bundle
from edge.model.reference import cell_crops
from edge.model.signing import Trust
from edge.model.views import read_cell
from edge.pipeline import Pipeline

from conftest import resign, sample_paths


def test_the_pipeline_cuts_cells_with_the_element_its_bundle_records(bundle_copy, test_key):
    shipped = load_bundle(bundle_copy)
    frame = read_rgb(sample_paths()[0])
    elliptic = cell_crops(shipped, frame)
    resign(bundle_copy, test_key[0], segmentation={**shipped.manifest["segmentation"], "element": "disc"})
    bundle = load_bundle(bundle_copy, Trust((test_key[1],)))
    assert bundle.segmentation.element == "disc" and shipped.segmentation.element == "ellipse"
    first, second = cell_crops(bundle, frame)
    # the disc changes the cells' masks and rims, so the inputs differ from the ellipse's
    assert len(first) != len(elliptic[0]) or not np.array_equal(second, elliptic[1])
    pipeline = Pipeline.on_cpu(bundle, threads=1).reading_views("all")  # every view, as read_cell reads
    result = pipeline.process(frame)
    assert result.cells and len(result.cells) == len(first)
    for call, a, b in zip(result.cells, first, second):
        want = read_cell(pipeline.backends.infer, a, b, bundle.cells.views)[0].probabilities
        assert np.allclose(np.array(list(call.probabilities.values())), want, atol=1e-5)
