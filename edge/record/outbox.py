"""The district outbox (issue 37): cases waiting to go to the district's DICOM server.

A case is queued in the same transaction as its sign-out (or a "second read wanted"), so a
signed case is never lost between the two; the sender (``edge.device.district``) takes what is
due, and marks it sent, or waiting with the reason and the next try, or refused (the server
said no: wrong credentials). One row a case: queued again (an amendment signed anew) it is
sent again, with the same UIDs, which the server keeps as one case."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from edge.record.db import Database, UnitOfWork

STATES = ("waiting", "sent", "refused")


@dataclass(frozen=True)
class Parcel:
    """One case in the outbox: when and why it was queued, where its sending stands."""

    case_id: int
    queued: float
    queued_by: str
    why: str
    state: str
    tries: int
    last_error: str | None
    next_try: float
    sent: float | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["text"] = self.text()
        return d

    def text(self) -> str:
        """What the case card says."""
        if self.state == "sent":
            return f"sent to district ({time.strftime('%Y-%m-%d %H:%M', time.localtime(self.sent or 0))})"
        if self.state == "refused":
            return f"refused: {self.last_error}"
        if self.tries:
            return f"waiting ({self.tries} {'try' if self.tries == 1 else 'tries'}, last: {self.last_error})"
        return "waiting to be sent to district"


def queue(tx: UnitOfWork, case_id: int, client: str, why: str) -> None:
    """Queue ``case_id`` inside the caller's transaction (the sign-out's own)."""
    tx.execute("INSERT INTO outbox(case_id, queued, queued_by, why) VALUES (?,?,?,?) ON CONFLICT(case_id) DO UPDATE SET "
               "queued = excluded.queued, queued_by = excluded.queued_by, why = excluded.why, state = 'waiting', "
               "tries = 0, last_error = NULL, next_try = 0, sent = NULL", (case_id, time.time(), client, why))
    tx.audit(client, "district.queue", None, {"case_id": case_id, "why": why})


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    _SELECT = "SELECT case_id, queued, queued_by, why, state, tries, last_error, next_try, sent FROM outbox"

    def get(self, case_id: int) -> Parcel | None:
        with self.db.reading() as r:
            row = r.execute(f"{self._SELECT} WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else Parcel(*row)

    def due(self, now: float, limit: int = 10) -> list[Parcel]:
        """Parcels to try now: waiting or refused, whose next try has come, oldest first."""
        with self.db.reading() as r:
            rows = r.execute(f"{self._SELECT} WHERE state != 'sent' AND next_try <= ? ORDER BY queued LIMIT ?",
                             (now, limit)).fetchall()
        return [Parcel(*row) for row in rows]

    def waiting(self) -> tuple[int, float | None]:
        """How many are not yet sent, and the age of the oldest (seconds)."""
        with self.db.reading() as r:
            n, oldest = r.execute("SELECT COUNT(*), MIN(queued) FROM outbox WHERE state != 'sent'").fetchone()
        return int(n), (None if oldest is None else time.time() - float(oldest))

    def sent_since(self, since: float, limit: int = 200) -> list[int]:
        """The cases the district has had since ``since``, newest first: where its second reads
        may come back from."""
        with self.db.reading() as r:
            rows = r.execute("SELECT case_id FROM outbox WHERE state = 'sent' AND sent >= ? ORDER BY sent DESC LIMIT ?",
                             (since, limit)).fetchall()
        return [int(row[0]) for row in rows]

    def queue(self, case_id: int, client: str, why: str) -> None:
        with self.db.transaction() as tx:
            queue(tx, case_id, client, why)

    def sent(self, case_id: int, instances: int, via: str = "DICOMweb") -> None:
        """The district has the case (over DICOMweb, or acknowledged from a USB stick)."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE outbox SET state = 'sent', sent = ?, tries = tries + 1, last_error = NULL WHERE case_id = ?",
                       (time.time(), case_id))
            tx.audit("district sender", "district.sent", None, {"case_id": case_id, "instances": instances, "via": via})

    def failed(self, case_id: int, reason: str, refused: bool, retry_s: float) -> None:
        """A try failed: ``refused`` when the server said no (it will not change by itself), else
        waiting; tried again after ``retry_s`` either way (a fixed password is picked up)."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT state, last_error FROM outbox WHERE case_id = ?", (case_id,)).fetchone()
            tx.execute("UPDATE outbox SET state = ?, tries = tries + 1, last_error = ?, next_try = ? WHERE case_id = ?",
                       ("refused" if refused else "waiting", reason, time.time() + retry_s, case_id))
            if row is not None and row[1] != reason:  # each new reason once in the audit log, not every retry
                tx.audit("district sender", "district.failed", None, {"case_id": case_id, "reason": reason})
