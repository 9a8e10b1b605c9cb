"""The district's second reads of a case (issue 37), as the device fetched them back.

A district hematologist's read (positive, negative or uncertain, a comment, signed by name) is
stored on the district server as a DICOM structured report in the case's study
(``edge.record.dicom.second_read_sr``); the sender (``edge.device.district``) finds it there and
adds it here. A read is an addendum to the case by a named remote reader: it is shown beside the
clinic's sign-out, never written over it (only the clinic amends its own case), and every read
added is in the audit log. One row an SR instance, so fetching again adds nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edge.record.db import Database

#: What a second read may call a case.
CALLS = ("positive", "negative", "uncertain")


def check_read(call: str, reader: str) -> None:
    """ValueError unless ``call`` is a read's call and ``reader`` names who signs it: the one
    rule for a read written (``edge.record.dicom.second_read_sr``) and a read fetched back."""
    if call not in CALLS:
        raise ValueError(f"a second read's call is one of {', '.join(CALLS)}, not {call!r}")
    if not reader.strip():
        raise ValueError("a second read is signed by its reader's name")


@dataclass(frozen=True)
class SecondRead:
    """One read of a case by the district's named reader."""

    sop_uid: str
    reader: str
    call: str
    comment: str
    read_at: str  # as the reader's report dates it (DICOM date and time, ISO)

    def __post_init__(self) -> None:
        check_read(self.call, self.reader)


class SecondReads:
    def __init__(self, db: Database) -> None:
        self.db = db

    def known(self, case_id: int) -> set[str]:
        """The SOP instance UIDs of the reads already here for ``case_id``."""
        with self.db.reading() as r:
            return {row[0] for row in r.execute("SELECT sop_uid FROM second_reads WHERE case_id = ?", (case_id,))}

    def add(self, case_id: int, read: SecondRead) -> bool:
        """Add ``read`` to the case, audited; False when it was here already."""
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM second_reads WHERE sop_uid = ?", (read.sop_uid,)).fetchone():
                return False
            tx.execute("INSERT INTO second_reads(case_id, sop_uid, reader, call, comment, read_at, fetched) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (case_id, read.sop_uid, read.reader, read.call, read.comment, read.read_at, time.time()))
            tx.audit(f"district reader {read.reader}", "district.second_read", None,
                     {"case_id": case_id, "call": read.call, "comment": read.comment, "sop_uid": read.sop_uid})
        return True

    def for_case(self, case_id: int) -> list[dict[str, Any]]:
        """The case's second reads, oldest first, each with what the case card says."""
        with self.db.reading() as r:
            rows = r.execute("SELECT sop_uid, reader, call, comment, read_at, fetched FROM second_reads "
                             "WHERE case_id = ? ORDER BY id", (case_id,)).fetchall()
        out = []
        for sop_uid, reader, call, comment, read_at, fetched in rows:
            text = f"District second read by {reader}" + (f" ({read_at})" if read_at else "") + f": {call}"
            out.append({"sop_uid": sop_uid, "reader": reader, "call": call, "comment": comment, "read_at": read_at,
                        "fetched": fetched, "text": text + (f". {comment}" if comment else "")})
        return out
