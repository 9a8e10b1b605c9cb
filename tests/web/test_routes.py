"""Every route of the app, in process: none answers without a login or the token, and the
record-changing routes do what the clinic's record needs (planted-defect catchers)."""

from __future__ import annotations

import csv
import io
import re

import pytest

from conftest import sample_paths

#: Routes that must answer without a login: the health probe, the login page and its form,
#: static files (page scripts and styles carry no patient data).
PUBLIC = {"/healthz", "/login", "/static/<path:filename>"}


def _urls(app):
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC:
            continue
        url = re.sub(r"<int\([^)]*\):\w+>", "1", rule.rule)
        url = re.sub(r"<any\(([^,)]+)[^)]*\):\w+>", r"\1", url)
        url = url.replace("<path:filename>", "x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, url


def test_every_route_refuses_an_unauthenticated_request(app, client):
    seen = 0
    for method, url in _urls(app):
        r = client.open(url, method=method)
        if url == "/":
            assert r.status_code == 302 and r.headers["Location"].endswith("/login"), url
        elif url == "/logout":
            assert r.status_code == 403, url  # no session, no CSRF token: nothing to end
        else:
            assert r.status_code == 401, (method, url, r.status_code)
            assert "authentication required" in r.get_json()["error"]
        seen += 1
    assert seen >= 20  # the case blueprint's routes are in the map too


def _case(client, bearer, code):
    r = client.post("/api/cases", json={"code": code}, headers=bearer)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def _upload(client, bearer, case_id, path):
    with open(path, "rb") as f:
        r = client.post(f"/api/cases/{case_id}/classify", data={"image": (f, path.name)}, headers=bearer)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_generated_case_codes_count_up_per_day(client, bearer):
    first, second = _case(client, bearer, ""), _case(client, bearer, "")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-001", first["code"]), first["code"]
    assert second["code"] == first["code"][:-3] + "002"


def test_the_report_needs_a_login_and_names_the_case(client, bearer):
    case = _case(client, bearer, "LAB-REPORT")
    assert client.get(f"/api/cases/{case['id']}/report").status_code == 401
    r = client.get(f"/api/cases/{case['id']}/report", headers=bearer)
    assert r.status_code == 200 and b"LAB-REPORT" in r.data and b"not a diagnosis" in r.data


def test_exports_mark_the_fields_exported_and_are_audited(app, client, bearer):
    case = _case(client, bearer, "LAB-EXPORT")
    field = _upload(client, bearer, case["id"], sample_paths()[0])
    assert app.service.store.get(field["id"])["exported"] is None
    r = client.get(f"/api/cases/{case['id']}/export.csv", headers=bearer)
    assert r.status_code == 200
    assert app.service.store.get(field["id"])["exported"] is not None  # retention takes exported fields first
    audit = client.get("/api/audit", headers=bearer).get_json()["audit"]
    assert audit[0]["action"] == "export" and audit[0]["after"]["case_id"] == case["id"]


def test_csv_cells_cannot_become_spreadsheet_formulas(app, client, bearer):
    case = _case(client, bearer, "LAB-CSV")
    field = _upload(client, bearer, case["id"], sample_paths()[1])
    reason = "=HYPERLINK(\"http://x\",\"click\")"
    r = client.post(f"/api/results/{field['id']}/review",
                    json={"call": "negative", "reason": reason, "reviewer": "AB", "revision": field["revision"]},
                    headers=bearer)
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/cases/{case['id']}/export.csv", headers=bearer)
                                           .get_data(as_text=True))))
    assert rows[0]["review_reason"] == "'" + reason  # text, never a formula


@pytest.mark.parametrize("field, value", [("reason", "stain \ud800 artefact"), ("reason", "bell\x07"),
                                          ("reason", "")])
def test_bad_review_text_is_refused_at_the_boundary_and_exports_keep_working(app, client, bearer, field, value):
    case = _case(client, bearer, f"LAB-TXT-{len(value)}-{ord(value[-1]) if value else 0}")
    body = {"call": "negative", "reason": "artefact", "reviewer": "AB", "revision": case["revision"], field: value}
    import json as _json

    r = client.post(f"/api/cases/{case['id']}/review", data=_json.dumps(body), content_type="application/json",
                    headers=bearer)
    assert r.status_code == 400 and field.split()[0] in r.get_json()["error"]
    for what in ("report", "export.csv", "export.json", "fhir"):
        assert client.get(f"/api/cases/{case['id']}/{what}", headers=bearer).status_code == 200


def test_deeply_nested_json_and_a_backwards_range_are_400(client, bearer):
    deep = "[" * 5000 + "]" * 5000
    r = client.post("/api/cases", data=deep, content_type="application/json", headers=bearer)
    assert r.status_code == 400
    r = client.get("/api/export.csv?from=2026-11-23&to=2026-11-01", headers=bearer)
    assert r.status_code == 400 and "before" in r.get_json()["error"]


def test_every_answer_carries_the_security_headers(client, bearer):
    for url in ("/login", "/api/status", "/healthz"):
        r = client.get(url, headers=bearer)
        assert "default-src 'self'" in r.headers["Content-Security-Policy"] and "frame-ancestors 'none'" in \
            r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"


def test_parallel_numbered_cases_never_collide(app, bearer):
    from concurrent.futures import ThreadPoolExecutor

    def create(_):
        return app.test_client().post("/api/cases", json={"code": ""}, headers=bearer)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(create, range(40)))
    assert [r.status_code for r in answers] == [201] * 40
    assert len({r.get_json()["code"] for r in answers}) == 40


def test_a_damaged_stored_field_gives_a_reason_not_a_traceback(app, client, bearer):
    case = _case(client, bearer, "LAB-DAMAGED")
    field = _upload(client, bearer, case["id"], sample_paths()[0])
    assert field["cells"], "the sample field shows white cells"
    ok = client.get(f"/api/results/{field['id']}/cells/1.jpg", headers=bearer)
    assert ok.status_code == 200 and ok.data[:2] == b"\xff\xd8"  # a JPEG of the cell
    path = app.service.store.file_path(field["id"], "image")
    path.write_bytes(b"not a JPEG any more")  # a damaged card: the row is there, the image is not readable
    r = client.get(f"/api/results/{field['id']}/cells/1.jpg", headers=bearer)
    assert r.status_code == 500 and path.name in r.get_json()["error"] and "cannot be read" in r.get_json()["error"]


def test_exports_carry_what_the_page_shows_and_fhir_is_final_only_once_signed(app, client, bearer):
    import json

    case = _case(client, bearer, "LAB-FHIR")
    field = _upload(client, bearer, case["id"], sample_paths()[0])
    stored = app.service.store.get(field["id"])
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/cases/{case['id']}/export.csv", headers=bearer)
                                           .get_data(as_text=True))))
    assert len(rows) == 1 and rows[0]["case_code"] == "LAB-FHIR" and int(rows[0]["result_id"]) == field["id"]
    assert rows[0]["label"] == stored["label"] and rows[0]["call"] == stored["call"]
    assert float(rows[0]["malignant_probability"]) == round(stored["malignant_probability"], 4)

    def fhir():
        bundle = json.loads(client.get(f"/api/cases/{case['id']}/fhir", headers=bearer).get_data(as_text=True))
        report, *observations = [e["resource"] for e in bundle["entry"]]
        return report, observations

    report, observations = fhir()
    assert report["resourceType"] == "DiagnosticReport" and report["identifier"][0]["value"] == "LAB-FHIR"
    assert report["status"] == "preliminary" and "Not signed out" in report["conclusion"]
    assert "not a diagnosis" in report["conclusion"] and len(report["result"]) == 1 == len(observations)
    obs = observations[0]
    assert obs["valueCodeableConcept"]["text"] == stored["label_name"]
    assert obs["interpretation"][0]["text"] == f"screening call: {stored['call']}"
    probability = next(c for c in obs["component"] if c["code"]["text"].startswith("malignant probability"))
    assert probability["valueQuantity"]["value"] == round(stored["malignant_probability"], 4)
    revision = client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()["revision"]
    review = {"call": "positive", "reason": "blasts", "revision": revision}
    assert client.post(f"/api/cases/{case['id']}/review", json=review, headers=bearer).status_code == 200
    report, observations = fhir()
    assert report["status"] == "preliminary" and "Reviewed by admin: positive" in report["conclusion"]  # may change
    revision = client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()["revision"]
    assert client.post(f"/api/cases/{case['id']}/sign", json={**review, "revision": revision},
                       headers=bearer).status_code == 200
    report, observations = fhir()
    assert report["status"] == "final" and observations[0]["status"] == "final"
    assert "Signed out by admin: positive (blasts)" in report["conclusion"]


def test_pages_and_records_are_never_kept_by_the_browser_and_the_report_names_its_case_on_every_page(client, bearer):
    """Back after logout showed the case for seconds: pages and answers say no-store."""
    case = client.post("/api/cases", json={"code": "LAB-STORE"}, headers=bearer).get_json()
    for url in ("/login", "/api/status", f"/api/cases/{case['id']}", f"/api/cases/{case['id']}/report"):
        assert client.get(url, headers=bearer).headers.get("Cache-Control") == "no-store", url
    report = client.get(f"/api/cases/{case['id']}/report", headers=bearer).get_data(as_text=True)
    assert 'id="slide-map"' not in report  # no field of this case came from a hands-free scan
    css = client.get(f"/api/cases/{case['id']}/report-pages.css", headers=bearer)
    assert css.mimetype == "text/css" and '"BlastScope case LAB-STORE' in css.get_data(as_text=True)
    assert client.get(f"/api/cases/{case['id']}/report-pages.css").status_code == 401


def test_a_field_held_back_by_the_cell_count_rule_says_why_in_the_answer_the_record_and_the_report(app, client, bearer):
    """A real benign field read from 10 white cells, on a device whose bundle needs 11 to
    clear a field: the answer, the stored record and the case report all say it is uncertain
    and why (a rule of 10 clears it: the other side of the boundary)."""
    import dataclasses

    from edge.analysis.screening import FEW_CELLS
    from edge.pipeline import Pipeline

    path = next(p for p in sample_paths() if p.name == "benign__WBC-Benign-182.jpg")
    shipped = app.service.bundle
    for count, call in ((11, "uncertain"), (10, "negative")):
        ruled = dataclasses.replace(shipped, calibration=dataclasses.replace(shipped.calibration,
                                                                             min_cells_to_clear=count))
        app.service.bundle, app.service.pipeline = ruled, Pipeline.on_cpu(ruled, threads=1)
        case = _case(client, bearer, f"LAB-FEW-{count}")
        field = _upload(client, bearer, case["id"], path)
        reason = FEW_CELLS if call == "uncertain" else None
        assert (field["call"], field["call_reason"], field["white_cells"]) == (call, reason, 10)
        assert app.service.store.get(field["id"])["call_reason"] == reason
        report = client.get(f"/api/cases/{case['id']}/report", headers=bearer).get_data(as_text=True)
        assert (FEW_CELLS in report) == (call == "uncertain")
        rows = list(csv.DictReader(io.StringIO(client.get(f"/api/cases/{case['id']}/export.csv",
                                                          headers=bearer).get_data(as_text=True))))
        assert [(r["call"], r["call_reason"]) for r in rows] == [(call, reason or "")]
        fhir = client.get(f"/api/cases/{case['id']}/fhir", headers=bearer).get_data(as_text=True)
        assert (f"Uncertain: {FEW_CELLS}" in fhir) == (call == "uncertain")
        assert client.get("/api/status", headers=bearer).get_json()["model"]["calibration"]["min_cells_to_clear"] == count
