"""The record's SQLite schema and its migrations, by version (``PRAGMA user_version``).

Kept apart from the store so that what the tables are, and how a database of an older
release becomes one of this release, is read in one place.
"""

from __future__ import annotations

import sqlite3

from edge.record import audit

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    label TEXT,
    call TEXT,
    image TEXT NOT NULL,
    overlay TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_created ON results(created);
"""
#: Migrations by the schema version they lead to (``PRAGMA user_version``; release 0.1.0 made
#: ``SCHEMA`` and left the version at 0). Version 2: the device's running clock per result,
#: a key-value table, the append-only audit log.
MIGRATIONS = {
    2: """
ALTER TABLE results ADD COLUMN run_seconds REAL NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""",
    # Version 3: cases (one slide of one patient); a field belongs to at most one case, may be
    # excluded from it with a reason, and may carry a clinician's review; exports are recorded.
    3: """
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL UNIQUE,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    call TEXT NOT NULL DEFAULT 'pending',
    review TEXT,
    exported REAL
);
ALTER TABLE results ADD COLUMN case_id INTEGER REFERENCES cases(id);
ALTER TABLE results ADD COLUMN excluded TEXT;
ALTER TABLE results ADD COLUMN review TEXT;
ALTER TABLE results ADD COLUMN exported REAL;
CREATE INDEX IF NOT EXISTS results_case ON results(case_id);
""",
    # Version 4: the audit log becomes a hash chain (edge.record.audit); the rows before it
    # get their hashes in the same transaction.
    4: """
ALTER TABLE audit ADD COLUMN hash TEXT;
""",
    # Version 5: revisions, so that a review names what it saw and one made on a page that was
    # out of date is refused (409), never written over another phone's.
    5: """
ALTER TABLE cases ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN changed TEXT;
ALTER TABLE results ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
""",
    # Version 6: sign-out. A signed case is locked; an amendment (with a reason) unlocks it as a
    # new version and keeps the sign-out it replaces.
    6: """
ALTER TABLE cases ADD COLUMN signed TEXT;
ALTER TABLE cases ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE cases ADD COLUMN amendments TEXT NOT NULL DEFAULT '[]';
""",
    # Version 7: a reviewer's class per cell (the gallery), beside the model's, which stays.
    7: """
ALTER TABLE results ADD COLUMN cell_reviews TEXT NOT NULL DEFAULT '{}';
""",
    # Version 8: site verification (edge.record.verification): the criteria fixed at the start,
    # the known slides' truth kept apart from their cases, the device's call on each.
    8: """
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    started_by TEXT NOT NULL,
    model_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    criteria TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    finished REAL,
    finished_by TEXT,
    outcome TEXT,
    baseline TEXT,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS verification_slides (
    case_id INTEGER PRIMARY KEY REFERENCES cases(id),
    verification_id INTEGER NOT NULL REFERENCES verifications(id),
    truth TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT '',
    entered REAL NOT NULL,
    entered_by TEXT NOT NULL,
    done REAL,
    done_by TEXT,
    call TEXT
);
CREATE INDEX IF NOT EXISTS verification_slides_of ON verification_slides(verification_id);
""",
    # Version 9 (issue 33): who confirmed criteria below the floor; the random nonce a slide's
    # truth is sealed with (its hash is in the audit row until the slide is done).
    9: """
ALTER TABLE verifications ADD COLUMN confirmed_by TEXT;
ALTER TABLE verification_slides ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
""",
    # Version 10 (issue 33): site references (what this clinic's normal cells look like), and the
    # reference a verification was run with: a new reference needs a new verification.
    10: """
CREATE TABLE IF NOT EXISTS site_references (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    model_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    cases TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'proposed',
    accepted REAL,
    accepted_by TEXT
);
ALTER TABLE verifications ADD COLUMN site_reference INTEGER;
""",
    # Version 11 (issue 37): the district outbox, one row a case, queued in the sign-out's own
    # transaction; resent with the same UIDs until the district server has it.
    11: """
CREATE TABLE IF NOT EXISTS outbox (
    case_id INTEGER PRIMARY KEY REFERENCES cases(id),
    queued REAL NOT NULL,
    queued_by TEXT NOT NULL,
    why TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',
    tries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_try REAL NOT NULL DEFAULT 0,
    sent REAL
);
""",
    # Version 12 (issue 37): the district's second reads of a case, fetched back from the
    # server; one row an SR instance (its SOP instance UID), so a read fetched twice is one.
    12: """
CREATE TABLE IF NOT EXISTS second_reads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id),
    sop_uid TEXT NOT NULL UNIQUE,
    reader TEXT NOT NULL,
    call TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    read_at TEXT NOT NULL DEFAULT '',
    fetched REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS second_reads_case ON second_reads(case_id);
""",
}
#: Python steps that finish a migration, by the version they lead to.
MIGRATION_STEPS = {4: audit.chain_existing}
SCHEMA_VERSION = max(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out
