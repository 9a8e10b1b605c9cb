"""The record of site verifications: the criteria fixed at the start, the known slides with
their truth, the device's call on each, and the signed outcome.

A verification's slides are ordinary cases (fields, reviews and exports work as for any
case); the truth lives here, apart from the case, and the case view never shows it until
the slide is marked done, so nobody reading the screen while the fields are analysed is led
by it. It shares the clinic record's database, lock and audit chain (``edge.record.db.Database``), so a slide,
its case and their audit rows commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from edge.analysis.verification import KINDS, TRUTHS, Criteria, Slide
from edge.record.db import Database, Reading, UnitOfWork

#: A verification's states: open (slides being read), then passed or failed when an admin
#: closes it, or abandoned (with a reason) when it is given up.
STATES = ("open", "passed", "failed", "abandoned")


def seal(truth: str, kind: str, nonce: str) -> str:
    """The hash a slide's truth is sealed with: SHA-256 of the nonce, truth and kind. The nonce
    (128 random bits) makes the two possible truths impossible to tell apart from the hash."""
    return hashlib.sha256(f"{nonce}|{truth}|{kind}".encode()).hexdigest()


class VerificationError(ValueError):
    """A verification step that cannot be taken now; the message says why and what to do."""


@dataclass(frozen=True)
class Verification:
    id: int
    started: float
    started_by: str
    model_id: str
    camera: dict[str, Any]
    criteria: Criteria
    state: str
    finished: float | None
    finished_by: str | None
    outcome: dict[str, Any] | None  # the figures when it was closed
    baseline: dict[str, Any] | None  # the field figures drift is compared with
    note: str
    slides: list[Slide]
    confirmed_by: str | None = None  # the second admin who confirmed criteria below the floor
    site_reference: int | None = None  # the site reference in force when it started (None: none)

    def to_dict(self, reveal: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["criteria"] = self.criteria.model_dump()
        d["slides"] = [{**asdict(s), "done": s.done, "agrees": s.agrees,
                        **({} if reveal or s.done else {"truth": None, "kind": None})} for s in self.slides]
        return d


class Verifications:
    """Site verifications in the clinic record (the record database)."""

    def __init__(self, store: Database) -> None:
        self.store = store  # the tables are the store's migration 8

    # -- reading ----------------------------------------------------------------------------

    _SELECT = ("SELECT id, started, started_by, model_id, camera, criteria, state, finished, finished_by, outcome, "
               "baseline, note, confirmed_by, site_reference FROM verifications")

    @staticmethod
    def _slides(db: Reading, verification_id: int) -> list[Slide]:
        rows = db.execute(
            "SELECT s.case_id, c.code, s.truth, s.kind, s.call FROM verification_slides s JOIN cases c "
            "ON c.id = s.case_id WHERE s.verification_id = ? ORDER BY s.case_id", (verification_id,)).fetchall()
        return [Slide(case_id=r[0], code=r[1], truth=r[2], kind=r[3], call=r[4]) for r in rows]

    def _from_row(self, db: Reading, row: tuple) -> Verification:
        return Verification(
            id=row[0], started=row[1], started_by=row[2], model_id=row[3], camera=json.loads(row[4]),
            criteria=Criteria.model_validate(json.loads(row[5])), state=row[6], finished=row[7], finished_by=row[8],
            outcome=json.loads(row[9]) if row[9] else None, baseline=json.loads(row[10]) if row[10] else None,
            note=row[11], slides=self._slides(db, row[0]), confirmed_by=row[12], site_reference=row[13])

    def get(self, verification_id: int) -> Verification | None:
        with self.store.reading() as db:
            row = db.execute(f"{self._SELECT} WHERE id = ?", (verification_id,)).fetchone()
            return None if row is None else self._from_row(db, row)

    def all(self) -> list[Verification]:
        with self.store.reading() as db:
            rows = db.execute(f"{self._SELECT} ORDER BY id DESC").fetchall()
            return [self._from_row(db, r) for r in rows]

    def current(self) -> Verification | None:
        """The open verification, if one is under way (there is at most one)."""
        with self.store.reading() as db:
            row = db.execute(f"{self._SELECT} WHERE state = 'open' ORDER BY id DESC LIMIT 1").fetchone()
            return None if row is None else self._from_row(db, row)

    def last_passed(self) -> Verification | None:
        """The latest verification that passed *in the audit chain*: a row whose state says
        passed with no "verification.passed" audit row for it was set by hand (issue 34), and
        does not make the device verified (``unsealed`` names it)."""
        with self.store.reading() as db:
            for row in db.execute(f"{self._SELECT} WHERE state = 'passed' ORDER BY id DESC").fetchall():
                if self._sealed(db, int(row[0])):
                    return self._from_row(db, row)
            return None

    def unsealed(self) -> list[int]:
        """Verifications marked passed with no audit row that passed them: edited by hand."""
        with self.store.reading() as db:
            ids = [int(r[0]) for r in db.execute("SELECT id FROM verifications WHERE state = 'passed'").fetchall()]
            return [i for i in ids if not self._sealed(db, i)]

    @staticmethod
    def _sealed(db: Reading, verification_id: int) -> bool:
        return db.execute("SELECT 1 FROM audit WHERE action = 'verification.passed' AND "
                          "json_extract(after, '$.verification_id') = ? LIMIT 1", (verification_id,)).fetchone() is not None

    def slide_of_case(self, case_id: int) -> tuple[int, Slide] | None:
        """The verification a case is a known slide of, and the slide, or None."""
        with self.store.reading() as db:
            row = db.execute("SELECT verification_id FROM verification_slides WHERE case_id = ?", (case_id,)).fetchone()
            if row is None:
                return None
            slide = next(s for s in self._slides(db, row[0]) if s.case_id == case_id)
            return int(row[0]), slide

    # -- changing ---------------------------------------------------------------------------

    def start(self, criteria: Criteria, model_id: str, camera: dict[str, Any], client: str, note: str = "",
              confirmed_by: str | None = None, site_reference: int | None = None) -> int:
        """Open a verification for the model and camera settings in force; one at a time.
        Criteria below the floor (``Criteria.below_floor``) need ``confirmed_by``, a second
        admin whose PIN the caller checked."""
        if (lowered := criteria.below_floor()) and not confirmed_by:
            raise VerificationError("these criteria are below the floor (" + "; ".join(lowered) + "): a second "
                                    "admin must confirm them with their name and PIN, and they are then printed "
                                    "wherever this verification is named")
        with self.store.transaction() as tx:
            open_row = tx.execute("SELECT id, started_by FROM verifications WHERE state = 'open'").fetchone()
            if open_row is not None:
                raise VerificationError(f"verification #{open_row[0]} (started by {open_row[1]}) is still open: "
                                        "finish or abandon it first")
            verification_id = tx.insert(
                "INSERT INTO verifications(started, started_by, model_id, camera, criteria, note, confirmed_by, "
                "site_reference) VALUES (?,?,?,?,?,?,?,?)",
                (time.time(), client, model_id, json.dumps(camera, sort_keys=True), criteria.model_dump_json(), note,
                 confirmed_by if lowered else None, site_reference))
            tx.audit(client, "verification.start", None,
                     {"verification_id": verification_id, "model_id": model_id, "camera": camera,
                      "criteria": criteria.model_dump(), "note": note, "site_reference": site_reference,
                      **({"below_floor": lowered, "confirmed_by": confirmed_by} if lowered else {})})
        return verification_id

    @staticmethod
    def _check_open(db: Reading | UnitOfWork, verification_id: int) -> None:
        row = db.execute("SELECT state FROM verifications WHERE id = ?", (verification_id,)).fetchone()
        if row is None:
            raise LookupError(f"no verification {verification_id}")
        if row[0] != "open":
            raise VerificationError(f"verification #{verification_id} is {row[0]}: start a new one")

    def add_slide(self, verification_id: int, truth: str, kind: str, code: str, client: str) -> int:
        """A known slide: a new case for its fields, with its truth kept here. Returns the case id."""
        if truth not in TRUTHS:
            raise VerificationError(f"truth must be one of {', '.join(TRUTHS)}")
        if kind not in KINDS:
            raise VerificationError("kind must be empty or one of " + ", ".join(k for k in KINDS if k))
        if kind and truth != "negative":
            raise VerificationError(f"a {kind} slide is a negative slide (benign lymphoid cells that look like blasts)")
        try:
            with self.store.transaction() as tx:
                self._check_open(tx, verification_id)
                code = code or tx.next_case_code()
                case_id = tx.create_case(code, f"verification #{verification_id} slide", client,
                                         verification_id=verification_id)
                nonce = secrets.token_hex(16)
                tx.execute("INSERT INTO verification_slides(case_id, verification_id, truth, kind, entered, "
                           "entered_by, nonce) VALUES (?,?,?,?,?,?,?)",
                           (case_id, verification_id, truth, kind, time.time(), client, nonce))
                # sealed: the audit row, readable by reviewers and admins, holds only the hash of the
                # truth until the slide is done, when the reveal (truth, kind, nonce) lets anyone check it
                tx.audit(client, "verification.slide", None,
                         {"verification_id": verification_id, "case_id": case_id, "code": code,
                          "sealed_truth": seal(truth, kind, nonce)})
        except ValueError as exc:  # the code is taken
            raise VerificationError(str(exc)) from None
        return case_id

    def mark_done(self, case_id: int, call: str, client: str) -> Slide:
        """Freeze the device's case call on a known slide; only then is its truth shown."""
        if call not in ("positive", "negative", "uncertain"):
            raise VerificationError(f"the case has no call yet ({call}): analyse the fields its case rule needs first")
        with self.store.transaction() as tx:
            row = tx.execute("SELECT verification_id, done, truth, kind, nonce FROM verification_slides "
                             "WHERE case_id = ?", (case_id,)).fetchone()
            if row is None:
                raise LookupError(f"case {case_id} is not a verification slide")
            self._check_open(tx, row[0])
            if row[1] is not None:
                raise VerificationError("this slide is already done: its call is in the verification")
            tx.execute("UPDATE verification_slides SET done = ?, done_by = ?, call = ? WHERE case_id = ?",
                       (time.time(), client, call, case_id))
            tx.audit(client, "verification.slide_done", None,
                     {"verification_id": row[0], "case_id": case_id, "call": call,
                      "revealed": {"truth": row[2], "kind": row[3], "nonce": row[4]}})
            verification_id = int(row[0])
        with self.store.reading() as db:
            return next(s for s in self._slides(db, verification_id) if s.case_id == case_id)

    def close(self, verification_id: int, state: str, outcome: dict[str, Any] | None,
              baseline: dict[str, Any] | None, client: str, note: str = "") -> None:
        """Passed, failed (with the figures that decided it) or abandoned (with a reason)."""
        if state not in STATES[1:]:
            raise ValueError(state)
        with self.store.transaction() as tx:
            self._check_open(tx, verification_id)
            tx.execute("UPDATE verifications SET state = ?, finished = ?, finished_by = ?, outcome = ?, "
                       "baseline = ?, note = CASE WHEN ? = '' THEN note ELSE ? END WHERE id = ?",
                       (state, time.time(), client, json.dumps(outcome) if outcome else None,
                        json.dumps(baseline) if baseline else None, note, note, verification_id))
            tx.audit(client, f"verification.{state}", None,
                     {"verification_id": verification_id, "outcome": outcome, "note": note})
