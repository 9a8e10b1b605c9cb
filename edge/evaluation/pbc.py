"""pbc-normal (issue 32): normal blood cells of a second site, one labelled cell per image, cut
as the device cuts a white cell.

Each image is brought to the model's scale by measurement (the dataset's README measured the
red cells at about 74 px in the 360 px originals, so 9.9 px/um there and 3.96 px/um in these
0.4x copies), then **degraded to the first site's resolution and compression**: resized to the
device's 2.27 px/um working scale and JPEG-compressed once, as the all-pbs-224 fields are, so
that sharpness and block noise cannot tell the sites apart. The device's own segmentation and
cell detector then find the cells, and the detected object nearest the image centre is the
labelled one. A platelet image is detected with the size floor lowered, so what the detector
boxes of a platelet clump on a real field is learnt as "not a white cell".

There are no patient identifiers: the split is by image (a hash of the file name), and
near-duplicate captures of one donor may fall on both sides. Every figure measured on it says
so. The converter trains on it (``converter.differential_data``); ``shortcuts`` measures the
site check on it (``edge.evaluation.site_check``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np

from edge.analysis.cells import CellCrops, CellParams, cut_cells, detect_cells
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import SegmentationParams, segment

#: pbc-normal folder -> differential class. Its lymphocytes join the benign lymphoid class
#: with the first site's hematogones: one class across both sites is what the site check asks.
PBC_CLASSES = {"lymphocyte": "benign", "neutrophil": "neutrophil", "monocyte": "monocyte",
               "eosinophil": "eosinophil", "basophil": "basophil", "ig": "ig",
               "erythroblast": "erythroblast", "platelet": "not_a_white_cell"}
#: Pixels per micrometre of the pbc-normal copies, from its README's red-cell measurement.
PBC_PX_PER_UM = 74.0 / 7.5 * 0.4
#: The JPEG quality the second site's cells are compressed at once they are at the first
#: site's resolution (the all-pbs-224 fields are JPEGs of about this quality).
DEGRADE_JPEG_QUALITY = 80


def pbc_split(name: str, val_fraction: float = 0.15, test_fraction: float = 0.15) -> str:
    """``train``/``val``/``test`` from a hash of the file name: by image, since the dataset
    has no patient identifiers (near-duplicates of one donor may straddle the split)."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def pbc_files(root: Path) -> list[tuple[Path, str, str]]:
    """(path, differential class, split) for every image of pbc-normal."""
    out = []
    for folder, label in PBC_CLASSES.items():
        for path in sorted((Path(root) / "images" / folder).glob("*.jpg")):
            out.append((path, label, pbc_split(path.name)))
    return out


def degrade(rgb: np.ndarray, px_per_um: float, target_px_per_um: float, quality: int = DEGRADE_JPEG_QUALITY) -> np.ndarray:
    """``rgb`` at ``target_px_per_um`` (area resampling) and JPEG-compressed once."""
    f = target_px_per_um / px_per_um
    small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded is not None  # OpenCV decodes what it has just encoded
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def centre_cell(rgb: np.ndarray, seg: SegmentationParams, params: CellParams,
                platelet: bool = False) -> CellCrops | None:
    """The device's cut of the object nearest the centre of a one-cell image already at
    ``params.model_px_per_um``: ``CellCrops`` of one cell, or None where nothing is found."""
    field = normalise(rgb).rgb
    segmentation = segment(field, seg)
    px = params.model_px_per_um
    detect_params = dataclasses.replace(params, min_cell_um=1.5) if platelet else params
    cells, label_image = detect_cells(segmentation, px, detect_params)
    if not cells:
        return None
    h, w = field.shape[:2]
    i = int(np.argmin([(c.centre[0] - w / 2) ** 2 + (c.centre[1] - h / 2) ** 2 for c in cells]))
    cx, cy = cells[i].centre
    if (cx - w / 2) ** 2 + (cy - h / 2) ** 2 > (4.0 * px) ** 2:  # nearest object over 4 um off centre
        return None
    return cut_cells(field, label_image, [cells[i]], px, params, seg.element)
