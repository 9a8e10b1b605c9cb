"""Site references in the clinic record (issue 33): each proposed from the cases of known-
negative slides it was measured on, accepted by an admin, and retired when another is
accepted. Versioned by id and audited; the fitted figures are kept whole, so what the device
read with at any time can be shown later."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge.model.site_reference import SiteReference
from edge.record.db import Database

STATES = ("proposed", "active", "retired")


@dataclass(frozen=True)
class StoredReference:
    """A site reference as the record keeps it: the fitted reference with who proposed and
    accepted it, and the cases of the slides it was measured on (so it can be shown later)."""

    id: int
    created: float
    created_by: str
    cases: list[int]
    state: str
    accepted: float | None
    accepted_by: str | None
    reference: SiteReference

    def to_dict(self) -> dict[str, Any]:
        r = self.reference
        return {"id": self.id, "created": self.created, "created_by": self.created_by, "cases": self.cases,
                "state": self.state, "accepted": self.accepted, "accepted_by": self.accepted_by,
                "model_id": r.model_id, "camera": r.camera, "slides": len(r.slides), "fields": r.fields,
                "cells": r.cells, "appearance_limit": round(r.appearance.limit, 3),
                "embedding_limit": round(r.embedding.limit, 3), "fit": r.fit}


class SiteReferences:
    def __init__(self, db: Database) -> None:
        self.db = db

    _SELECT = "SELECT id, created, created_by, cases, state, accepted, accepted_by, data FROM site_references"

    @staticmethod
    def _row(row: tuple) -> StoredReference:
        return StoredReference(int(row[0]), float(row[1]), str(row[2]), json.loads(row[3]), str(row[4]), row[5], row[6],
                               SiteReference.from_dict(json.loads(row[7])))

    def all(self) -> list[StoredReference]:
        with self.db.reading() as r:
            return [self._row(row) for row in r.execute(f"{self._SELECT} ORDER BY id DESC").fetchall()]

    def get(self, reference_id: int) -> StoredReference | None:
        with self.db.reading() as r:
            row = r.execute(f"{self._SELECT} WHERE id = ?", (reference_id,)).fetchone()
        return None if row is None else self._row(row)

    def active(self) -> StoredReference | None:
        with self.db.reading() as r:
            row = r.execute(f"{self._SELECT} WHERE state = 'active' ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else self._row(row)

    def propose(self, reference: SiteReference, cases: list[int], client: str) -> int:
        with self.db.transaction() as tx:
            reference_id = tx.insert(
                "INSERT INTO site_references(created, created_by, model_id, camera, cases, data) VALUES (?,?,?,?,?,?)",
                (reference.created, client, reference.model_id, json.dumps(reference.camera, sort_keys=True),
                 json.dumps(cases), json.dumps(reference.to_dict())))
            tx.audit(client, "site_reference.propose", None,
                     {"site_reference": reference_id, "model_id": reference.model_id, "cases": cases,
                      "slides": len(reference.slides), "fields": reference.fields, "cells": reference.cells,
                      "appearance_limit": round(reference.appearance.limit, 3),
                      "embedding_limit": round(reference.embedding.limit, 3)})
        return reference_id

    def accept(self, reference_id: int, client: str) -> None:
        """The proposed reference becomes the device's; the one before it is retired."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT state FROM site_references WHERE id = ?", (reference_id,)).fetchone()
            if row is None:
                raise LookupError(f"no site reference {reference_id}")
            if row[0] != "proposed":
                raise ValueError(f"site reference #{reference_id} is {row[0]}: only a proposed one can be accepted")
            retired = [int(r[0]) for r in tx.execute("SELECT id FROM site_references WHERE state = 'active'")]
            tx.execute("UPDATE site_references SET state = 'retired' WHERE state = 'active'")
            tx.execute("UPDATE site_references SET state = 'active', accepted = ?, accepted_by = ? WHERE id = ?",
                       (time.time(), client, reference_id))
            tx.audit(client, "site_reference.accept", {"active": retired or None}, {"site_reference": reference_id})
