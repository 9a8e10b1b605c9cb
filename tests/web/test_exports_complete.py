"""Complete exports (issue 34): a case filled as a clinic fills one (fields of real sample
images, a field review, a cell review, an exclusion, a case review, a sign-out, an amendment
and a second sign-out) and every column of the case CSV, the range CSV and the JSON checked.

A case the model called positive and a reviewer signed out negative exported ``case_call``
positive with nothing in the CSV saying negative; this test fails on any column emptied."""

from __future__ import annotations

import csv
import io

from edge.record.export import COLUMNS

from conftest import sample_paths


def _post(client, url, headers, **body):
    r = client.post(url, json=body, headers=headers)
    assert r.status_code == 200, (url, r.get_json())
    return r.get_json()


def _filled_case(client, bearer) -> tuple[int, list[dict]]:
    case_id = client.post("/api/cases", json={"code": "EXP-1", "note": "ward 2"}, headers=bearer).get_json()["id"]
    paths = [p for p in sample_paths() if p.name.startswith(("pro_b__", "pre_b__"))][:2]
    paths += [p for p in sample_paths() if p.name.startswith("benign__")][:1]
    fields = []
    for path in paths:
        r = client.post(f"/api/cases/{case_id}/classify", headers=bearer,
                        data={"image": (io.BytesIO(path.read_bytes()), path.name)})
        assert r.status_code == 200, r.get_json()
        fields.append(r.get_json())
    first, _, third = fields
    f1 = _post(client, f"/api/results/{first['id']}/review", bearer, call="negative", reason="a lymphocyte, not a blast",
               revision=first["revision"])
    _post(client, f"/api/results/{first['id']}/cells/1/review", bearer, label="benign", revision=f1["revision"])
    _post(client, f"/api/results/{third['id']}/exclude", bearer, reason="wrong slide")
    case = client.get(f"/api/cases/{case_id}", headers=bearer).get_json()
    case = _post(client, f"/api/cases/{case_id}/review", bearer, call="negative", reason="reactive lymphocytes",
                 revision=case["revision"])
    case = _post(client, f"/api/cases/{case_id}/sign", bearer, call="negative", reason="first read",
                 revision=case["revision"])
    case = _post(client, f"/api/cases/{case_id}/amend", bearer, reason="second opinion asked", revision=case["revision"])
    case = _post(client, f"/api/cases/{case_id}/sign", bearer, call="negative", reason="read by a hematologist",
                 revision=case["revision"])
    return case_id, [f["id"] for f in fields]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_column_of_every_export_is_filled(client, bearer):
    case_id, ids = _filled_case(client, bearer)
    case = client.get(f"/api/cases/{case_id}", headers=bearer).get_json()
    assert case["call"] in ("positive", "uncertain") and case["final_call"] == "negative"
    case_csv = _rows(client.get(f"/api/cases/{case_id}/export.csv", headers=bearer).get_data(as_text=True))
    range_csv = _rows(client.get("/api/export.csv", headers=bearer).get_data(as_text=True))
    case_json = client.get(f"/api/cases/{case_id}/export.json", headers=bearer).get_json()["fields"]
    range_json = client.get("/api/export.json", headers=bearer).get_json()["fields"]
    for rows in (case_csv, range_csv, case_json, range_json):
        assert [int(r["result_id"]) for r in rows] == ids
        first, second, third = ({k: str(v) for k, v in r.items()} for r in rows)
        assert set(first) == set(COLUMNS)  # JSON keys come sorted
        expected_case = {"case_code": "EXP-1", "case_call": case["call"], "case_review_call": "negative",
                         "case_final_call": "negative", "case_signed_by": "admin",
                         "case_signed_reason": "read by a hematologist", "case_version": "2",
                         "case_amendment_reason": "second opinion asked"}
        for row in (first, second, third):
            assert {k: row[k] for k in expected_case} == expected_case
            assert row["case_signed_at_utc"].endswith("Z") and row["case_amended_at_utc"].endswith("Z")
            assert row["case_amended_by"].startswith("admin")
        assert (first["review_call"], first["review_reason"], first["reviewer"]) == (
            "negative", "a lymphocyte, not a blast", "admin")
        assert third["excluded_reason"] == "wrong slide"
        # every column of the reviewed field is filled but those that say a field was refused,
        # held back or excluded (none of which it was)
        empty = {k for k, v in first.items() if v == ""}
        assert empty <= {"reasons", "call_reason", "excluded_reason"}, empty
        assert first["label"] and first["white_cells"] and first["site_verification"]
