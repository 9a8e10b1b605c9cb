"""The record's database: opening, repair, schema, the lock and the unit of work.

Durability rule: a change is reported as made only after its row is committed with
``synchronous=FULL`` (and, for a field, its files fsynced first), so a kill -9 or a power cut
at any moment loses nothing that was reported.

One owner: this module alone holds the SQLite connection and the lock. Every other module of
the record changes the database through ``Database.transaction()`` (a ``UnitOfWork``: the
lock, one SQLite transaction, the audit rows written inside it) and reads through
``Database.reading()``; none touches the connection (``tests/record/test_ownership.py``).

A clinic's record is not a cache. A damaged database is set aside (kept for an expert) and the
device turns read-only until an admin restores a backup or accepts the new, empty record;
images no row refers to are moved to ``quarantine/``, never deleted. Age is counted on a
clock the database keeps itself (a Raspberry Pi has no real-time clock), advanced by the
monotonic clock and persisted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

from pydantic import Field

from edge.record import audit
from edge.record.audit import AuditCheck
from edge.record.backup import backup_before_migration
from edge.record.errors import RecordDamaged, SchemaNewer, StoreFull
from edge.record.schema import MIGRATION_STEPS, MIGRATIONS, SCHEMA, SCHEMA_VERSION, statements
from edge.settings import Float, Int, Settings

IMAGES = "images"
QUARANTINE = "quarantine"
DATABASE = "results.db"
#: The audit chain's head kept outside the database (``edge.record.audit.Anchor``).
AUDIT_ANCHOR = "audit-anchor.jsonl"
#: Beside a set-aside damaged database: an admin accepted the new record in its place.
ACCEPTED = ".accepted"



log = logging.getLogger("blastscope.store")


class StoreConfig(Settings):
    state_dir: str = ""  # empty: $STATE_DIRECTORY (systemd) or ~/.local/state/blastscope
    max_results: Annotated[Int, Field(ge=1)] = 10000
    max_age_days: Annotated[Float, Field(gt=0)] = 365.0
    min_free_mb: Annotated[Float, Field(ge=0)] = 500.0


def inserted_id(cur: sqlite3.Cursor) -> int:
    """The row an INSERT made (sqlite3 types ``lastrowid`` as optional: it is None only before
    any insert on the cursor, which would be a bug here)."""
    if cur.lastrowid is None:
        raise RuntimeError("SQLite reported no row id after an INSERT")
    return int(cur.lastrowid)


class UnitOfWork:
    """What a module of the record may do to the database inside one locked transaction that
    ``Database.transaction`` opens and commits, or rolls back on any error: statements, audit
    rows, the next case code, a new case (the one INSERT of a case), nested steps and the
    running clock. It never hands out the connection, the lock or the transaction."""

    def __init__(self, conn: sqlite3.Connection, run_seconds: Callable[[], float]) -> None:
        self._conn = conn
        self._run_seconds = run_seconds

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, args)

    def executemany(self, sql: str, rows: list[tuple]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    def insert(self, sql: str, args: tuple = ()) -> int:
        """An INSERT's new row id."""
        return inserted_id(self._conn.execute(sql, args))

    def audit(self, client: str, action: str, before: Any = None, after: Any = None) -> None:
        audit.append(self._conn, time.time(), client, action, None if before is None else json.dumps(before),
                     None if after is None else json.dumps(after))

    def audit_head(self) -> dict[str, Any]:
        """The chain's head as it stands inside this transaction (before its own next row)."""
        rows, last = audit.head(self._conn)
        return {"rows": rows, "hash": last}

    def run_seconds(self) -> float:
        return self._run_seconds()

    def persist_clock(self) -> None:
        self._conn.execute("INSERT INTO meta(key, value) VALUES ('run_seconds', ?) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (repr(self._run_seconds()),))

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """A nested step inside the transaction, undone alone when it fails."""
        self._conn.execute("SAVEPOINT step")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO step")
            self._conn.execute("RELEASE step")
            raise
        self._conn.execute("RELEASE step")

    def next_case_code(self, now: float | None = None) -> str:
        """``YYYY-MM-DD-NNN``: the device's date and the next number that day."""
        day = time.strftime("%Y-%m-%d", time.localtime(now if now is not None else time.time()))
        codes = [r[0] for r in self._conn.execute("SELECT code FROM cases WHERE code LIKE ?", (f"{day}-%",))]
        numbers = [int(c.rsplit("-", 1)[1]) for c in codes if c.rsplit("-", 1)[1].isdigit()]
        return f"{day}-{max(numbers, default=0) + 1:03d}"

    def create_case(self, code: str, note: str, client: str, **audited: Any) -> int:
        """A new case; ``ValueError`` when ``code`` is taken. ``audited`` is added to its audit row."""
        try:
            with self.step():
                case_id = self.insert("INSERT INTO cases(code, note, created) VALUES (?,?,?)", (code, note, time.time()))
        except sqlite3.IntegrityError:
            raise ValueError(f"case code {code!r} already exists") from None
        self.audit(client, "case.create", None, {"case_id": case_id, "code": code, "note": note, **audited})
        return case_id


class Reading:
    """Read-only statements under the database's lock (``Database.reading``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("a reading only selects: open a transaction to change the record")
        return self._conn.execute(sql, args)


class Database:
    """The record's one SQLite connection and lock (see the module's docstring)."""

    def __init__(self, state_dir: Path, cfg: StoreConfig = StoreConfig()) -> None:
        self.root = Path(state_dir)
        self.images = self.root / IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self._lock = threading.Lock()
        self.recovered: list[str] = []  # what was repaired at start, for the log and the status
        self._audit_checked: tuple[float, audit.AuditCheck] | None = None
        self._audit_walk = threading.Lock()
        self.read_only: str | None = None
        self._db = self._open_database()
        self._migrate()
        self.read_only = self._damage()
        self._run_base = float(self._meta("run_seconds", "0"))
        self._mono_base = time.monotonic()
        self.quarantined = self._quarantine_orphans()

    # -- opening, repair and schema -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / DATABASE, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return db

    def _open_database(self) -> sqlite3.Connection:
        """Open the database; a corrupt one is moved aside (kept for an expert) and rebuilt."""
        path = self.root / DATABASE
        if not path.exists() and any(self.images.iterdir()):
            self.recovered.append(f"{DATABASE} was missing: a new one was created and the existing images "
                                  f"were moved to {QUARANTINE}/")
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return db
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            aside = self.root / f"{DATABASE}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                src = self.root / f"{DATABASE}{suffix}"
                if src.exists():
                    os.replace(src, Path(f"{aside}{suffix}"))
            self.recovered.append(f"{DATABASE} was unreadable ({exc}): kept as {aside.name}, a new one was "
                                  f"created and the existing images were moved to {QUARANTINE}/")
            return self._connect()

    def _damage(self) -> str | None:
        """Why the record is read-only: a damaged database set aside and not yet accepted by an
        admin (``accept_new_record``). A clinic's record must not silently restart empty: every
        case and sign-out would vanish from the page while new ones piled on an empty file."""
        pending = sorted(p.name for p in self.root.glob(f"{DATABASE}.corrupt-*")
                         if not p.name.endswith(("-wal", "-shm", ACCEPTED)) and not Path(f"{p}{ACCEPTED}").exists())
        if not pending:
            return None
        return (f"the clinic record {DATABASE} was damaged and set aside as {pending[-1]} (kept for an expert; "
                f"{AUDIT_ANCHOR} shows how many audit rows it held): the device is read-only. Restore a backup, "
                f"or accept the new, empty record with 'blastscope-edge record accept-new'")

    def accept_new_record(self, client: str) -> list[str]:
        """An admin accepts the new record in place of the damaged one(s): audited, and the
        set-aside files stay where they are."""
        accepted = []
        for p in sorted(self.root.glob(f"{DATABASE}.corrupt-*")):
            if p.name.endswith(("-wal", "-shm", ACCEPTED)) or Path(f"{p}{ACCEPTED}").exists():
                continue
            Path(f"{p}{ACCEPTED}").write_text(json.dumps({"by": client, "at": time.time()}))
            accepted.append(p.name)
        self.read_only = None
        with self.transaction() as tx:
            tx.audit(client, "record.accept_new", None, {"set_aside": accepted})
        return accepted

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaNewer(f"{self.root / DATABASE}: schema version {version} is newer than this software "
                              f"({SCHEMA_VERSION}): a newer release wrote this record. Install that release again, "
                              f"or go back to the record as it was before it migrated (blastscope-edge record "
                              f"rollback, which keeps the newer record aside)")
        held = self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]  # every release had this table
        if version < SCHEMA_VERSION and (version > 0 or held):  # a record to migrate: copied first
            backup_before_migration(self._db, self.root / DATABASE, version, SCHEMA_VERSION)
        for target in sorted(t for t in MIGRATIONS if t > version):  # release 0.1.0 left version 0
            with self._transaction():
                for statement in statements(MIGRATIONS[target]):
                    self._db.execute(statement)
                if step := MIGRATION_STEPS.get(target):
                    step(self._db)
                self._db.execute(f"PRAGMA user_version = {target}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, rolled back on any error so no transaction is left open. Refused
        (``RecordDamaged``) while the record is read-only."""
        if self.read_only is not None:
            raise RecordDamaged(self.read_only)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """The public unit of work: the store's lock and one SQLite transaction, committed at
        the end or rolled back on any error, with the audit rows written inside it."""
        with self._lock, self._transaction():
            yield UnitOfWork(self._db, self.run_seconds)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Reading]:
        """Consistent reads under the store's lock."""
        with self._lock:
            yield Reading(self._db)

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _quarantine_orphans(self) -> int:
        """Move files no row refers to into ``quarantine/`` (never delete an image: after a lost
        database they are the record); half-written ``.tmp`` files are removed."""
        referenced: set[str] = set()
        for image, overlay in self._db.execute("SELECT image, overlay FROM results"):
            referenced.update((image, overlay))
        moved = 0
        for path in self.images.iterdir():
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)
            elif path.name not in referenced:
                (self.root / QUARANTINE).mkdir(exist_ok=True)
                os.replace(path, self.root / QUARANTINE / path.name)
                moved += 1
        for message in self.recovered:
            log.warning("store: %s", message)
        if moved:
            log.warning("store: %d image files no result refers to were moved to %s", moved, self.root / QUARANTINE)
        return moved

    # -- the device's own clock -------------------------------------------------------------

    def run_seconds(self) -> float:
        """Seconds this store has been open, summed over every run: the clock age is counted on."""
        return self._run_base + (time.monotonic() - self._mono_base)

    # -- space ---------------------------------------------------------------------------

    def free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e6

    def ensure_space(self) -> None:
        """Raise ``StoreFull`` when a new result would take the disk below the floor."""
        free = self.free_mb()
        if free < self.cfg.min_free_mb:
            raise StoreFull(f"storage nearly full: {free:.0f} MB free, below the {self.cfg.min_free_mb:.0f} MB "
                            "floor; new fields are refused and every stored result is kept. Free space on the "
                            "device (or export and archive results) to continue")

    # -- the audit chain ---------------------------------------------------------------

    def audit(self, client: str, action: str, before: Any = None, after: Any = None) -> None:
        """Append to the audit log (the table refuses updates and deletes)."""
        with self.transaction() as tx:
            tx.audit(client, action, before, after)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, at, client, action, before, after, hash FROM audit ORDER BY id DESC "
                                    "LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "at": r[1], "client": r[2], "action": r[3],
                 "before": json.loads(r[4]) if r[4] else None, "after": json.loads(r[5]) if r[5] else None,
                 "hash": r[6]} for r in rows]

    def audit_check(self, max_age_s: float = 60.0) -> AuditCheck:
        """The chain's verdict (``edge.record.audit``), walked again when older than ``max_age_s``:
        from the last anchor on, on a read-only connection of its own, so requests do not wait
        behind the walk; an intact chain moves the anchor to its head. A damaged chain stays
        damaged: the anchor is never moved past a problem."""
        now = time.monotonic()
        cached = self._audit_checked
        if cached is not None and now - cached[0] <= max_age_s:
            return cached[1]
        with self._audit_walk:  # one walk at a time; the store's lock is not taken
            anchor = audit.Anchor(self.root / AUDIT_ANCHOR)
            mark = anchor.last()
            reader = sqlite3.connect(f"file:{self.root / DATABASE}?mode=ro", uri=True, check_same_thread=False)
            try:  # the first walk of a run re-reads every row; later ones only the rows since the anchor
                check = audit.verify(reader, mark, whole=cached is None)
            finally:
                reader.close()
            if check.intact and (mark is None or check.rows > mark.rows):
                anchor.write(audit.Mark(check.rows, check.head, time.time()))
            self._audit_checked = (now, check)
            return check

    def audit_head(self) -> dict[str, Any]:
        """The chain's current head (row count and hash), as a sign-out and a report carry it so
        that a later loss of rows can be shown against a paper or an export."""
        with self._lock:
            rows, last = audit.head(self._db)
        return {"rows": rows, "hash": last}

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        """Persist the clock and checkpoint the WAL; on a full disk the WAL stays (it is
        replayed at the next start) and the connection is still closed."""
        with self._lock:
            try:
                UnitOfWork(self._db, self.run_seconds).persist_clock()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("store: checkpoint at close failed (%s); the WAL is replayed at the next start", exc)
            finally:
                self._db.close()
