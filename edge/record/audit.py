"""The audit log as a hash chain: each row's hash covers the row and the previous row's hash.

SQLite triggers already refuse an UPDATE or DELETE through the database engine, but anyone
with the file can drop a trigger, edit a row and put the trigger back. With the chain, a
changed row no longer matches its hash, a row taken out breaks the ids' sequence and the next
row's link, and rows cut from the end leave SQLite's own record of the highest id used
(``sqlite_sequence``, kept by AUTOINCREMENT) above the last row. ``verify`` walks the chain;
the daemon shows its verdict in ``/api/status`` and ``blastscope-edge audit verify`` prints it.
What it cannot do is prove the log against someone who rewrites the whole chain from the row
they changed: for that an export of the head hash kept elsewhere (a printed report) is needed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
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


def verify(db: sqlite3.Connection) -> AuditCheck:
    previous, expected_id, rows = GENESIS, 1, 0
    for row_id, at, client, action, before, after, stored in db.execute(
            "SELECT id, at, client, action, before, after, hash FROM audit ORDER BY id"):
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
