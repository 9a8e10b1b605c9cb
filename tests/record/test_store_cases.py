"""Cases in the record (issue 7): schema version 3 migrated in place from a database made by
the previous release (version 2), review and exclusion never change the model's output and
are audited, and retention never deletes a field of an open case (issue 9). Real SQLite,
real result files from real sample fields."""

from __future__ import annotations

import re

import sqlite3

import pytest

from edge.model.bundle import load_bundle
from edge.record.store import StoreConfig
from edge.analysis.imagefile import read_rgb
from edge.pipeline import Pipeline
from edge.record.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, statements as _statements
from edge.record.store import DATABASE, Store

from conftest import sample_paths


@pytest.fixture(scope="module")
def results(default_bundle):
    pipeline = Pipeline.on_cpu(load_bundle(default_bundle))
    return [pipeline.process(read_rgb(p), source=f"upload:{p.name}") for p in sample_paths()]


def test_a_version_2_database_is_migrated_in_place(tmp_path):
    db = sqlite3.connect(tmp_path / DATABASE, isolation_level=None)
    db.executescript(SCHEMA)
    for statement in _statements(MIGRATIONS[2]):  # what release 0.2 created
        db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "a_overlay.jpg"):
        (tmp_path / "images" / name).write_bytes(b"jpeg")
    db.execute("INSERT INTO results(created, status, label, call, image, overlay, data, run_seconds) VALUES "
               "(1700000000, 'classified', 'pre_b', 'positive', 'a.jpg', 'a_overlay.jpg', '{\"label\": \"pre_b\"}', 5)")
    db.execute("INSERT INTO audit(at, client, action) VALUES (1700000000, 'device', 'old.entry')")
    db.close()
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    try:
        assert SCHEMA_VERSION == 12 and store._db.execute("PRAGMA user_version").fetchone()[0] == 12
        old = store.get(1)
        assert old["label"] == "pre_b" and old["case_id"] is None and old["review"] is None
        assert store.audit_log()[0]["action"] == "old.entry" and store.quarantined == 0
        assert store.audit_log()[0]["hash"] and store.audit_check().intact  # the old row joined the chain
        case_id = store.create_case("LAB-1", "", "test")
        assert store._db.execute("SELECT count(*) FROM verification_slides").fetchone()[0] == 0  # migration 8 ran
        assert store._db.execute("SELECT count(*) FROM second_reads").fetchone()[0] == 0  # and 12
        assert store.get_case(case_id)["field_count"] == 0
    finally:
        store.close()


def test_case_fields_reviews_and_exclusions_are_audited_and_keep_the_model_output(tmp_path, results):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    try:
        case_id = store.create_case("2026-11-23-001", "left arm", "10.0.0.7")
        with pytest.raises(ValueError, match="already exists"):
            store.create_case("2026-11-23-001", "", "10.0.0.7")
        ids = [store.save(r, case_id, "10.0.0.7") for r in results[:3]]
        model_label = store.get(ids[0])["label"]
        store.review_result(ids[0], {"call": "negative", "reason": "artefact", "reviewer": "AB"}, "10.0.0.7")
        store.exclude_result(ids[1], "wrong slide", "10.0.0.7")
        case = store.get_case(case_id)
        assert case["code"] == "2026-11-23-001" and case["field_count"] == 2 and len(case["fields"]) == 3
        first = case["fields"][0]
        assert first["label"] == model_label and first["review"]["call"] == "negative"  # the model output stays
        assert case["fields"][1]["excluded"]["reason"] == "wrong slide"
        store.review_case(case_id, {"call": "positive", "reason": "blasts seen", "reviewer": "AB"}, "10.0.0.7")
        actions = [a["action"] for a in store.audit_log()]
        assert actions[:7] == ["case.review", "result.exclude", "result.review"] + ["case.field_added"] * 3 + ["case.create"]
        added = [a for a in store.audit_log() if a["action"] == "case.field_added"]
        assert [(a["client"], a["after"]["case_id"], a["after"]["result_id"]) for a in added] == \
            [("10.0.0.7", case_id, i) for i in reversed(ids)]
        review = next(a for a in store.audit_log() if a["action"] == "result.review")
        assert review["before"] == {"id": ids[0], "review": None} and review["after"]["review"]["reviewer"] == "AB"
        assert store.review_result(10**9, {"call": "negative"}, "x") is None
        page, total = store.list_cases(limit=10, offset=0)
        assert total == 1 and page[0]["review"]["call"] == "positive"
        numbered = store.get_case(store.create_case("", "", "10.0.0.7"))["code"]  # numbered under the lock
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{3}", numbered), numbered
    finally:
        store.close()


def test_retention_never_deletes_a_field_of_a_case_not_signed_out(tmp_path, results):
    """Hardening 3, item 4: retention took a reviewed case that was still collecting fields. Now
    a case's fields go only once it is signed out and they are past the retention age."""
    store = Store(tmp_path, StoreConfig(min_free_mb=0, max_results=5, max_age_days=1))
    try:
        open_case = store.create_case("OPEN", "", "t")
        kept = [store.save(results[i], open_case) for i in range(3)]
        reviewed = store.create_case("REVIEWED", "", "t")
        r = store.save(results[3], reviewed)
        store.review_case(reviewed, {"call": "negative", "reason": "", "reviewer": "AB"}, "t",
                          store.get_case(reviewed)["revision"])
        a = store.save(results[4])  # no case
        b = store.save(results[5])  # 6 > 5: the loose field goes; the reviewed case still collects
        assert store.get(a) is None and store.get(r) is not None and store.get(b) is not None
        signed = store.create_case("SIGNED", "", "t")
        s = store.save(results[6], signed)  # 6 > 5 again: the loose one goes
        store.sign_case(signed, {"call": "negative", "reason": "agree", "reviewer": "AB"}, "t",
                        store.get_case(signed)["revision"])
        assert store.get(b) is None and store.get(s) is not None  # signed, but younger than a day
        for _ in range(3):  # far over the count: no case field is touched, loose ones are
            store.save(results[7])
        assert all(store.get(i) for i in kept + [r, s])
        store._run_base += 2 * 86400  # the device has run two days more (its running clock)
        store.apply_retention()
        assert store.get(s) is None  # signed out and past the age: gone
        assert all(store.get(i) for i in kept + [r])  # never a field of a case not signed out
        deletions = [x for x in store.audit_log(1000) if x["action"] == "retention.delete"]
        assert s in {i for x in deletions for i in x["before"]["ids"]}
        assert not {i for x in deletions for i in x["before"]["ids"]} & set(kept + [r])
    finally:
        store.close()


def test_a_signed_out_case_takes_no_change_by_any_path_until_amended(tmp_path, results):
    """Issue 34: the sign-out lock removed from the cell-review path let a signed case's cells
    be reclassified, and only a system test would have noticed. Every path that changes a case
    or one of its fields is tried here, on the store itself: each is refused with who signed,
    nothing changes, and after an amendment each works again."""
    from edge.record.store import Locked

    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    try:
        case_id = store.create_case("LOCK", "", "t")
        first, second = (store.save(r, case_id, "t") for r in results[:2])
        with_cells = next(i for i in (first, second) if store.get(i).get("cells"))
        store.exclude_result(second, "blurred", "t")
        store.sign_case(case_id, {"call": "negative", "reason": "agree", "reviewer": "Dr A"}, "t",
                        store.get_case(case_id)["revision"])
        before = store.get_case(case_id)
        attempts = {
            "add a field": lambda: store.save(results[2], case_id, "t"),
            "review a field": lambda: store.review_result(first, {"call": "positive", "reviewer": "B"}, "t"),
            "reclassify a cell": lambda: store.review_cell(with_cells, 0, {"label": "neutrophil", "reviewer": "B"}, "t",
                                                           store.get(with_cells)["revision"]),
            "exclude a field": lambda: store.exclude_result(first, "x", "t"),
            "include a field": lambda: store.include_result(second, "t"),
            "review the case": lambda: store.review_case(case_id, {"call": "positive", "reviewer": "B"}, "t"),
            "sign it again": lambda: store.sign_case(case_id, {"call": "positive", "reason": "x", "reviewer": "B"}, "t",
                                                     store.get_case(case_id)["revision"]),
        }
        for what, attempt in attempts.items():
            with pytest.raises(Locked, match="signed out by Dr A"):
                attempt()
            assert store.get_case(case_id)["revision"] == before["revision"], what
        after = store.get_case(case_id)
        assert [f["review"] for f in after["fields"]] == [f["review"] for f in before["fields"]]
        assert [f["cell_reviews"] for f in after["fields"]] == [f["cell_reviews"] for f in before["fields"]]
        assert [f["excluded"] is None for f in after["fields"]] == [True, False]
        assert len(after["fields"]) == 2

        store.amend_case(case_id, "second opinion", "t", after["revision"])
        store.review_cell(with_cells, 0, {"label": "neutrophil", "reviewer": "B"}, "t", store.get(with_cells)["revision"])
        store.include_result(second, "t")
        store.save(results[2], case_id, "t")
        assert store.get_case(case_id)["field_count"] == 3
    finally:
        store.close()
