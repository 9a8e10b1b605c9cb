"""The audit log's hash chain on a real SQLite file: a row changed, taken out or cut from the
end with the sqlite3 tool's own powers (the triggers dropped first, as someone with the file
could) is found by the store, the status and ``blastscope-edge audit verify``."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge.record.store import AUDIT_ANCHOR, DATABASE, Store, StoreConfig

from conftest import run_cli


@pytest.fixture
def state(tmp_path):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    try:
        case = store.create_case("LAB-7", "", "10.0.0.7")
        store.audit("10.0.0.7", "review", {"call": None}, {"call": "positive"})
        store.audit("10.0.0.8", "export", None, {"case_id": case})
        check = store.audit_check(max_age_s=0)
        assert check.intact and check.rows == 3 and check.problem is None
    finally:
        store.close()
    return tmp_path


def _tamper(path, *statements):
    db = sqlite3.connect(path / DATABASE, isolation_level=None)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    for statement in statements:
        db.execute(statement)
    db.close()


def _verdict(path):
    store = Store(path, StoreConfig(min_free_mb=0))
    try:
        return store.audit_check(max_age_s=0)
    finally:
        store.close()


def test_an_intact_chain_verifies_from_the_command(state):
    r = run_cli("blastscope-edge", "audit", "verify", "--state-dir", str(state))
    assert r.returncode == 0 and "audit log intact: 3 rows" in r.stdout


def test_a_changed_row_is_found(state):
    _tamper(state, "UPDATE audit SET after = '{\"call\": \"negative\"}' WHERE action = 'review'")
    check = _verdict(state)
    assert not check.intact and check.problem.startswith("row 2 (review) does not match its hash") and check.rows == 1
    r = run_cli("blastscope-edge", "audit", "verify", "--state-dir", str(state))
    assert r.returncode == 1 and "audit log ALTERED: row 2 (review) does not match its hash" in r.stderr


def test_a_row_taken_out_is_found(state):
    _tamper(state, "DELETE FROM audit WHERE id = 2")
    assert _verdict(state).problem == "rows 2 to 2 are missing"


def test_rows_cut_from_the_end_are_found(state):
    _tamper(state, "DELETE FROM audit WHERE id = 3")
    problem = _verdict(state).problem
    assert problem.startswith("rows were removed: the anchor of ") and "recorded 3 rows" in problem, problem
    (state / AUDIT_ANCHOR).unlink()  # without the anchor, SQLite's own sequence still tells
    assert _verdict(state).problem == "rows 3 to 3 were removed from the end"


def test_truncation_with_the_sequence_lowered_is_found_by_the_anchor(state):
    """Issue 34: the last rows deleted plus one UPDATE of sqlite_sequence left nothing inside
    the database to tell; the anchor outside it recorded the head."""
    store = Store(state, StoreConfig(min_free_mb=0))
    try:
        for n in range(3):
            store.audit("10.0.0.9", "review", None, {"n": n})
        assert store.audit_check(max_age_s=0).rows == 6
    finally:
        store.close()
    _tamper(state, "DELETE FROM audit WHERE id > 3", "UPDATE sqlite_sequence SET seq = 3 WHERE name = 'audit'")
    check = _verdict(state)
    assert not check.intact and "recorded 6 rows" in check.problem and "the log now has 3" in check.problem
    lines = (state / AUDIT_ANCHOR).read_text().splitlines()
    assert json.loads(lines[-1])["rows"] == 6  # a damaged chain never moves the anchor back


def test_later_walks_read_only_the_rows_since_the_anchor(state, monkeypatch):
    from edge.record import audit

    walked = []
    real = audit.row_hash
    monkeypatch.setattr(audit, "row_hash", lambda *a: walked.append(a[1]) or real(*a))
    store = Store(state, StoreConfig(min_free_mb=0))
    try:
        assert store.audit_check(max_age_s=0).intact and walked == [1, 2, 3]  # the first walk of a run: every row
        store.audit("10.0.0.9", "review", None, {"n": 1})
        walked.clear()
        assert store.audit_check(max_age_s=0).rows == 4 and walked == [4]
    finally:
        store.close()


def test_a_rewritten_row_with_a_recomputed_hash_still_breaks_the_next_link(state):
    from edge.record.audit import row_hash

    db = sqlite3.connect(state / DATABASE)
    prev = db.execute("SELECT hash FROM audit WHERE id = 1").fetchone()[0]
    at, client, before = db.execute("SELECT at, client, before FROM audit WHERE id = 2").fetchone()
    db.close()
    forged_after = '{"call": "negative"}'
    forged = row_hash(prev, 2, at, client, "review", before, forged_after)
    _tamper(state, f"UPDATE audit SET after = '{forged_after}', hash = '{forged}' WHERE id = 2")
    assert _verdict(state).problem.startswith("row 3 (export) does not match its hash")


def test_the_status_says_degraded_when_the_log_was_altered(state, tmp_path):
    from edge.daemon import build_service
    from edge.device.config import load_config

    _tamper(state, "DELETE FROM audit WHERE id = 2")
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nstate_dir = "{state}"\n[camera]\nsource = "replay:{state}"\n[inference]\nbackend = "cpu"\n')
    status = build_service(load_config(config, environ={})).status()
    assert status["audit"]["intact"] is False and status["audit"]["rows"] == 1
    assert any("audit log was altered outside BlastScope: rows 2 to 2 are missing" in r for r in status["degraded_reasons"])


def test_a_verification_state_set_by_hand_is_found_and_does_not_verify(state):
    """Issue 34: state='passed' set by hand made the device "verified" while the chain verified."""
    from edge.analysis.verification import Criteria
    from edge.record.verification import Verifications

    store = Store(state, StoreConfig(min_free_mb=0))
    try:
        record = Verifications(store)
        vid = record.start(Criteria(), "model-x", {"exposure": 1}, "admin (127.0.0.1)")
        assert record.last_passed() is None
    finally:
        store.close()
    _tamper(state, f"UPDATE verifications SET state = 'passed', finished = 1 WHERE id = {vid}")
    store = Store(state, StoreConfig(min_free_mb=0))
    try:
        record = Verifications(store)
        assert record.last_passed() is None and record.unsealed() == [vid]
        with store.transaction() as tx:  # the same through BlastScope: sealed in the chain
            tx.execute(f"UPDATE verifications SET state = 'open' WHERE id = {vid}")
        record.close(vid, "passed", {"ok": True}, None, "admin (127.0.0.1)")
        assert record.last_passed().id == vid and record.unsealed() == []
    finally:
        store.close()
