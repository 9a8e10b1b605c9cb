"""What one analysed field produced: the record that is stored, served and shown."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.analysis.cells import CellCall
from edge.analysis.fieldofview import FieldOfView
from edge.analysis.labels import DISPLAY_NAMES, is_blast
from edge.analysis.quality import Quality
from edge.analysis.screening import Screening
from edge.analysis.segmentation import Segmentation

DISCLAIMER = "Screening aid, not a diagnosis: confirm every result with a hematologist."


@dataclass
class Result:
    status: str  # "classified" | "rejected"
    reasons: list[str]  # why a field was rejected, in words a technician can act on
    screening: Screening | None
    quality: Quality
    segmentation: Segmentation
    field_rgb: np.ndarray  # the 224x224 field the model saw
    raw_probabilities: np.ndarray | None
    backend: str | None  # None when the field never reached the model
    model_id: str
    source: str
    timings_ms: dict[str, float]
    field_of_view: FieldOfView | None = None
    #: A cell bundle's reading, cell by cell (None for a field bundle or a field rejected
    #: before its cells were read); ``ruler_px`` is the magnification ruler (``edge.analysis.cells``).
    cells: list[CellCall] | None = None
    ruler_px: float | None = None
    #: The median of the cells' appearance distances, when the bundle has that check.
    appearance_distance: float | None = None
    #: Whether the device was verified on the clinic's own slides when it read this field, in
    #: words ("not verified at this site"); set by the device as it stores the field.
    site_verification: str | None = None
    #: Where a hands-free scan took this field on the slide: (x, y, side) in frame pixels from
    #: the scan's first frame; None for a field taken by hand. The case report draws its map.
    stage_position: tuple[float, float, float] | None = None
    #: How many cell views the model read for this field (``edge.model.views``): what adaptive
    #: reading saved; None where no cell was read. Not stored: a figure of the reading, not a result.
    views_read: int | None = None
    created: float = field(default_factory=time.time)
    id: int | None = None

    @property
    def classified(self) -> bool:
        return self.status == "classified"

    @property
    def white_cells(self) -> int | None:
        """The recognised white cells, the ones the field's call is pooled from (None for a
        field bundle, or a field refused before its cells were read)."""
        return None if self.cells is None else sum(c.counted for c in self.cells)

    @property
    def blasts(self) -> int | None:
        """The recognised white cells called blasts (None where ``white_cells`` is None)."""
        return None if self.cells is None else sum(c.counted and is_blast(c.label) for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "status": self.status,
            "classified": self.classified,
            "reasons": self.reasons,
            "source": self.source,
            "backend": self.backend,
            "model_id": self.model_id,
            "quality": self.quality.to_dict(),
            "cell_count": self.segmentation.cell_count,
            "area_fraction": round(self.segmentation.area_fraction, 4),
            "field_of_view": None if self.field_of_view is None else list(self.field_of_view.box),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "disclaimer": DISCLAIMER,
            "revision": 0,  # a new record; the store counts its reviews and exclusions from here
        }
        if self.cells is not None:
            out["cells"] = [c.to_dict() for c in self.cells]
            out["cell_count"] = len(self.cells)
            out["white_cells"] = self.white_cells
            out["blasts"] = self.blasts
            out["unfamiliar_cells"] = sum(not c.familiar for c in self.cells)
            out["not_white_cells"] = sum(c.familiar and not c.counted for c in self.cells)
            # the differential: the counted cells by class, as a hematologist counts them
            out["differential"] = dict(sorted(Counter(c.label for c in self.cells if c.counted).items()))
        if self.ruler_px is not None:
            out["ruler_px"] = round(self.ruler_px, 1)
        if self.appearance_distance is not None:
            out["appearance_distance"] = round(self.appearance_distance, 2)
        if self.site_verification is not None:
            out["site_verification"] = self.site_verification
        if self.stage_position is not None:
            out["stage_position"] = [round(v, 1) for v in self.stage_position]
        if self.screening is not None:
            out.update(self.screening.to_dict())
            out["label_name"] = DISPLAY_NAMES.get(self.screening.label, "Uncertain: review this field")
        return out
