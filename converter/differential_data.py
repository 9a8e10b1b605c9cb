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

from pathlib import Path
from typing import Callable

import numpy as np

from edge.analysis.cells import CellParams
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import DIFFERENTIAL
from edge.analysis.segmentation import SegmentationParams
from edge.evaluation.pbc import PBC_CLASSES, PBC_PX_PER_UM, centre_cell, degrade, pbc_files, pbc_split

from converter.cell_data import CellSet

__all__ = ["DIFF_LABELS", "PBC_CLASSES", "extract_pbc", "merge", "pbc_files", "pbc_split"]

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
                   np.concatenate([s.rbc_px for s in sets]), [r for s in sets for r in s.refused])
