"""What a change to the record can fail with, each saying what happened and what to do."""

from __future__ import annotations

import errno
import sqlite3


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


class SchemaNewer(RuntimeError):
    """The record was written by a newer release: this one stops (no restart loop) and says what to do."""


class Stale(ValueError):
    """A change made on what an out-of-date page showed; says what changed, who and when."""


class Locked(ValueError):
    """A change to a signed-out case (or one of its fields); says who signed it and how to amend."""
