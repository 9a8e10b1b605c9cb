"""Cases and what is done to them: create, review a field, a cell or the case, exclude and
include a field, sign out, amend.

The rule "a signed-out case takes no change" lives in one function, ``refuse_if_signed``,
which every mutation of a case or of one of its fields calls inside its own transaction
(``edge.record.fields`` calls it too when a field is added). Every change bumps the case's
revision with who, when and what (``mark_changed``), so a form opened on an older revision
is refused with what changed (``Stale``)."""

from __future__ import annotations

import json
import time
from typing import Any

from edge.record.db import Database, UnitOfWork
from edge.record.errors import Locked, Stale
from edge.record.outbox import queue as queue_parcel
from edge.record.rows import CASE_SELECT, FIELD_COLUMNS, case_row, field_row

#: What ``Cases.include`` returns for a field that does not exist.
MISSING = object()


def locked_message(code: str, signed: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(signed["at"]))
    return (f"case {code} was signed out by {signed['reviewer']} on {when} ({signed['call']}): it is locked; "
            "amend it, with a reason, to change it")


def refuse_if_signed(tx: UnitOfWork, case_id: int) -> None:
    """``Locked`` when the case is signed out: the one place the rule is written."""
    row = tx.execute("SELECT code, signed FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is not None and row[1]:
        raise Locked(locked_message(row[0], json.loads(row[1])))


def mark_changed(tx: UnitOfWork, case_id: int, client: str, what: str) -> int:
    """A case's content changed: its revision goes up, with who, when and what."""
    tx.execute("UPDATE cases SET revision = revision + 1, changed = ? WHERE id = ?",
               (json.dumps({"by": client, "at": time.time(), "what": what}), case_id))
    return int(tx.execute("SELECT revision FROM cases WHERE id = ?", (case_id,)).fetchone()[0])


def stale(kind: str, changed: dict[str, Any] | None) -> Stale:
    if not changed:
        return Stale(f"this {kind} changed since you opened it: reload it and review again")
    when = time.strftime("%H:%M:%S", time.localtime(changed["at"]))
    return Stale(f"this {kind} changed since you opened it ({changed['what']}, by {changed['by']} at {when}): "
                 "reload it and review again")


class Cases:
    """The cases of one record database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading ----------------------------------------------------------------------------

    def get(self, case_id: int) -> dict[str, Any] | None:
        with self.db.reading() as r:
            row = r.execute(f"{CASE_SELECT} WHERE c.id = ?", (case_id,)).fetchone()
            if row is None:
                return None
            fields = r.execute(f"SELECT {FIELD_COLUMNS} FROM results WHERE case_id = ? ORDER BY id",
                               (case_id,)).fetchall()
        return {**case_row(row), "fields": [field_row(f) for f in fields]}

    def summary(self, case_id: int) -> dict[str, Any] | None:
        """A case without its fields (what an export row names)."""
        with self.db.reading() as r:
            row = r.execute(f"{CASE_SELECT} WHERE c.id = ?", (case_id,)).fetchone()
        return case_row(row) if row else None

    def list(self, limit: int, offset: int, call: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE c.call = ?", (call,)) if call else ("", ())
        with self.db.reading() as r:
            total = int(r.execute(f"SELECT COUNT(*) FROM cases c {where}", args).fetchone()[0])
            rows = r.execute(f"{CASE_SELECT} {where} ORDER BY c.id DESC LIMIT ? OFFSET ?",
                             (*args, limit, offset)).fetchall()
        return [case_row(row) for row in rows], total

    def exclusion(self, result_id: int) -> dict[str, Any] | None:
        with self.db.reading() as r:
            row = r.execute("SELECT excluded FROM results WHERE id = ?", (result_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # -- changing ---------------------------------------------------------------------------

    def create(self, code: str, note: str, client: str) -> int:
        """A new case; an empty ``code`` is numbered under the same lock as the insert, so
        parallel requests never get the same number. ``ValueError`` when a given code is taken."""
        with self.db.transaction() as tx:
            return tx.create_case(code or tx.next_case_code(), note, client)

    def set_call(self, case_id: int, call: str) -> None:
        """The model's case call, kept for the history filter (recomputed from the fields)."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE cases SET call = ? WHERE id = ?", (call, case_id))

    def set_json(self, table: str, column: str, row_id: int, value: Any, client: str, action: str,
                 seen: int | None = None) -> Any:
        """Set a JSON column, bump the revisions it changes and audit before/after in one
        transaction; None when the row is missing. ``seen``: the revision the change was made
        on; ``Stale`` when the row (a field, or a case) has changed since."""
        assert (table, column) in {("results", "excluded"), ("results", "review"), ("cases", "review")}
        with self.db.transaction() as tx:
            if table == "cases":
                row = tx.execute("SELECT review, revision, changed FROM cases WHERE id = ?", (row_id,)).fetchone()
            else:
                row = tx.execute(f"SELECT r.{column}, r.revision, c.changed, r.case_id FROM results r "
                                 "LEFT JOIN cases c ON c.id = r.case_id WHERE r.id = ?", (row_id,)).fetchone()
            if row is None:
                return None
            case_id = row_id if table == "cases" else row[3]
            if case_id is not None:
                refuse_if_signed(tx, case_id)
            if seen is not None and seen != row[1]:
                raise stale("case" if table == "cases" else "field", json.loads(row[2]) if row[2] else None)
            before = json.loads(row[0]) if row[0] else None
            if table == "cases":  # the review names the revision it leaves the case at
                value = {**value, "revision": row[1] + 1}
            tx.execute(f"UPDATE {table} SET {column} = ?, revision = revision + 1 WHERE id = ?",
                       (None if value is None else json.dumps(value), row_id))
            if table == "cases":
                tx.execute("UPDATE cases SET changed = ? WHERE id = ?",
                           (json.dumps({"by": client, "at": time.time(), "what": "case reviewed"}), row_id))
            elif row[3] is not None:  # a field of a case: the case changed too
                what = ("reviewed" if column != "excluded" else "excluded" if value is not None else "included again")
                mark_changed(tx, row[3], client, f"field #{row_id} {what}")
            tx.audit(client, action, {"id": row_id, column: before}, {"id": row_id, column: value})
        return value

    def sign(self, case_id: int, signature: dict[str, Any], client: str, seen: int,
             district: bool = False) -> dict[str, Any] | None:
        """Sign the case out with the final call: locked from now on (no field added, reviewed or
        excluded) until amended. ``Stale`` when it changed since ``seen``; None when missing.
        With ``district``, queued for the district server in the same transaction."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT revision, changed, version FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                return None
            refuse_if_signed(tx, case_id)
            if seen != row[0]:
                raise stale("case", json.loads(row[1]) if row[1] else None)
            fields = [r[0] for r in tx.execute("SELECT id FROM results WHERE case_id = ? AND excluded IS NULL "
                                               "ORDER BY id", (case_id,))]
            head = tx.audit_head()  # the chain as it stood before this sign-out's own row
            signed = {**signature, "at": time.time(), "fields": fields, "version": row[2], "revision": row[0] + 1,
                      "audit_head": head}
            tx.execute("UPDATE cases SET signed = ?, revision = revision + 1, changed = ? WHERE id = ?",
                       (json.dumps(signed), json.dumps({"by": client, "at": signed["at"], "what": "case signed out"}),
                        case_id))
            tx.audit(client, "case.sign", {"id": case_id, "signed": None}, {"id": case_id, "signed": signed})
            if district:
                queue_parcel(tx, case_id, client, "signed out")
        return signed

    def amend(self, case_id: int, reason: str, client: str, seen: int) -> dict[str, Any] | None:
        """Unlock a signed case as a new version; the sign-out it replaces is kept with the
        reason. ``Stale`` when the case is not signed or changed since ``seen``."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT signed, amendments, revision, changed, version FROM cases WHERE id = ?",
                             (case_id,)).fetchone()
            if row is None:
                return None
            if not row[0]:
                raise Stale("this case is not signed out: there is nothing to amend")
            if seen != row[2]:
                raise stale("case", json.loads(row[3]) if row[3] else None)
            amendment = {"replaces": json.loads(row[0]), "reason": reason, "by": client, "at": time.time(),
                         "version": row[4] + 1}
            history = json.loads(row[1]) + [amendment]
            tx.execute("UPDATE cases SET signed = NULL, amendments = ?, version = version + 1, "
                       "revision = revision + 1, changed = ? WHERE id = ?",
                       (json.dumps(history), json.dumps({"by": client, "at": amendment["at"],
                                                         "what": f"amended to version {amendment['version']}"}),
                        case_id))
            tx.audit(client, "case.amend", {"id": case_id, "signed": amendment["replaces"]},
                     {"id": case_id, "reason": reason, "version": amendment["version"]})
        return amendment

    def review_cell(self, result_id: int, index: int, review: dict[str, Any], client: str, seen: int) -> Any:
        """A reviewer's class for cell ``index`` of a field (the model's stays in the record);
        refused like a field review when the field changed since ``seen`` or its case is signed
        out. None when the field is missing; ``ValueError`` when it has no such cell."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT r.data, r.cell_reviews, r.revision, r.case_id, c.changed FROM results r "
                             "LEFT JOIN cases c ON c.id = r.case_id WHERE r.id = ?", (result_id,)).fetchone()
            if row is None:
                return None
            cells = json.loads(row[0]).get("cells") or []
            if not 0 <= index < len(cells):
                raise ValueError(f"field #{result_id} has {len(cells)} cells; there is no cell {index + 1}")
            if row[3] is not None:
                refuse_if_signed(tx, row[3])
            if seen != row[2]:
                raise stale("field", json.loads(row[4]) if row[4] else None)
            reviews = json.loads(row[1])
            before = reviews.get(str(index))
            reviews[str(index)] = {**review, "model_label": cells[index].get("label"), "at": time.time()}
            tx.execute("UPDATE results SET cell_reviews = ?, revision = revision + 1 WHERE id = ?",
                       (json.dumps(reviews), result_id))
            if row[3] is not None:
                mark_changed(tx, row[3], client, f"cell {index + 1} of field #{result_id} reclassified")
            tx.audit(client, "cell.review", {"id": result_id, "cell": index + 1, "review": before},
                     {"id": result_id, "cell": index + 1, "review": reviews[str(index)]})
        return reviews[str(index)]

    def exclude(self, result_id: int, reason: str, client: str) -> Any:
        return self.set_json("results", "excluded", result_id, {"reason": reason, "at": time.time()}, client,
                             "result.exclude")

    def include(self, result_id: int, client: str) -> Any:
        """Count an excluded field again (a duplicate analysed anyway, or an exclusion undone);
        returns None (no exclusion any more), or ``MISSING`` for no such field."""
        with self.db.reading() as r:
            row = r.execute("SELECT excluded FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            return MISSING
        return self.set_json("results", "excluded", result_id, None, client, "result.include")

    def review_field(self, result_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        return self.set_json("results", "review", result_id, {**review, "at": time.time()}, client, "result.review",
                             seen)

    def review(self, case_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        """The case's review; it lists the fields it covered, as the reviewer saw them."""
        with self.db.reading() as r:
            fields = [row[0] for row in r.execute("SELECT id FROM results WHERE case_id = ? AND excluded IS NULL "
                                                  "ORDER BY id", (case_id,))]
        return self.set_json("cases", "review", case_id, {**review, "fields": fields, "at": time.time()}, client,
                             "case.review", seen)
