"""Copies of the record taken before a migration, and going back to one (issue 36: the old
release on a migrated record died at every start and nothing had kept the record as it was).

Kept beside the database as ``results.db.before-schema-<version>-<time>``: a rollback to the
older release restores the newest one and sets the migrated record aside, so the fields read
since are there to recover, never deleted."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("blastscope.store")


def _backups(database: Path) -> list[Path]:
    found = [p for p in database.parent.glob(f"{database.name}.before-schema-*") if not p.name.endswith(("-wal", "-shm"))]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """``source`` into ``target`` with SQLite's online backup, left in rollback-journal mode (one
    self-contained file: a WAL-mode copy would need its -wal beside it), fsynced."""
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
    _fsync(target)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def backup_before_migration(db: sqlite3.Connection, database: Path, version: int, target_version: int) -> Path:
    """``database`` (open as ``db``) copied with SQLite's online backup (consistent, WAL
    included) beside itself and fsynced, before a migration from ``version`` changes it."""
    target = database.parent / f"{database.name}.before-schema-{version}-{time.strftime('%Y%m%d-%H%M%S')}"
    _copy(db, target)
    log.warning("store: the record (schema %d) was copied to %s before its migration to %d", version, target.name,
                target_version)
    return target


def rollback_record(database: Path) -> tuple[Path, Path]:
    """Back to the record as it was before the latest migration, for the older release, with
    the daemon stopped: ``database`` is set aside (``<name>.rolled-back-<time>``) and the newest
    pre-migration copy takes its place. Returns (the copy restored, where the record was put)."""
    backups = _backups(database)
    if not backups:
        raise FileNotFoundError(f"{database.parent}: no copy of the record from before a migration "
                                f"({database.name}.before-schema-*)")
    aside = database.parent / f"{database.name}.rolled-back-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{database}{suffix}").exists():
            os.replace(f"{database}{suffix}", f"{aside}{suffix}")
    source = sqlite3.connect(f"file:{backups[-1]}?mode=ro", uri=True)
    try:
        _copy(source, database)
    finally:
        source.close()
    return backups[-1], aside
