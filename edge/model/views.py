"""One cell read in several orientations, and the views' outputs made one call.

A white cell on a smear has no up, down, left or right: how the camera sits on the eyepiece
and how the slide lies on the stage turn and mirror every cell. The model was trained with
rotations and flips, but a network is only roughly invariant to them, so the same cell turned
by 90 degrees can get a different call. Reading it in the eight orientations of a square (the
dihedral group: four rotations, each mirrored or not) and taking the geometric mean of the
views' probabilities with the rule that pools a field's cells (``edge.analysis.cells.pool``),
gives every orientation of a cell the same call. The bundle records how many views its
calibration was fitted with (``CellParams.views``): a bundle fitted on one view is read on
one view.

The embedding the out-of-distribution check measures is the upright view's alone: the check
was fitted on single views (``converter.cell_build``), and a mean over views would be drawn
toward the training cells' centre and pass what the fitted limit would refuse.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edge.analysis.cells import pool
from edge.model.inference import Inference

#: The eight symmetries of a square, the upright view first.
DIHEDRAL = 8


def oriented(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the square's eight symmetries of an HxWxC image (0: as it is;
    1-3: turned by 90, 180, 270 degrees; 4-7: the same, mirrored left to right)."""
    if not 0 <= k < DIHEDRAL:
        raise ValueError(f"view {k}: a square has {DIHEDRAL} orientations (0-{DIHEDRAL - 1})")
    turned = np.rot90(image, k % 4, axes=(0, 1))
    return np.ascontiguousarray(turned[:, ::-1] if k >= 4 else turned)


def combine(outputs: list[Inference]) -> Inference:
    """The views' outputs as one: the renormalised geometric mean of their probabilities and
    the upright view's embedding."""
    if not outputs:
        raise ValueError("no views to combine")
    if len(outputs) == 1:
        return outputs[0]
    pooled = pool(np.stack([o.probabilities for o in outputs]))  # the rule that pools a field's cells
    return Inference(pooled.astype(np.float32), outputs[0].embedding)


def read_cell(infer: Callable[[np.ndarray, np.ndarray], tuple[Inference, str, float]], first: np.ndarray,
              second: np.ndarray, views: int) -> tuple[Inference, str, float]:
    """One cell's outputs over ``views`` orientations of both inputs (``infer`` is
    ``BackendManager.infer``): the combined outputs, the last view's backend and the summed
    inference time (ms)."""
    outputs, backend, total = [], "cpu", 0.0
    for k in range(views):
        out, backend, ms = infer(oriented(first, k), oriented(second, k))
        outputs.append(out)
        total += ms
    return combine(outputs), backend, total


def read_cell_batched(infer_views: Callable[[np.ndarray, np.ndarray], tuple[list[Inference], str, float]],
                      first: np.ndarray, second: np.ndarray, views: int) -> tuple[Inference, str, float]:
    """``read_cell`` with the views handed over together (``BackendManager.infer_views``): one
    invocation a cell on the CPU instead of ``views``; the same outputs."""
    if views == 1:
        outputs, backend, total = infer_views(first[None], second[None])
        return outputs[0], backend, total
    firsts = np.stack([oriented(first, k) for k in range(views)])
    seconds = np.stack([oriented(second, k) for k in range(views)])
    outputs, backend, total = infer_views(firsts, seconds)
    return combine(outputs), backend, total
