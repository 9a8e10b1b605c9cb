"""Fields in the record: a result saved with its two images, read back, listed and marked
exported.

Durability rule: a field is reported as saved only after its files are fsynced and its row
is committed, so a kill -9 (or a power cut) at any moment loses nothing that was reported.
Files are written before the row and removed again when the row is not written. Nothing is
ever deleted to make room: below the free-space floor a new field is refused (``StoreFull``,
a 507 on the API)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edge.analysis.result import Result
from edge.record.cases import mark_changed, refuse_if_signed
from edge.record.db import Database, UnitOfWork
from edge.record.errors import Locked, RecordDamaged, RecordError, StoreFull, is_full
from edge.record.images import fsync_dir, field_hash, overlay_image, same_field, write_jpeg
from edge.record.rows import FIELD_COLUMNS, field_row


@dataclass(frozen=True)
class StoredFiles:
    image: Path
    overlay: Path


def duplicate_of(tx: UnitOfWork, case_id: int, fingerprint: str) -> int | None:
    """The counted field of the case that ``fingerprint`` repeats (``same_field``), if any."""
    for rid, data in tx.execute("SELECT id, data FROM results WHERE case_id = ? AND excluded IS NULL "
                                "AND status = 'classified' ORDER BY id", (case_id,)):
        other = json.loads(data).get("field_hash")
        if other and same_field(fingerprint, other):
            return int(rid)
    return None


class Fields:
    """The fields of one record database, their images in ``db.images``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, result: Result, case_id: int | None = None, client: str = "device") -> int:
        """Persist a result durably (in case ``case_id`` when given) and return its id (also set
        on ``result.id``). Adding a field to a case changes a patient's record, so it is audited
        in the same transaction. Raises ``StoreFull`` (nothing written, nothing deleted) when
        space is short."""
        if self.db.read_only is not None:  # before any file is written
            raise RecordDamaged(self.db.read_only)
        self.db.ensure_space()
        stem = uuid.uuid4().hex
        files = StoredFiles(self.db.images / f"{stem}.jpg", self.db.images / f"{stem}_overlay.jpg")
        record = result.to_dict()
        try:
            write_jpeg(files.image, result.field_rgb)
            write_jpeg(files.overlay, overlay_image(result.field_rgb, result.segmentation.mask, cells=result.cells))
            fsync_dir(self.db.images)
            record["field_hash"] = field_hash(result.field_rgb)
            with self.db.transaction() as tx:
                duplicate = None
                if case_id is not None:
                    refuse_if_signed(tx, case_id)
                    # only a read field can repeat one: a refused capture counts for nothing, and the
                    # good capture after it (the lamp fixed) must not be taken for its repeat
                    if result.status == "classified":
                        duplicate = duplicate_of(tx, case_id, record["field_hash"])
                excluded = None if duplicate is None else json.dumps({
                    "reason": f"the same field as #{duplicate} (taken twice: move the stage to a new area), not "
                              "counted twice", "duplicate_of": duplicate, "at": time.time()})
                result.id = tx.insert(
                    "INSERT INTO results(created, status, label, call, image, overlay, data, run_seconds, case_id, "
                    "excluded) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (result.created, result.status, record.get("label"), record.get("call"),
                     files.image.name, files.overlay.name, json.dumps(record), tx.run_seconds(), case_id, excluded),
                )
                tx.persist_clock()
                if case_id is not None:
                    tx.audit(client, "case.field_added", None,
                             {"case_id": case_id, "result_id": result.id, "status": result.status,
                              "label": record.get("label"), "source": result.source, "duplicate_of": duplicate})
                    mark_changed(tx, case_id, client, f"field #{result.id} added")
        except Locked:
            files.image.unlink(missing_ok=True)
            files.overlay.unlink(missing_ok=True)
            raise
        except (OSError, sqlite3.OperationalError) as exc:
            files.image.unlink(missing_ok=True)
            files.overlay.unlink(missing_ok=True)
            if is_full(exc):
                raise StoreFull(f"storage full: the result could not be stored ({exc}); every stored result is "
                                "kept. Free space on the device (or export and archive results) to continue") from None
            raise RecordError(f"the result could not be stored: {type(exc).__name__}: {exc}; every stored result is "
                              "kept") from exc
        return result.id

    def get(self, result_id: int) -> dict[str, Any] | None:
        with self.db.reading() as r:
            row = r.execute(f"SELECT {FIELD_COLUMNS} FROM results WHERE id = ?", (result_id,)).fetchone()
        return field_row(row) if row else None

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.db.reading() as r:
            rows = r.execute(f"SELECT {FIELD_COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [field_row(row) for row in rows]

    def iter_between(self, start: float, end: float, batch: int = 200) -> Iterator[dict[str, Any]]:
        """Results created in [start, end), oldest first, read ``batch`` rows at a time: a range
        export of a full device streams through instead of holding every record at once."""
        last = 0
        while True:
            with self.db.reading() as r:
                rows = r.execute(f"SELECT {FIELD_COLUMNS} FROM results WHERE created >= ? AND created < ? "
                                 "AND id > ? ORDER BY id LIMIT ?", (start, end, last, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield field_row(row)
            last = rows[-1][0]

    def between(self, start: float, end: float, limit: int = 100_000) -> list[dict[str, Any]]:
        """Results created in [start, end) by the device clock, oldest first (exports)."""
        with self.db.reading() as r:
            rows = r.execute(f"SELECT {FIELD_COLUMNS} FROM results WHERE created >= ? AND created < ? "
                             "ORDER BY id LIMIT ?", (start, end, limit)).fetchall()
        return [field_row(row) for row in rows]

    def file_path(self, result_id: int, kind: str) -> Path | None:
        if kind not in ("image", "overlay"):  # a column name: never interpolate anything else
            raise ValueError(f"unknown result file kind {kind!r}")
        with self.db.reading() as r:
            row = r.execute(f"SELECT {kind} FROM results WHERE id = ?", (result_id,)).fetchone()
        return self.db.images / row[0] if row else None

    def newest_created(self) -> float | None:
        """When the newest field was read, by the device clock of that moment (None: no field)."""
        with self.db.reading() as r:
            row = r.execute("SELECT MAX(created) FROM results").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def count(self) -> int:
        with self.db.reading() as r:
            return int(r.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def mark_exported(self, result_ids: list[int], case_id: int | None, client: str, what: str) -> None:
        now = time.time()
        with self.db.transaction() as tx:
            tx.executemany("UPDATE results SET exported = ? WHERE id = ?", [(now, i) for i in result_ids])
            if case_id is not None:
                tx.execute("UPDATE cases SET exported = ? WHERE id = ?", (now, case_id))
            tx.audit(client, "export", None, {"what": what, "case_id": case_id, "results": len(result_ids)})
