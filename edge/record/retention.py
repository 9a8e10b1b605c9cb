"""Retention: what the configured policy allows to be deleted, oldest first, and nothing else.

A clinic's record is not a cache: retention deletes beyond ``max_results`` and beyond
``max_age_days`` of the device's own running time (``Database.run_seconds``: a wall clock
that jumps must not delete history), never a field of a case not yet signed out, and every
deletion goes to the log and the append-only audit table."""

from __future__ import annotations

import logging

from edge.record.db import Database

log = logging.getLogger("blastscope.store")

#: Results retention may touch. Nothing of a case that is not signed out is deleted, nor a
#: field of a signed-out case younger than the retention age (the ``?`` is the age cutoff on
#: the running clock): a case still collecting fields or awaiting sign-out keeps every field
#: it answered for.
DELETABLE = ("FROM results WHERE (case_id IS NULL OR (run_seconds < ? AND case_id IN "
             "(SELECT id FROM cases WHERE signed IS NOT NULL)))")
#: Signed-out cases' fields, reviewed or exported fields first, then the oldest.
DELETION_ORDER = "ORDER BY (review IS NULL AND exported IS NULL AND case_id IS NULL), id"


def _delete(db: Database, rows: list[tuple], rule: str) -> int:
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    with db.transaction() as tx:
        tx.executemany("DELETE FROM results WHERE id = ?", [(i,) for i in ids])
        tx.audit("device", "retention.delete", {"ids": ids}, {"rule": rule})
    for _, image, overlay in rows:  # after the commit: a crash here leaves only orphans
        (db.images / image).unlink(missing_ok=True)
        (db.images / overlay).unlink(missing_ok=True)
    log.info("retention (%s) deleted %d results: ids %s", rule, len(ids), ids)
    return len(ids)


def apply_retention(db: Database) -> int:
    """Delete beyond the count and beyond the age on the device's running clock; how many."""
    cutoff = db.run_seconds() - db.cfg.max_age_days * 86400
    with db.reading() as r:
        excess = int(r.execute("SELECT COUNT(*) FROM results").fetchone()[0]) - db.cfg.max_results
        by_count = r.execute(f"SELECT id, image, overlay {DELETABLE} {DELETION_ORDER} LIMIT ?",
                             (cutoff, max(excess, 0))).fetchall()
    removed = _delete(db, by_count, f"more than {db.cfg.max_results} results")
    with db.reading() as r:
        by_age = r.execute(f"SELECT id, image, overlay {DELETABLE} AND run_seconds < ? {DELETION_ORDER} LIMIT 1000",
                           (cutoff, cutoff)).fetchall()
    return removed + _delete(db, by_age, f"older than {db.cfg.max_age_days:g} days of device running time")
