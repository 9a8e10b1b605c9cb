"""How a field and a case come out of their rows: one place for the columns each read selects
and the JSON each row becomes, so ``fields``, ``cases`` and the exports agree."""

from __future__ import annotations

import json
import time
from typing import Any

#: The columns of a field's read, in ``field_row``'s order.
FIELD_COLUMNS = "id, data, case_id, excluded, review, exported, revision, cell_reviews"

#: A case's read, with how many of its fields count (excluded ones do not).
CASE_SELECT = ("SELECT c.id, c.code, c.note, c.created, c.call, c.review, c.exported, c.revision, c.changed, "
               "c.signed, c.version, c.amendments, "
               "(SELECT COUNT(*) FROM results r WHERE r.case_id = c.id AND r.excluded IS NULL) FROM cases c")


def field_row(row: tuple) -> dict[str, Any]:
    rid, data, case_id, excluded, review, exported, revision, cell_reviews = row
    record = json.loads(data)
    record.update(id=rid, case_id=case_id, excluded=json.loads(excluded) if excluded else None,
                  review=json.loads(review) if review else None, exported=exported, revision=revision,
                  cell_reviews=json.loads(cell_reviews))
    return record


def case_row(row: tuple) -> dict[str, Any]:
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
