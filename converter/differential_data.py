"""Cells of two sites for the differential (issue 32), cut as the device cuts them.

- ``all-pbs-224`` (Taleqani, labelled per field): every white cell of a field inherits the
  field's class as a weak label, as for the 4-class cell model (``converter.cell_data``): a
  benign field's cells are benign lymphoid cells (hematogones), a malignant field's cells are
  blasts of its subtype. A malignant field's odd neutrophil is then a noisy blast label; the
  normal classes from the second site give the model somewhere else to put it, and label
  smoothing keeps it from being certain.
- ``pbc-normal`` (Barcelona, CellaVision, labelled per cell, one centred cell per image): each
  image measured to the model's scale, degraded to the first site's resolution and compression
  and cut by the device's own detector (``edge.evaluation.pbc``), split by image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from edge.analysis.cells import CellParams
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import DIFFERENTIAL
from edge.analysis.segmentation import SegmentationParams
from edge.evaluation.pbc import PBC_CLASSES, PBC_PX_PER_UM, centre_cell, degrade, pbc_files, pbc_split

from converter.cell_data import CellSet

__all__ = ["DIFF_LABELS", "PBC_CLASSES", "PSEUDO_CLASSES", "SHARES", "SHARES_V3", "SHARE_PRESETS", "draw_weights", "extract_pbc", "merge", "pbc_files",
           "pbc_split", "pseudo_label"]

#: The differential's output order (``edge.analysis.labels.DIFFERENTIAL``): the 4-class cell
#: model's labels first.
DIFF_LABELS: tuple[str, ...] = DIFFERENTIAL
def extract_pbc(files: list[tuple[Path, str, str]], seg: SegmentationParams, params: CellParams,
                log: Callable[[str], None] = print) -> CellSet:
    """One cell per image (where the device's detector finds it), each image one "field"
    whose label is the cell's class (index into ``DIFF_LABELS``)."""
    rgb, own, near, field, keys, labels, refused = [], [], [], [], [], [], []
    for n, (path, label, _) in enumerate(files):
        key = f"pbc/{path.parent.name}/{path.name}"
        image = degrade(read_rgb(path), PBC_PX_PER_UM, params.model_px_per_um)
        crops = centre_cell(image, seg, params, platelet=label == "not_a_white_cell")
        keys.append(key)
        labels.append(DIFF_LABELS.index(label))
        if crops is None:
            refused.append((key, "no cell found at the centre"))
        else:
            rgb.append(crops.rgb)
            own.append(crops.own)
            near.append(crops.near)
            field.append(len(keys) - 1)
        if (n + 1) % 2000 == 0:
            log(f"pbc cells: {n + 1}/{len(files)} images, {len(field)} cells")
    side = params.crop_px
    return CellSet(np.concatenate(rgb) if rgb else np.zeros((0, side, side, 3), np.uint8),
                   np.concatenate(own) if own else np.zeros((0, side, side), bool),
                   np.concatenate(near) if near else np.zeros((0, side, side), bool),
                   np.asarray(field, np.int64), keys, np.asarray(labels, np.int64),
                   np.full(len(keys), np.nan), refused)


def merge(*sets: CellSet) -> CellSet:
    """One ``CellSet`` of several (fields renumbered); labels must share one label order."""
    offset, fields = 0, []
    for s in sets:
        fields.append(s.field + offset)
        offset += len(s.keys)
    return CellSet(np.concatenate([s.rgb for s in sets]), np.concatenate([s.own for s in sets]),
                   np.concatenate([s.near for s in sets]), np.concatenate(fields),
                   [k for s in sets for k in s.keys], np.concatenate([s.field_labels for s in sets]),
                   np.concatenate([s.rbc_px for s in sets]), [r for s in sets for r in s.refused],
                   np.concatenate([s.labels for s in sets]) if any(s.cell_labels is not None for s in sets) else None)


#: Classes a cell of an all-pbs-224 field may be pseudo-labelled with: a malignant field's
#: neutrophil or platelet is not a blast, and a benign field's is not a hematogone. Benign
#: lymphoid is left out on purpose: a lymphocyte against a blast is the very call the field
#: rests on, and a model trained on weak labels is no judge of it.
PSEUDO_CLASSES: tuple[str, ...] = ("neutrophil", "monocyte", "eosinophil", "basophil", "ig", "erythroblast",
                                   "not_a_white_cell")


def pseudo_label(cells: CellSet, probs: np.ndarray, threshold: float) -> tuple[CellSet, dict[str, int]]:
    """The cells with a cell label where an earlier model reads a non-lymphoid class with at
    least ``threshold`` probability (``probs``: its 11 outputs per cell), and how many cells
    each class took. The field labels are untouched, so a field's call is still judged on
    its own label."""
    labels = cells.labels.copy()
    taken: dict[str, int] = {}
    for name in PSEUDO_CLASSES:
        k = DIFF_LABELS.index(name)
        sel = (probs[:, k] >= threshold) & (labels != k)
        labels[sel] = k
        taken[name] = int(sel.sum())
    return dataclasses.replace(cells, cell_labels=labels), taken


def draw_weights(allpbs: CellSet, pbc: CellSet, shares: dict[str, float]) -> np.ndarray:
    """How often each cell of ``merge(allpbs, pbc)`` is drawn, so that each group of
    ``shares`` gets its share of a batch: ``"allpbs:benign"`` and ``"pbc:benign"`` split
    the benign lymphoid class by site (the field call rests on the first site's
    hematogones, not the second's lymphocytes); any other key is a class of both sites.
    A group with no cells gives its share to the rest."""
    site = np.concatenate([np.zeros(len(allpbs.labels), int), np.ones(len(pbc.labels), int)])
    labels = np.concatenate([allpbs.labels, pbc.labels])
    benign = DIFF_LABELS.index("benign")
    weights = np.zeros(len(labels))
    for key, share in shares.items():
        if key.startswith(("allpbs:", "pbc:")):
            where, name = key.split(":")
            sel = (site == (where == "pbc")) & (labels == DIFF_LABELS.index(name))
        else:
            k = DIFF_LABELS.index(key)
            if k == benign:
                raise ValueError("benign lymphoid is shared per site: use allpbs:benign and pbc:benign")
            sel = labels == k
        if sel.any():
            weights[sel] = share / sel.sum()
    if not weights.any():
        raise ValueError("no cell falls in any group of the shares")
    return weights / weights.sum()


#: The second training's batch shares: the first site's hematogones a fifth of every batch
#: (the first build gave them about a twentieth and called 36% of benign fields' cells blasts),
#: the blasts together about what the 4-class model gave them, the normal classes the rest.
SHARES: dict[str, float] = {"allpbs:benign": 0.20, "pbc:benign": 0.05, "early_pre_b": 0.09, "pre_b": 0.09,
                            "pro_b": 0.09, **{name: 0.48 / 7 for name in PSEUDO_CLASSES}}

#: The third training's shares (started from the second): the first site a larger part of every
#: batch (hematogones a quarter, each blast subtype 11%), because the second build, chosen on
#: validation, still read the first site's fields worse than the 4-class model (benign
#: specificity 53.1% against 62.5%) while its normal classes were at 92.9%.
SHARES_V3: dict[str, float] = {"allpbs:benign": 0.25, "pbc:benign": 0.05, "early_pre_b": 0.11, "pre_b": 0.11,
                               "pro_b": 0.11, **{name: 0.37 / 7 for name in PSEUDO_CLASSES}}
#: The presets ``python -m converter.differential_train --shares`` chooses from.
SHARE_PRESETS: dict[str, dict[str, float]] = {"v2": SHARES, "v3": SHARES_V3}
