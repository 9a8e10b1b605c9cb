"""The audit log as a hash chain: each row's hash covers the row and the previous row's hash.

SQLite triggers already refuse an UPDATE or DELETE through the database engine, but anyone
with the file can drop a trigger, edit a row and put the trigger back. With the chain, a
changed row no longer matches its hash, a row taken out breaks the ids' sequence and the next
row's link, and rows cut from the end leave SQLite's own record of the highest id used
(``sqlite_sequence``, kept by AUTOINCREMENT) above the last row. ``verify`` walks the chain;
the daemon shows its verdict in ``/api/status`` and ``blastscope-edge audit verify`` prints it.

Rows cut from the end with ``sqlite_sequence`` lowered too leave no trace inside the database,
so the chain's head (row count and hash) is also written to an **anchor** outside it
(``Anchor``: an append-only file beside the database, each line fsynced) each time the
chain is found intact, and into every sign-out and printed report. A log with fewer rows than
the last anchor, or whose row at the anchor's count has another hash, has lost rows or been
rewritten, and ``verify`` says so with what the anchor recorded. Verification walks only the
rows added since the last anchor, on its own read-only connection (outside the store's lock:
with 300,000 rows a full walk under the lock stalled every request for 18 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The "previous hash" of the first row.
GENESIS = "0" * 64


def row_hash(previous: str, row_id: int, at: float, client: str, action: str, before: str | None,
             after: str | None) -> str:
    """SHA-256 over the previous hash and the row's fields, in a canonical JSON form."""
    body = json.dumps([previous, row_id, repr(float(at)), client, action, before, after], ensure_ascii=True,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditCheck:
    rows: int
    intact: bool
    problem: str | None  # what is wrong, naming the row
    head: str  # the last row's hash (GENESIS for an empty log)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "intact": self.intact, "problem": self.problem, "head": self.head}


def head(db: sqlite3.Connection) -> tuple[int, str]:
    """The last row's id and hash (0 and GENESIS for an empty log)."""
    row = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def append(db: sqlite3.Connection, at: float, client: str, action: str, before: str | None, after: str | None) -> None:
    """Insert the next row with its hash; the caller holds the store's lock and transaction."""
    last_id, last_hash = head(db)
    row_id = last_id + 1  # consecutive ids: a row taken out leaves a gap
    db.execute("INSERT INTO audit(id, at, client, action, before, after, hash) VALUES (?,?,?,?,?,?,?)",
               (row_id, at, client, action, before, after, row_hash(last_hash, row_id, at, client, action, before, after)))


@dataclass(frozen=True)
class Mark:
    """A point of the chain known to be intact: its row count and last hash, and when."""

    rows: int
    head: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "head": self.head, "at": round(self.at, 3)}


class Anchor:
    """The chain's head kept outside the database: an append-only file of JSON lines, each
    fsynced. Its last readable line is the mark a later verification must still find."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def last(self) -> Mark | None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                data = json.loads(line)
                return Mark(int(data["rows"]), str(data["head"]), float(data["at"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a power cut: the one before it still holds
        return None

    def write(self, mark: Mark) -> None:
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(mark.to_dict()) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def verify(db: sqlite3.Connection, since: Mark | None = None, whole: bool = False) -> AuditCheck:
    """Walk the chain from the first row (``whole``, or no mark), else from ``since``, a mark
    found intact before; either way a log that no longer holds ``since`` has lost rows or
    been rewritten. Rows before the mark are only re-read by a whole walk (the command's, and
    the first of each daemon run)."""
    previous, expected_id, rows = GENESIS, 1, 0
    if since is not None and since.rows > 0:
        found = db.execute("SELECT hash FROM audit WHERE id = ?", (since.rows,)).fetchone()
        count = int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(since.at))
        if found is None:
            return AuditCheck(count, False, f"rows were removed: the anchor of {when} recorded {since.rows} rows "
                                            f"ending in hash {since.head[:16]}, the log now has {count}", since.head)
        if found[0] != since.head:
            return AuditCheck(count, False, f"the log was rewritten: row {since.rows} no longer has the hash the anchor "
                                            f"of {when} recorded ({since.head[:16]})", since.head)
        if not whole:
            previous, expected_id, rows = since.head, since.rows + 1, since.rows
    for row_id, at, client, action, before, after, stored in db.execute(
            "SELECT id, at, client, action, before, after, hash FROM audit WHERE id >= ? ORDER BY id", (expected_id,)):
        if row_id != expected_id:
            return AuditCheck(rows, False, f"rows {expected_id} to {row_id - 1} are missing", previous)
        if stored != row_hash(previous, row_id, at, client, action, before, after):
            return AuditCheck(rows, False, f"row {row_id} ({action}) does not match its hash: it, or the row before it, "
                                           "was changed after it was written", previous)
        previous, expected_id, rows = stored, row_id + 1, rows + 1
    sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    if sequence and int(sequence[0]) > rows:
        return AuditCheck(rows, False, f"rows {rows + 1} to {int(sequence[0])} were removed from the end", previous)
    return AuditCheck(rows, True, None, previous)


def chain_existing(db: sqlite3.Connection) -> None:
    """Give the rows written before the chain existed their hashes, in id order (the schema
    migration that adds the column; inside its transaction). They are vouched for from then on,
    not before."""
    db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    previous = GENESIS
    for row_id, at, client, action, before, after in db.execute(
            "SELECT id, at, client, action, before, after FROM audit ORDER BY id").fetchall():
        previous = row_hash(previous, row_id, at, client, action, before, after)
        db.execute("UPDATE audit SET hash = ? WHERE id = ?", (previous, row_id))
    db.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
               "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
