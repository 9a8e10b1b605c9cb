"""Results on disk: SQLite (WAL) for the records, JPEG files for the field and its overlay.

Durability rule: a result is reported as saved only after its files are fsynced and its
row is committed with ``synchronous=FULL``, so a kill -9 (or a power cut) at any moment
loses nothing that was reported. Files are written before the row and removed after it,
so a crash can only leave orphan files, which are swept at the next start.
Retention removes the oldest results first: beyond a count, beyond an age, and while free
disk space is below a floor.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import StoreConfig
from edge.result import Result

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    label TEXT,
    call TEXT,
    image TEXT NOT NULL,
    overlay TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_created ON results(created);
"""
IMAGES = "images"


def overlay_image(field_rgb: np.ndarray, mask: np.ndarray, side: int = 448) -> np.ndarray:
    """The field enlarged for a phone screen with the segmented cells outlined in green."""
    big = cv2.resize(field_rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    big_mask = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = big.copy()
    cv2.drawContours(out, contours, -1, (0, 220, 60), 2)
    return out


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredFiles:
    image: Path
    overlay: Path


class Store:
    def __init__(self, state_dir: Path, cfg: StoreConfig = StoreConfig()) -> None:
        self.root = Path(state_dir)
        self.images = self.root / IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "results.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.swept_orphans = self._sweep_orphans()

    def _sweep_orphans(self) -> int:
        """Remove files no row refers to (left by a crash between file write and commit)."""
        referenced = set()
        for image, overlay in self._db.execute("SELECT image, overlay FROM results"):
            referenced.update((image, overlay))
        removed = 0
        for path in self.images.iterdir():
            if path.name not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def save(self, result: Result) -> int:
        """Persist a result durably and return its id (also set on ``result.id``)."""
        stem = uuid.uuid4().hex
        files = StoredFiles(self.images / f"{stem}.jpg", self.images / f"{stem}_overlay.jpg")
        _write_jpeg(files.image, result.field_rgb)
        _write_jpeg(files.overlay, overlay_image(result.field_rgb, result.segmentation.mask))
        _fsync_dir(self.images)
        record = result.to_dict()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO results(created, status, label, call, image, overlay, data) VALUES (?,?,?,?,?,?,?)",
                (result.created, result.status, record.get("label"), record.get("call"),
                 files.image.name, files.overlay.name, json.dumps(record)),
            )
            result.id = int(cur.lastrowid)
        self.apply_retention()
        return result.id

    def _row(self, row: tuple) -> dict[str, Any]:
        rid, data = row
        record = json.loads(data)
        record["id"] = rid
        return record

    def get(self, result_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT id, data FROM results WHERE id = ?", (result_id,)).fetchone()
        return self._row(row) if row else None

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM results ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def file_path(self, result_id: int, kind: str) -> Path | None:
        if kind not in ("image", "overlay"):  # a column name: never interpolate anything else
            raise ValueError(f"unknown result file kind {kind!r}")
        with self._lock:
            row = self._db.execute(f"SELECT {kind} FROM results WHERE id = ?", (result_id,)).fetchone()
        return self.images / row[0] if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e6

    def _delete_oldest(self, where: str, params: tuple = (), limit: int = 1000) -> int:
        with self._lock:
            rows = self._db.execute(f"SELECT id, image, overlay FROM results {where} ORDER BY id LIMIT ?",
                                    (*params, limit)).fetchall()
            if rows:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM results WHERE id = ?", [(r[0],) for r in rows])
                self._db.execute("COMMIT")
        for _, image, overlay in rows:  # after the commit: a crash here leaves only orphans
            (self.images / image).unlink(missing_ok=True)
            (self.images / overlay).unlink(missing_ok=True)
        return len(rows)

    def apply_retention(self) -> int:
        """Delete oldest-first past the count, the age, and while disk space is short."""
        removed = 0
        excess = self.count() - self.cfg.max_results
        if excess > 0:
            removed += self._delete_oldest("", (), excess)
        removed += self._delete_oldest("WHERE created < ?", (time.time() - self.cfg.max_age_days * 86400,))
        while self.free_mb() < self.cfg.min_free_mb and self.count() > 1:
            if not self._delete_oldest("", (), 10):
                break
            removed += 1
        return removed

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
