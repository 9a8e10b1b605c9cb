"""Every field read twice, every view against adaptive views (``edge.model.views``), through the
device pipeline on the same backends: what reading fewer views changes.

Why: the calibration, band and case rule were fitted on cells read in all eight orientations.
Reading a cell once when its upright read is settled, and a field in every view only near an
edge of the operating point, must leave the calls as they were; this says whether it does, and
what it saves (views read and invocations per field). ``blastscope-edge evaluate --compare-views``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN
from edge.pipeline import Pipeline


@dataclass(frozen=True)
class Change:
    """One field whose reading differs between the two ways."""

    key: str
    label: str
    all_views: str  # the call (or "rejected") read in every view
    adaptive: str
    cells_relabelled: int
    blasts: tuple[int | None, int | None]  # cells called blasts, every view then adaptive


@dataclass
class ViewsComparison:
    fields: int = 0
    calls_changed: list[Change] = field(default_factory=list)
    cells: int = 0
    cells_relabelled: int = 0
    fields_with_blast_count_changed: int = 0
    views_all: list[float] = field(default_factory=list)  # views read per field
    views_adaptive: list[float] = field(default_factory=list)
    benign_field: list[bool] = field(default_factory=list)  # the sample's label, a views entry each
    invocations_all: list[int] = field(default_factory=list)  # CPU model invocations per field
    invocations_adaptive: list[int] = field(default_factory=list)
    max_probability_shift: float = 0.0  # largest change of a field's pooled malignant probability

    def to_dict(self) -> dict[str, Any]:
        def pct(v: list) -> dict[str, float] | None:
            return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))} if v else None

        return {"fields": self.fields, "calls_changed": [asdict(c) for c in self.calls_changed], "cells": self.cells,
                "cells_relabelled": self.cells_relabelled,
                "fields_with_blast_count_changed": self.fields_with_blast_count_changed,
                "views_read_per_field": {"all": pct(self.views_all), "adaptive": pct(self.views_adaptive)},
                # a positive field is read in every view (edge.model.views): the saving is on the
                # benign fields, most of a clinic's
                "views_read_per_benign_field": {
                    "all": pct([v for v, b in zip(self.views_all, self.benign_field) if b]),
                    "adaptive": pct([v for v, b in zip(self.views_adaptive, self.benign_field) if b])},
                "invocations_per_field": {"all": pct(self.invocations_all), "adaptive": pct(self.invocations_adaptive)},
                "max_malignant_probability_shift": round(self.max_probability_shift, 6)}


def _invocations(pipeline: Pipeline) -> int:
    return sum(v.fields for v in pipeline.backends.speed.values())


def compare_views(pipeline: Pipeline, samples: list) -> ViewsComparison:
    """Each sample read with ``views="all"`` and with ``"adaptive"`` on ``pipeline``'s bundle and
    backends (the comparison is of the reading, never of two models)."""
    every, adaptive = pipeline.reading_views("all"), pipeline.reading_views("adaptive")
    out = ViewsComparison()
    for sample in samples:
        rgb = read_rgb(sample.path)
        start = _invocations(pipeline)
        a = every.process(rgb, source=str(sample.path))
        middle = _invocations(pipeline)
        b = adaptive.process(rgb, source=str(sample.path))
        out.fields += 1
        out.invocations_all.append(middle - start)
        out.invocations_adaptive.append(_invocations(pipeline) - middle)
        if a.views_read is not None and b.views_read is not None:
            out.views_all.append(float(a.views_read))
            out.views_adaptive.append(float(b.views_read))
            out.benign_field.append(sample.label == BENIGN)
        relabelled = 0
        if a.cells and b.cells:
            out.cells += len(a.cells)
            relabelled = sum(x.label != y.label for x, y in zip(a.cells, b.cells))
            out.cells_relabelled += relabelled
        if a.blasts != b.blasts:
            out.fields_with_blast_count_changed += 1
        call_a = a.screening.call if a.screening is not None else "rejected"
        call_b = b.screening.call if b.screening is not None else "rejected"
        if a.screening is not None and b.screening is not None:
            out.max_probability_shift = max(out.max_probability_shift,
                                            abs(a.screening.malignant_probability - b.screening.malignant_probability))
        if call_a != call_b:
            out.calls_changed.append(Change(sample.key, sample.label, call_a, call_b, relabelled, (a.blasts, b.blasts)))
    return out
