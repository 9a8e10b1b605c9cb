"""A site reference: what one clinic's normal cells look like, measured on its own known-
negative slides with its own stain, microscope and camera (issue 33).

The bundle's out-of-distribution checks were fitted on the training sites, so another
laboratory's stain is refused field after field as "cells unlike the slides this model was
trained on", and nothing let a clinic say what its normal slides look like. A site reference
holds the same two checks fitted on the clinic's cells: the appearance per field
(``edge.model.ood.AppearanceCheck``) and the embedding per cell (``OodCheck``). A field passes
when it is familiar to the bundle's checks **or** to the reference's, so the clinic's stain is
read while a field unlike both the training sites and this clinic is still refused.

The limits are fitted leave-one-slide-out: each slide is measured against the check fitted on
the other slides, and the limit is the farthest any held-out slide's field came (appearance),
or the 99.5th percentile of the held-out cells (embedding). A new slide of the clinic is as
far as those were, not as close as the slides the check was fitted on. At least
``MIN_SLIDES`` slides are needed.

A reference moves no operating point: it only decides which fields are read. Fitted on
negative slides alone it cannot say how blasts of this stain are called; that is what the
site verification on *other* slides decides, and why a new reference needs a new one. It is
bound to the model it was measured with (the embedding is that model's) and, on the device,
to the camera settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge.analysis.appearance import UNMEASURED
from edge.model.ood import AppearanceCheck, OodCheck, fit, fit_appearance

#: Known-negative slides a reference needs (issue 33: "at least 10").
MIN_SLIDES = 10
#: The share of held-out cells whose embedding distance sets the cell limit.
CELL_QUANTILE = 0.995


@dataclass(frozen=True)
class SlideCells:
    """One known-negative slide's fields, as measured by ``Pipeline.measure_cells``: per field,
    its cells' appearance rows ``(n, F)`` and embeddings ``(n, D)``."""

    name: str
    rows: list[np.ndarray]
    embeddings: list[np.ndarray]


@dataclass(frozen=True)
class SiteReference:
    appearance: AppearanceCheck
    embedding: OodCheck
    model_id: str
    slides: list[str]
    fields: int
    cells: int
    created: float
    camera: dict[str, Any] | None = None
    version: int = 1
    fit: dict[str, Any] = field(default_factory=dict)  # how the limits came out, per held-out slide

    def covers(self, model_id: str) -> bool:
        return self.model_id == model_id

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "blastscope-site-reference", "version": self.version, "model_id": self.model_id,
                "camera": self.camera, "slides": self.slides, "fields": self.fields, "cells": self.cells,
                "created": self.created, "appearance": self.appearance.to_dict(),
                "embedding": self.embedding.to_dict(), "fit": self.fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SiteReference":
        if not isinstance(data, Mapping) or data.get("kind") != "blastscope-site-reference":
            raise ValueError("not a BlastScope site reference (no kind 'blastscope-site-reference')")
        return cls(AppearanceCheck.from_dict(data["appearance"]), OodCheck.from_dict(data["embedding"]),
                   str(data["model_id"]), [str(s) for s in data["slides"]], int(data["fields"]), int(data["cells"]),
                   float(data["created"]), data.get("camera"), int(data.get("version", 1)), dict(data.get("fit", {})))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "SiteReference":
        """The reference in ``path``; ``ValueError`` naming the file and the problem."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the site reference ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a usable site reference ({type(exc).__name__}: {exc})") from None


def _stack(parts: Sequence[np.ndarray], width: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, width))


def fit_reference(slides: Sequence[SlideCells], model_id: str, camera: dict[str, Any] | None = None) -> SiteReference:
    """The reference fitted on ``slides`` (known-negative slides of one clinic); ``ValueError``
    with fewer than ``MIN_SLIDES`` slides holding cells."""
    slides = [s for s in slides if any(len(r) for r in s.rows)]
    if len(slides) < MIN_SLIDES:
        raise ValueError(f"a site reference needs at least {MIN_SLIDES} known-negative slides with white cells; "
                         f"{len(slides)} given")
    width_a = next(r.shape[1] for s in slides for r in s.rows if len(r))
    width_e = next(e.shape[1] for s in slides for e in s.embeddings if len(e))
    held_fields: dict[str, float] = {}
    held_cells: list[np.ndarray] = []
    for i, slide in enumerate(slides):
        others = [s for j, s in enumerate(slides) if j != i]
        looks = fit_appearance(_stack([r for s in others for r in s.rows], width_a))
        mean, precision = fit(_stack([e for s in others for e in s.embeddings], width_e))
        check = OodCheck(mean, precision, float("inf"))
        medians = [looks.field_distance(looks.distances(r), r) for r in slide.rows
                   if len(r) and not (r >= UNMEASURED).all()]
        held_fields[slide.name] = round(max(medians, default=0.0), 3)
        held_cells += [check.distances(e) for e in slide.embeddings if len(e)]
    rows = _stack([r for s in slides for r in s.rows], width_a)
    embeddings = _stack([e for s in slides for e in s.embeddings], width_e)
    appearance = fit_appearance(rows)
    mean, precision = fit(embeddings)
    appearance_limit = max(held_fields.values())
    cell_limit = float(np.quantile(np.concatenate(held_cells), CELL_QUANTILE))
    return SiteReference(
        appearance=AppearanceCheck(appearance.mean, appearance.scale, appearance.precision, appearance_limit),
        embedding=OodCheck(mean, precision, cell_limit), model_id=model_id, slides=[s.name for s in slides],
        fields=sum(len(s.rows) for s in slides), cells=int(len(rows)), created=time.time(), camera=camera,
        fit={"limits": "leave one slide out: appearance, the farthest held-out field median; embedding, the "
                       f"{100 * CELL_QUANTILE:g}th percentile of held-out cells",
             "held_out_field_median_max": held_fields, "appearance_limit": round(appearance_limit, 3),
             "embedding_limit": round(cell_limit, 3)})
