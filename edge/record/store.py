"""Results on disk: SQLite (WAL) for the records, JPEG files for the field and its overlay.

Durability rule: a result is reported as saved only after its files are fsynced and its
row is committed with ``synchronous=FULL``, so a kill -9 (or a power cut) at any moment
loses nothing that was reported. Files are written before the row and removed after it.

A clinic's record is not a cache. Nothing is ever deleted to make room: when free space is
below ``min_free_mb`` a new field is refused (``StoreFull``, a 507 on the API) and the
status says so. Retention deletes only what the configured policy allows, oldest first:
beyond ``max_results``, and beyond ``max_age_days`` of the device's own running time (a
Raspberry Pi has no real-time clock: a wall clock that jumps must not delete history, so age
is counted on a clock the store keeps itself, advanced by the monotonic clock and persisted).
Every deletion goes to the log and the append-only audit table. A missing or corrupt
database is rebuilt (a corrupt one is kept aside) and images no row refers to are moved to
``quarantine/``, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator

from pydantic import Field

from edge.analysis.result import Result
from edge.record import audit
from edge.record.audit import AuditCheck
from edge.record.images import fsync_dir, field_hash, overlay_image, same_field, write_jpeg
from edge.record.schema import MIGRATION_STEPS, MIGRATIONS, SCHEMA, SCHEMA_VERSION, statements
from edge.settings import Float, Int, Settings



def _inserted_id(cur: sqlite3.Cursor) -> int:
    """The row an INSERT made (sqlite3 types ``lastrowid`` as optional: it is None only before
    any insert on the cursor, which would be a bug here)."""
    if cur.lastrowid is None:
        raise RuntimeError("SQLite reported no row id after an INSERT")
    return int(cur.lastrowid)

class StoreConfig(Settings):
    state_dir: str = ""  # empty: $STATE_DIRECTORY (systemd) or ~/.local/state/blastscope
    max_results: Annotated[Int, Field(ge=1)] = 10000
    max_age_days: Annotated[Float, Field(gt=0)] = 365.0
    min_free_mb: Annotated[Float, Field(ge=0)] = 500.0


log = logging.getLogger("blastscope.store")

IMAGES = "images"
QUARANTINE = "quarantine"
DATABASE = "results.db"
#: The audit chain's head kept outside the database (``edge.record.audit.Anchor``).
AUDIT_ANCHOR = "audit-anchor.jsonl"
#: Beside a set-aside damaged database: an admin accepted the new record in its place.
ACCEPTED = ".accepted"


class StoreFull(OSError):
    """Not enough free space to keep a new result; nothing stored was touched."""


class RecordDamaged(RuntimeError):
    """The record is read-only: its database was damaged; says which file and what to do."""


class RecordError(RuntimeError):
    """A write to the record failed for a reason other than a full disk; says what failed."""


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` means the storage is full: ENOSPC or EDQUOT from the file system, or
    SQLite's SQLITE_FULL ("database or disk is full"). Nothing else is "storage full": a
    permission, a damaged file or an I/O error must say what it is."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL if code is not None else "database or disk is full" in str(exc)
    return False


class Stale(ValueError):
    """A change made on what an out-of-date page showed; says what changed, who and when."""


class Locked(ValueError):
    """A change to a signed-out case (or one of its fields); says who signed it and how to amend."""


def locked_message(code: str, signed: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(signed["at"]))
    return (f"case {code} was signed out by {signed['reviewer']} on {when} ({signed['call']}): it is locked; "
            "amend it, with a reason, to change it")


#: What ``include_result`` returns for a field that does not exist.
MISSING = object()


class UnitOfWork:
    """What a module of the record outside the store (site verification) may do to the
    database: statements, the next case code, a new case (the one INSERT of a case) and audit
    rows, all inside one locked transaction that ``Store.transaction`` opens and commits, or
    rolls back on any error. It never hands out the connection, the lock or the transaction."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        return self._store._db.execute(sql, args)

    def insert(self, sql: str, args: tuple = ()) -> int:
        """An INSERT's new row id."""
        return _inserted_id(self._store._db.execute(sql, args))

    def audit(self, client: str, action: str, before: Any = None, after: Any = None) -> None:
        self._store._audit_locked(client, action, before, after)

    def next_case_code(self) -> str:
        return self._store._next_code_locked()

    def create_case(self, code: str, note: str, client: str, **audited: Any) -> int:
        """A new case; ``ValueError`` when ``code`` is taken. ``audited`` is added to its audit row."""
        try:
            with self._store._savepoint():
                case_id = self.insert("INSERT INTO cases(code, note, created) VALUES (?,?,?)", (code, note, time.time()))
        except sqlite3.IntegrityError:
            raise ValueError(f"case code {code!r} already exists") from None
        self.audit(client, "case.create", None, {"case_id": case_id, "code": code, "note": note, **audited})
        return case_id


class Reading:
    """Read-only statements under the store's lock (``Store.reading``)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("a reading only selects: open a transaction to change the record")
        return self._store._db.execute(sql, args)


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
            raise sqlite3.DatabaseError(f"{self.root / DATABASE}: schema version {version} is newer than this "
                                        f"software ({SCHEMA_VERSION}); install the newer release again")
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
    def _savepoint(self) -> Iterator[None]:
        """A nested step inside the transaction, undone alone when it fails."""
        self._db.execute("SAVEPOINT step")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO step")
            self._db.execute("RELEASE step")
            raise
        self._db.execute("RELEASE step")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """The public unit of work: the store's lock and one SQLite transaction, committed at
        the end or rolled back on any error, with the audit rows written inside it."""
        with self._lock, self._transaction():
            yield UnitOfWork(self)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Reading]:
        """Consistent reads under the store's lock."""
        with self._lock:
            yield Reading(self)

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

    def _persist_clock(self) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES ('run_seconds', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (repr(self.run_seconds()),))

    # -- writing ------------------------------------------------------------------------

    def free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e6

    def ensure_space(self) -> None:
        """Raise ``StoreFull`` when a new result would take the disk below the floor."""
        free = self.free_mb()
        if free < self.cfg.min_free_mb:
            raise StoreFull(f"storage nearly full: {free:.0f} MB free, below the {self.cfg.min_free_mb:.0f} MB "
                            "floor; new fields are refused and every stored result is kept. Free space on the "
                            "device (or export and archive results) to continue")

    def save(self, result: Result, case_id: int | None = None, client: str = "device") -> int:
        """Persist a result durably (in case ``case_id`` when given) and return its id (also set
        on ``result.id``). Adding a field to a case changes a patient's record, so it is audited
        in the same transaction. Raises ``StoreFull`` (nothing written, nothing deleted) when
        space is short."""
        if self.read_only is not None:  # before any file is written
            raise RecordDamaged(self.read_only)
        self.ensure_space()
        stem = uuid.uuid4().hex
        files = StoredFiles(self.images / f"{stem}.jpg", self.images / f"{stem}_overlay.jpg")
        record = result.to_dict()
        try:
            write_jpeg(files.image, result.field_rgb)
            write_jpeg(files.overlay, overlay_image(result.field_rgb, result.segmentation.mask, cells=result.cells))
            fsync_dir(self.images)
            record["field_hash"] = field_hash(result.field_rgb)
            with self._lock, self._transaction():
                duplicate = None
                if case_id is not None:
                    self._refuse_if_signed_locked(case_id)
                    # only a read field can repeat one: a refused capture counts for nothing, and the
                    # good capture after it (the lamp fixed) must not be taken for its repeat
                    if result.status == "classified":
                        duplicate = self._duplicate_locked(case_id, record["field_hash"])
                excluded = None if duplicate is None else json.dumps({
                    "reason": f"the same field as #{duplicate} (taken twice: move the stage to a new area), not "
                              "counted twice", "duplicate_of": duplicate, "at": time.time()})
                cur = self._db.execute(
                    "INSERT INTO results(created, status, label, call, image, overlay, data, run_seconds, case_id, "
                    "excluded) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (result.created, result.status, record.get("label"), record.get("call"),
                     files.image.name, files.overlay.name, json.dumps(record), self.run_seconds(), case_id, excluded),
                )
                self._persist_clock()
                result.id = _inserted_id(cur)
                if case_id is not None:
                    self._audit_locked(client, "case.field_added", None,
                                       {"case_id": case_id, "result_id": result.id, "status": result.status,
                                        "label": record.get("label"), "source": result.source,
                                        "duplicate_of": duplicate})
                    self._changed_locked(case_id, client, f"field #{result.id} added")
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
        self.apply_retention()
        return result.id

    def _duplicate_locked(self, case_id: int, fingerprint: str) -> int | None:
        """The counted field of the case that ``fingerprint`` repeats (``same_field``), if any."""
        for rid, data in self._db.execute("SELECT id, data FROM results WHERE case_id = ? AND excluded IS NULL "
                                          "AND status = 'classified' ORDER BY id", (case_id,)):
            other = json.loads(data).get("field_hash")
            if other and same_field(fingerprint, other):
                return int(rid)
        return None

    def audit(self, client: str, action: str, before: Any = None, after: Any = None) -> None:
        """Append to the audit log (the table refuses updates and deletes)."""
        with self._lock, self._transaction():
            self._audit_locked(client, action, before, after)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, at, client, action, before, after, hash FROM audit ORDER BY id DESC "
                                    "LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "at": r[1], "client": r[2], "action": r[3],
                 "before": json.loads(r[4]) if r[4] else None, "after": json.loads(r[5]) if r[5] else None,
                 "hash": r[6]} for r in rows]

    # -- reading ------------------------------------------------------------------------

    _COLUMNS = "id, data, case_id, excluded, review, exported, revision, cell_reviews"

    def _row(self, row: tuple) -> dict[str, Any]:
        rid, data, case_id, excluded, review, exported, revision, cell_reviews = row
        record = json.loads(data)
        record.update(id=rid, case_id=case_id, excluded=json.loads(excluded) if excluded else None,
                      review=json.loads(review) if review else None, exported=exported, revision=revision,
                      cell_reviews=json.loads(cell_reviews))
        return record

    def get(self, result_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLUMNS} FROM results WHERE id = ?", (result_id,)).fetchone()
        return self._row(row) if row else None

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def iter_between(self, start: float, end: float, batch: int = 200) -> Iterator[dict[str, Any]]:
        """Results created in [start, end), oldest first, read ``batch`` rows at a time: a range
        export of a full device streams through instead of holding every record at once."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(f"SELECT {self._COLUMNS} FROM results WHERE created >= ? AND created < ? "
                                        "AND id > ? ORDER BY id LIMIT ?", (start, end, last, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._row(row)
            last = rows[-1][0]

    def case_summary(self, case_id: int) -> dict[str, Any] | None:
        """A case without its fields (what an export row names)."""
        with self._lock:
            row = self._db.execute(f"{self._CASE_SELECT} WHERE c.id = ?", (case_id,)).fetchone()
        return self._case_row(row) if row else None

    def between(self, start: float, end: float, limit: int = 100_000) -> list[dict[str, Any]]:
        """Results created in [start, end) by the device clock, oldest first (exports)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM results WHERE created >= ? AND created < ? "
                                    "ORDER BY id LIMIT ?", (start, end, limit)).fetchall()
        return [self._row(r) for r in rows]

    # -- cases --------------------------------------------------------------------------

    def new_case_code(self, now: float | None = None) -> str:
        """``YYYY-MM-DD-NNN``: the device's date and the next number that day."""
        with self._lock:
            return self._next_code_locked(now)

    def _next_code_locked(self, now: float | None = None) -> str:
        day = time.strftime("%Y-%m-%d", time.localtime(now if now is not None else time.time()))
        codes = [r[0] for r in self._db.execute("SELECT code FROM cases WHERE code LIKE ?", (f"{day}-%",))]
        numbers = [int(c.rsplit("-", 1)[1]) for c in codes if c.rsplit("-", 1)[1].isdigit()]
        return f"{day}-{max(numbers, default=0) + 1:03d}"

    def create_case(self, code: str, note: str, client: str) -> int:
        """A new case; an empty ``code`` is numbered (``new_case_code``) under the same lock as
        the insert, so parallel requests never get the same number. Raises ``ValueError``
        when a given code is taken."""
        with self.transaction() as tx:
            return tx.create_case(code or tx.next_case_code(), note, client)

    def _case_row(self, row: tuple) -> dict[str, Any]:
        cid, code, note, created, call, review, exported, revision, changed, signed, version, amendments, fields = row
        review = json.loads(review) if review else None
        return {"id": cid, "code": code, "note": note, "created": created,
                "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)), "call": call,
                "review": review, "exported": exported, "field_count": fields, "revision": revision,
                "changed": json.loads(changed) if changed else None,
                # a review names the revision it left the case at: anything since is unreviewed
                "changed_since_review": review is not None and revision > int(review.get("revision", revision)),
                "signed": json.loads(signed) if signed else None, "version": version,
                "amendments": json.loads(amendments)}

    _CASE_SELECT = ("SELECT c.id, c.code, c.note, c.created, c.call, c.review, c.exported, c.revision, c.changed, "
                    "c.signed, c.version, c.amendments, "
                    "(SELECT COUNT(*) FROM results r WHERE r.case_id = c.id AND r.excluded IS NULL) FROM cases c")

    def get_case(self, case_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"{self._CASE_SELECT} WHERE c.id = ?", (case_id,)).fetchone()
            if row is None:
                return None
            fields = self._db.execute(f"SELECT {self._COLUMNS} FROM results WHERE case_id = ? ORDER BY id",
                                      (case_id,)).fetchall()
        return {**self._case_row(row), "fields": [self._row(r) for r in fields]}

    def list_cases(self, limit: int, offset: int, call: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE c.call = ?", (call,)) if call else ("", ())
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM cases c {where}", args).fetchone()[0])
            rows = self._db.execute(f"{self._CASE_SELECT} {where} ORDER BY c.id DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [self._case_row(r) for r in rows], total

    def set_case_call(self, case_id: int, call: str) -> None:
        """The model's case call, kept for the history filter (recomputed from the fields)."""
        with self._lock, self._transaction():
            self._db.execute("UPDATE cases SET call = ? WHERE id = ?", (call, case_id))

    def _audit_locked(self, client: str, action: str, before: Any, after: Any) -> None:
        audit.append(self._db, time.time(), client, action, None if before is None else json.dumps(before),
                     None if after is None else json.dumps(after))

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

    def _changed_locked(self, case_id: int, client: str, what: str) -> int:
        """A case's content changed: its revision goes up, with who, when and what."""
        self._db.execute("UPDATE cases SET revision = revision + 1, changed = ? WHERE id = ?",
                         (json.dumps({"by": client, "at": time.time(), "what": what}), case_id))
        return int(self._db.execute("SELECT revision FROM cases WHERE id = ?", (case_id,)).fetchone()[0])

    @staticmethod
    def _stale(kind: str, changed: dict[str, Any] | None) -> Stale:
        if not changed:
            return Stale(f"this {kind} changed since you opened it: reload it and review again")
        when = time.strftime("%H:%M:%S", time.localtime(changed["at"]))
        return Stale(f"this {kind} changed since you opened it ({changed['what']}, by {changed['by']} at {when}): "
                     "reload it and review again")

    def _set_json(self, table: str, column: str, row_id: int, value: Any, client: str, action: str,
                  seen: int | None = None) -> Any:
        """Set a JSON column, bump the revisions it changes and audit before/after in one
        transaction; None when the row is missing. ``seen``: the revision the change was made
        on; ``Stale`` when the row (a field, or a case) has changed since."""
        assert (table, column) in {("results", "excluded"), ("results", "review"), ("cases", "review")}
        with self._lock, self._transaction():
            if table == "cases":
                row = self._db.execute("SELECT review, revision, changed FROM cases WHERE id = ?", (row_id,)).fetchone()
            else:
                row = self._db.execute(f"SELECT r.{column}, r.revision, c.changed, r.case_id FROM results r "
                                       "LEFT JOIN cases c ON c.id = r.case_id WHERE r.id = ?", (row_id,)).fetchone()
            if row is None:
                return None
            case_id = row_id if table == "cases" else row[3]
            if case_id is not None:
                self._refuse_if_signed_locked(case_id)
            if seen is not None and seen != row[1]:
                raise self._stale("case" if table == "cases" else "field", json.loads(row[2]) if row[2] else None)
            before = json.loads(row[0]) if row[0] else None
            if table == "cases":  # the review names the revision it leaves the case at
                value = {**value, "revision": row[1] + 1}
            self._db.execute(f"UPDATE {table} SET {column} = ?, revision = revision + 1 WHERE id = ?",
                             (None if value is None else json.dumps(value), row_id))
            if table == "cases":
                self._db.execute("UPDATE cases SET changed = ? WHERE id = ?",
                                 (json.dumps({"by": client, "at": time.time(), "what": "case reviewed"}), row_id))
            elif row[3] is not None:  # a field of a case: the case changed too
                what = ("reviewed" if column != "excluded" else "excluded" if value is not None else "included again")
                self._changed_locked(row[3], client, f"field #{row_id} {what}")
            self._audit_locked(client, action, {"id": row_id, column: before}, {"id": row_id, column: value})
        return value

    def _refuse_if_signed_locked(self, case_id: int) -> None:
        row = self._db.execute("SELECT code, signed FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is not None and row[1]:
            raise Locked(locked_message(row[0], json.loads(row[1])))

    def sign_case(self, case_id: int, signature: dict[str, Any], client: str, seen: int) -> dict[str, Any] | None:
        """Sign the case out with the final call: locked from now on (no field added, reviewed or
        excluded) until amended. ``Stale`` when it changed since ``seen``; None when missing."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT revision, changed, version FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                return None
            self._refuse_if_signed_locked(case_id)
            if seen != row[0]:
                raise self._stale("case", json.loads(row[1]) if row[1] else None)
            fields = [r[0] for r in self._db.execute("SELECT id FROM results WHERE case_id = ? AND excluded IS NULL "
                                                     "ORDER BY id", (case_id,))]
            rows, last = audit.head(self._db)  # the chain as it stood before this sign-out's own row
            signed = {**signature, "at": time.time(), "fields": fields, "version": row[2], "revision": row[0] + 1,
                      "audit_head": {"rows": rows, "hash": last}}
            self._db.execute("UPDATE cases SET signed = ?, revision = revision + 1, changed = ? WHERE id = ?",
                             (json.dumps(signed), json.dumps({"by": client, "at": signed["at"], "what": "case signed out"}),
                              case_id))
            self._audit_locked(client, "case.sign", {"id": case_id, "signed": None}, {"id": case_id, "signed": signed})
        return signed

    def amend_case(self, case_id: int, reason: str, client: str, seen: int) -> dict[str, Any] | None:
        """Unlock a signed case as a new version; the sign-out it replaces is kept with the
        reason. ``Locked`` is not raised here; ``ValueError`` when the case is not signed."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT signed, amendments, revision, changed, version FROM cases WHERE id = ?",
                                   (case_id,)).fetchone()
            if row is None:
                return None
            if not row[0]:
                raise Stale("this case is not signed out: there is nothing to amend")
            if seen != row[2]:
                raise self._stale("case", json.loads(row[3]) if row[3] else None)
            amendment = {"replaces": json.loads(row[0]), "reason": reason, "by": client, "at": time.time(),
                         "version": row[4] + 1}
            history = json.loads(row[1]) + [amendment]
            self._db.execute("UPDATE cases SET signed = NULL, amendments = ?, version = version + 1, "
                             "revision = revision + 1, changed = ? WHERE id = ?",
                             (json.dumps(history), json.dumps({"by": client, "at": amendment["at"],
                                                               "what": f"amended to version {amendment['version']}"}),
                              case_id))
            self._audit_locked(client, "case.amend", {"id": case_id, "signed": amendment["replaces"]},
                               {"id": case_id, "reason": reason, "version": amendment["version"]})
        return amendment

    def review_cell(self, result_id: int, index: int, review: dict[str, Any], client: str, seen: int) -> Any:
        """A reviewer's class for cell ``index`` of a field (the model's stays in the record);
        refused like a field review when the field changed since ``seen`` or its case is signed
        out. None when the field is missing; ``ValueError`` when it has no such cell."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT r.data, r.cell_reviews, r.revision, r.case_id, c.changed FROM results r "
                                   "LEFT JOIN cases c ON c.id = r.case_id WHERE r.id = ?", (result_id,)).fetchone()
            if row is None:
                return None
            cells = json.loads(row[0]).get("cells") or []
            if not 0 <= index < len(cells):
                raise ValueError(f"field #{result_id} has {len(cells)} cells; there is no cell {index + 1}")
            if row[3] is not None:
                self._refuse_if_signed_locked(row[3])
            if seen != row[2]:
                raise self._stale("field", json.loads(row[4]) if row[4] else None)
            reviews = json.loads(row[1])
            before = reviews.get(str(index))
            reviews[str(index)] = {**review, "model_label": cells[index].get("label"), "at": time.time()}
            self._db.execute("UPDATE results SET cell_reviews = ?, revision = revision + 1 WHERE id = ?",
                             (json.dumps(reviews), result_id))
            if row[3] is not None:
                self._changed_locked(row[3], client, f"cell {index + 1} of field #{result_id} reclassified")
            self._audit_locked(client, "cell.review", {"id": result_id, "cell": index + 1, "review": before},
                               {"id": result_id, "cell": index + 1, "review": reviews[str(index)]})
        return reviews[str(index)]

    def exclude_result(self, result_id: int, reason: str, client: str) -> Any:
        return self._set_json("results", "excluded", result_id, {"reason": reason, "at": time.time()}, client,
                              "result.exclude")

    def include_result(self, result_id: int, client: str) -> Any:
        """Count an excluded field again (a duplicate analysed anyway, or an exclusion undone);
        returns the exclusion it undid's replacement (None), or ``MISSING`` for no such field."""
        with self._lock:
            row = self._db.execute("SELECT excluded FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            return MISSING
        return self._set_json("results", "excluded", result_id, None, client, "result.include")

    def exclusion(self, result_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT excluded FROM results WHERE id = ?", (result_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def review_result(self, result_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        return self._set_json("results", "review", result_id, {**review, "at": time.time()}, client, "result.review",
                              seen)

    def review_case(self, case_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        """The case's review; it lists the fields it covered, as the reviewer saw them."""
        with self._lock:
            fields = [r[0] for r in self._db.execute("SELECT id FROM results WHERE case_id = ? AND excluded IS NULL "
                                                     "ORDER BY id", (case_id,))]
        return self._set_json("cases", "review", case_id, {**review, "fields": fields, "at": time.time()}, client,
                              "case.review", seen)

    def mark_exported(self, result_ids: list[int], case_id: int | None, client: str, what: str) -> None:
        now = time.time()
        with self._lock, self._transaction():
            self._db.executemany("UPDATE results SET exported = ? WHERE id = ?", [(now, i) for i in result_ids])
            if case_id is not None:
                self._db.execute("UPDATE cases SET exported = ? WHERE id = ?", (now, case_id))
            self._audit_locked(client, "export", None, {"what": what, "case_id": case_id, "results": len(result_ids)})

    def file_path(self, result_id: int, kind: str) -> Path | None:
        if kind not in ("image", "overlay"):  # a column name: never interpolate anything else
            raise ValueError(f"unknown result file kind {kind!r}")
        with self._lock:
            row = self._db.execute(f"SELECT {kind} FROM results WHERE id = ?", (result_id,)).fetchone()
        return self.images / row[0] if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- retention ----------------------------------------------------------------------

    def _delete(self, rows: list[tuple], rule: str) -> int:
        if not rows:
            return 0
        with self._lock, self._transaction():
            self._db.executemany("DELETE FROM results WHERE id = ?", [(r[0],) for r in rows])
        for _, image, overlay in rows:  # after the commit: a crash here leaves only orphans
            (self.images / image).unlink(missing_ok=True)
            (self.images / overlay).unlink(missing_ok=True)
        ids = [r[0] for r in rows]
        log.info("retention (%s) deleted %d results: ids %s", rule, len(ids), ids)
        self.audit("device", "retention.delete", before={"ids": ids}, after={"rule": rule})
        return len(ids)

    #: Results retention may touch: never a field of an open case (a case nobody has reviewed);
    #: reviewed or exported results go first, then the oldest.
    # Nothing of a case that is not signed out is deleted, nor a field of a signed-out case
    # younger than the retention age (the ``?`` is the age cutoff on the running clock): a case
    # still collecting fields or awaiting sign-out keeps every field it answered for.
    _DELETABLE = ("FROM results WHERE (case_id IS NULL OR (run_seconds < ? AND case_id IN "
                  "(SELECT id FROM cases WHERE signed IS NOT NULL)))")
    _DELETION_ORDER = "ORDER BY (review IS NULL AND exported IS NULL AND case_id IS NULL), id"  # signed-out cases first

    def apply_retention(self) -> int:
        """Delete beyond the count and beyond the age on the device's running clock: fields of
        signed-out cases past the retention age and fields in no case, reviewed or exported
        first, then oldest first; never anything of a case not signed out."""
        cutoff = self.run_seconds() - self.cfg.max_age_days * 86400
        with self._lock:
            excess = int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]) - self.cfg.max_results
            by_count = self._db.execute(f"SELECT id, image, overlay {self._DELETABLE} {self._DELETION_ORDER} LIMIT ?",
                                        (cutoff, max(excess, 0))).fetchall()
        removed = self._delete(by_count, f"more than {self.cfg.max_results} results")
        with self._lock:
            by_age = self._db.execute(f"SELECT id, image, overlay {self._DELETABLE} AND run_seconds < ? "
                                      f"{self._DELETION_ORDER} LIMIT 1000", (cutoff, cutoff)).fetchall()
        return removed + self._delete(by_age, f"older than {self.cfg.max_age_days:g} days of device running time")

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        """Persist the clock and checkpoint the WAL; on a full disk the WAL stays (it is
        replayed at the next start) and the connection is still closed."""
        with self._lock:
            try:
                self._persist_clock()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("store: checkpoint at close failed (%s); the WAL is replayed at the next start", exc)
            finally:
                self._db.close()
