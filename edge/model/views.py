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

Reading every cell eight times costs eight times the compute (issue 36: 48 model invocations a
field on the Edge TPU, and most of the CPU time on a Pi). Most cells are read the same in every
orientation, so ``ViewReader`` reads every cell upright first, all of a field's cells in as few
invocations as the backend allows, then the other seven views only of the cells whose upright
read is not settled (its top class below ``SETTLED``); the pipeline asks for the rest when the
field's pooled score lies near an edge of the operating point (``edge.analysis.screening.
near_an_edge``) or the field is called positive, so a call that could turn on a view, and a
positive call's subtype hint and blast count, are read in all eight, as they were fitted.
``blastscope-edge evaluate --views all`` against the default reads the validation split both
ways and prints what changed.

The embedding the out-of-distribution check measures is the upright view's alone: the check
was fitted on single views (``converter.cell_build``), and a mean over views would be drawn
toward the training cells' centre and pass what the fitted limit would refuse.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edge.analysis.cells import four_class, pool
from edge.analysis.labels import BENIGN, LABELS
from edge.model.inference import Inference

#: The eight symmetries of a square, the upright view first.
DIHEDRAL = 8

#: A cell whose upright view reads it benign, or malignant, with at least this probability is read
#: once: what the field's call and the blast count read is that side, not the subtype (a hint). On
#: the shipped bundle's 416 validation fields (``evaluate --split val --compare-views``), 0.8 with
#: ``EDGE_MARGIN`` 0.5 changed no call and the blast count of 5 fields (2 once positive fields were
#: read in every view); 0.7 changed 26 counts, 0.9 none but read 26 views a field against 18.
SETTLED = 0.8

#: A field whose pooled malignant probability lies within this many log-odds of the threshold or
#: a band edge is read in every view. Without it one validation call of 416 changed; at 0.5 none
#: did, at a cost of about one view a field on average.
EDGE_MARGIN = 0.5

#: The most pairs handed to the CPU in one invocation: an interpreter is kept per batch size up to
#: this, so memory stays bounded whatever a field's cell count (a field of 13 cells is two).
MAX_BATCH = 8

#: How the pipeline reads a cell's views: "adaptive" (``ViewReader``, the default) or "all" (every
#: cell in every view the bundle records, as the calibration was fitted).
VIEW_POLICIES = ("adaptive", "all")


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


class ViewReader:
    """A field's cells read view by view as they are asked for, in batches of ``MAX_BATCH``.

    ``infer_views`` is ``BackendManager.infer_views`` (one invocation a batch on the CPU, one a
    pair on the Edge TPU). The upright views of every cell are read when the reader is made; the
    other views of the cells named to ``complete``. ``outputs()`` combines what each cell has."""

    def __init__(self, infer_views: Callable[[np.ndarray, np.ndarray], tuple[list[Inference], str, float]],
                 firsts: list[np.ndarray] | np.ndarray, seconds: list[np.ndarray] | np.ndarray, views: int,
                 cell_labels: tuple[str, ...] = LABELS) -> None:
        self._infer, self._firsts, self._seconds, self.views = infer_views, firsts, seconds, views
        self._labels = cell_labels
        self._read: list[list[Inference]] = [[] for _ in range(len(firsts))]
        self.backend, self.ms = "cpu", 0.0
        self._run([(i, 0) for i in range(len(firsts))])

    def _run(self, jobs: list[tuple[int, int]]) -> None:
        for start in range(0, len(jobs), MAX_BATCH):
            chunk = jobs[start:start + MAX_BATCH]
            firsts = np.stack([oriented(self._firsts[i], k) for i, k in chunk])
            seconds = np.stack([oriented(self._seconds[i], k) for i, k in chunk])
            outs, self.backend, ms = self._infer(firsts, seconds)
            self.ms += ms
            for (i, _), out in zip(chunk, outs):
                self._read[i].append(out)

    def complete(self, cells: list[int] | None = None) -> None:
        """Read every view not yet read of ``cells`` (None: of every cell)."""
        cells = list(range(len(self._read))) if cells is None else cells
        self._run([(i, k) for i in cells for k in range(len(self._read[i]), self.views)])

    def unsettled(self) -> list[int]:
        """The cells with one view read that read neither benign nor malignant at ``SETTLED``
        (over the four field labels; "not a white cell" left out, as the field's call does)."""
        out = []
        for i, read in enumerate(self._read):
            if len(read) < self.views:
                four = four_class(read[0].probabilities[None], self._labels)[0]
                benign = float(four[LABELS.index(BENIGN)] / max(float(four.sum()), 1e-9))
                if max(benign, 1.0 - benign) < SETTLED:
                    out.append(i)
        return out

    def views_read(self) -> int:
        return sum(len(read) for read in self._read)

    def outputs(self) -> list[Inference]:
        return [combine(read) for read in self._read]
