"""The case flow over real HTTP against a real daemon (issue 7): create, analyse real fields
into a case, the case call, review and exclusion with audit, exports (CSV, JSON, FHIR
validated with fhir.resources), history paging and filters. Labels are asserted from the
sample files' names, which carry the truth."""

from __future__ import annotations

import collections
import csv
import io
import re
import time

import pytest
import requests

from conftest import ServerProcess, sample_paths


def _sample(prefix: str):
    return [p for p in sample_paths() if p.name.startswith(prefix)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("cases") / "state", "--demo")
    yield srv
    srv.stop()


def _post(srv, path, **kw):
    return requests.post(srv.url + path, headers=kw.pop("headers", None) or srv.headers(), timeout=30, **kw)


def _get(srv, path, **kw):
    return requests.get(srv.url + path, headers=kw.pop("headers", None) or srv.headers(), timeout=30, **kw)


def _user(srv, name, role="reviewer", pin="86420246"):
    """A named user made by the admin through the API; returns their bearer header."""
    r = _post(srv, "/api/users", json={"name": name, "role": role, "pin": pin})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _upload(srv, case_id, path):
    r = _post(srv, f"/api/cases/{case_id}/classify", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_malignant_slide_and_a_benign_slide(daemon):
    r = _post(daemon, "/api/cases", json={"code": "", "note": "ward 3"})
    assert r.status_code == 201 and re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{3}", r.json()["code"])
    assert r.json()["active"] is False  # a script has no phone session: nothing is opened device-wide
    malignant = r.json()["id"]
    assert _post(daemon, "/api/cases", json={"code": r.json()["code"]}).status_code == 409
    assert _post(daemon, "/api/cases", json={"code": "<script>"}).status_code == 400
    assert _post(daemon, "/api/cases", data="not json").status_code == 400

    first = _upload(daemon, malignant, _sample("pro_b__")[0])
    assert first["call"] in ("positive", "uncertain") and first["blasts"] >= 1  # a malignant field is never negative
    case = _get(daemon, f"/api/cases/{malignant}").json()
    assert case["case_call"]["call"] == "pending" and "Analyse 1 more" in case["case_call"]["next_step"]
    answers = [first] + [_upload(daemon, malignant, path) for path in _sample("pre_b__") + _sample("early_pre_b__")]
    # a request that names no case goes into no case, never into the last case created
    r = _post(daemon, "/api/classify", files={"image": ("x.jpg", _sample("pro_b__")[1].read_bytes())})
    assert r.status_code == 200 and r.json()["case_id"] is None
    assert _get(daemon, f"/api/cases/{malignant}").json()["field_count"] == 5
    r = _upload(daemon, malignant, _sample("pro_b__")[1])
    assert r["case_id"] == malignant and r["case_code"] == case["code"]
    answers.append(r)
    case = _get(daemon, f"/api/cases/{malignant}").json()
    call = case["case_call"]
    assert all(a["call"] != "negative" for a in answers)
    positive = sum(a["call"] == "positive" for a in answers)
    assert case["field_count"] == 6 and call["positive"] == positive and call["uncertain"] == 6 - positive
    assert call["call"] == ("positive" if positive >= call["thresholds"]["positive_at_least"] else "uncertain")
    assert "Refer for confirmatory testing" in call["next_step"] or call["call"] == "uncertain"
    assert call["counts"] == dict(collections.Counter(a["label"] for a in answers))
    # what a hematologist reports, summed over the fields the case used
    assert call["cells"]["blasts"] == sum(a["blasts"] for a in answers) and call["cells"]["blasts"] >= 6
    assert call["cells"]["white_cells"] == sum(a["white_cells"] for a in answers)
    share = round(100 * call["cells"]["blasts"] / call["cells"]["white_cells"])
    assert call["cells"]["text"] == (f"{call['cells']['blasts']} blasts among {call['cells']['white_cells']} white cells "
                                     f"({share}%) in 6 fields")
    assert all(f["source"].startswith("upload:") and f["created_iso"] for f in case["fields"])

    benign = _post(daemon, "/api/cases", json={"code": "LAB-77", "note": ""}).json()["id"]
    for path in _sample("benign__"):  # two different benign fields (the same one twice counts once)
        assert _upload(daemon, benign, path)["label"] == "benign"
    case = _get(daemon, f"/api/cases/{benign}").json()
    cells = case["case_call"]["cells"]
    assert case["case_call"]["call"] == "negative" and case["case_call"]["next_step"].startswith(
        f"Negative screen: 0 of 2 fields positive, {cells['summary']}.")

    listing = _get(daemon, "/api/cases?limit=1&offset=0").json()
    assert listing["total"] == 2 and listing["cases"][0]["code"] == "LAB-77" and listing["active_case"] is None
    positive_cases = [malignant] if call["call"] == "positive" else []
    assert [c["id"] for c in _get(daemon, "/api/cases?call=positive").json()["cases"]] == positive_cases
    assert _get(daemon, "/api/cases?limit=0").status_code == 400 and _get(daemon, "/api/cases?call=maybe").status_code == 400
    assert _get(daemon, "/api/cases/999999").status_code == 404


def test_review_and_exclusion_are_audited_and_keep_the_model_output(daemon):
    case_id = _post(daemon, "/api/cases", json={"code": "REV-1"}).json()["id"]
    fields = [_upload(daemon, case_id, p) for p in _sample("benign__") + _sample("pre_b__")[:1]]
    assert _get(daemon, f"/api/cases/{case_id}").json()["case_call"]["call"] == "uncertain"  # 1 of 3

    r = _post(daemon, f"/api/results/{fields[2]['id']}/review", json={"call": "negative", "reason": "x", "reviewer": "AB"})
    assert r.status_code == 400 and "which revision you reviewed" in r.json()["error"]
    r = _post(daemon, f"/api/results/{fields[2]['id']}/review",
              json={"call": "negative", "reason": "stain artefact", "reviewer": "AB", "revision": fields[2]["revision"]})
    assert r.status_code == 200 and r.json()["label"] == "pre_b" and r.json()["review"]["call"] == "negative"
    r = _post(daemon, f"/api/results/{fields[2]['id']}/exclude", json={"reason": "wrong slide"})
    assert r.status_code == 200 and r.json()["excluded"]["reason"] == "wrong slide"
    case = _get(daemon, f"/api/cases/{case_id}").json()
    assert case["case_call"]["call"] == "negative" and case["case_call"]["excluded"] == 1 and case["field_count"] == 2
    r = _post(daemon, f"/api/cases/{case_id}/review",
              json={"call": "negative", "reason": "agree", "reviewer": "CD", "revision": case["revision"]})
    assert r.status_code == 200 and r.json()["final_call"] == "negative" and r.json()["review"]["reviewer"] == "admin"
    assert r.json()["review"]["fields"] == [fields[0]["id"], fields[1]["id"]] and not r.json()["changed_since_review"]
    assert _post(daemon, "/api/results/999999/review",
                 json={"call": "negative", "reason": "x", "reviewer": "y", "revision": 0}).status_code == 404

    audit = _get(daemon, "/api/audit?limit=50").json()["audit"]
    actions = [a["action"] for a in audit]
    assert actions[:7] == ["case.review", "result.exclude", "result.review"] + ["case.field_added"] * 3 + ["case.create"]
    assert audit[2]["before"]["review"] is None and audit[2]["after"]["review"]["reviewer"] == "admin"
    # adding a field to a patient's case is in the record: which field, which case, what it said
    assert [(a["after"]["case_id"], a["after"]["result_id"], a["after"]["label"]) for a in audit[3:6]] == \
        [(case_id, f["id"], f["label"]) for f in reversed(fields)]
    assert all(a["client"] == "admin (127.0.0.1)" for a in audit[:7])  # the user the token belongs to


def test_a_review_made_on_an_out_of_date_page_is_refused_never_written_over(daemon):
    """Two phones on one case: B reviews it; A, still showing the revision it opened, gets 409
    naming what changed and who; after a field is added the review shows as out of date."""
    phone_a, phone_b = _user(daemon, "Anna"), _user(daemon, "Ben")
    case_id = _post(daemon, "/api/cases", json={"code": "SYNC-1"}).json()["id"]
    field = _upload(daemon, case_id, _sample("pre_b__")[0])
    seen_by_a = _get(daemon, f"/api/cases/{case_id}").json()["revision"]
    b = _post(daemon, f"/api/cases/{case_id}/review",
              json={"call": "positive", "reason": "blasts", "revision": seen_by_a}, headers=phone_b)
    assert b.status_code == 200
    a = _post(daemon, f"/api/cases/{case_id}/review",
              json={"call": "negative", "reason": "no blasts", "revision": seen_by_a}, headers=phone_a)
    assert a.status_code == 409
    assert "changed since you opened it (case reviewed, by Ben (127.0.0.1) at" in a.json()["error"] and "reload" in a.json()["error"]
    case = _get(daemon, f"/api/cases/{case_id}").json()
    assert case["review"]["reviewer"] == "Ben" and case["review"]["call"] == "positive"  # B's review stands
    # a field reviewed twice from one stale revision: the second is refused too
    first = _post(daemon, f"/api/results/{field['id']}/review",
                  json={"call": "positive", "reason": "ok", "revision": field["revision"]}, headers=phone_b)
    again = _post(daemon, f"/api/results/{field['id']}/review",
                  json={"call": "negative", "reason": "no", "revision": field["revision"]}, headers=phone_a)
    assert first.status_code == 200 and again.status_code == 409 and "this field changed" in again.json()["error"]
    _upload(daemon, case_id, _sample("pre_b__")[1])
    case = _get(daemon, f"/api/cases/{case_id}").json()
    assert case["changed_since_review"] and case["changed"]["what"].endswith("added")
    audit = _get(daemon, "/api/audit?limit=50").json()["audit"]
    reviews = [a for a in audit if a["action"] == "case.review" and a["after"]["id"] == case_id]
    assert [r["after"]["review"]["reviewer"] for r in reviews] == ["Ben"]  # the refused review was never written


def test_a_signed_out_case_is_locked_until_amended_with_a_reason(daemon):
    case_id = _post(daemon, "/api/cases", json={"code": "SIGN-1"}).json()["id"]
    field = _upload(daemon, case_id, _sample("pre_b__")[0])
    rev = _get(daemon, f"/api/cases/{case_id}").json()["revision"]
    signed = _post(daemon, f"/api/cases/{case_id}/sign",
                   json={"call": "positive", "reason": "blasts confirmed", "reviewer": "CD", "revision": rev})
    assert signed.status_code == 200, signed.text
    case = signed.json()
    assert case["signed"]["reviewer"] == "admin" and case["signed"]["fields"] == [field["id"]]
    assert case["final_call"] == "positive" and case["version"] == 1
    # locked: no field, no review, no exclusion, no second sign-out
    sample = _sample("pre_b__")[1]
    r = requests.post(f"{daemon.url}/api/cases/{case_id}/classify", files={"image": (sample.name, sample.read_bytes())},
                      headers=daemon.headers(), timeout=60)
    assert r.status_code == 409 and "signed out by admin" in r.json()["error"] and "amend it" in r.json()["error"]
    rev = case["revision"]
    for path, body in ((f"/api/cases/{case_id}/review", {"call": "negative", "reason": "x", "reviewer": "AA", "revision": rev}),
                       (f"/api/results/{field['id']}/review", {"call": "negative", "reason": "x", "reviewer": "AA",
                                                               "revision": field["revision"]}),
                       (f"/api/results/{field['id']}/exclude", {"reason": "x"}),
                       (f"/api/cases/{case_id}/sign", {"call": "negative", "reason": "x", "reviewer": "AA", "revision": rev})):
        r = _post(daemon, path, json=body)
        assert r.status_code == 409 and "locked" in r.json()["error"], (path, r.text)
    assert _get(daemon, f"/api/cases/{case_id}").json()["field_count"] == 1
    # an amendment needs a reason, makes version 2, keeps the sign-out it replaces; then it is open again
    assert _post(daemon, f"/api/cases/{case_id}/amend", json={"reason": "", "revision": rev}).status_code == 400
    amended = _post(daemon, f"/api/cases/{case_id}/amend", json={"reason": "second field to add", "revision": rev})
    assert amended.status_code == 200 and amended.json()["version"] == 2 and amended.json()["signed"] is None
    assert amended.json()["amendments"][0]["replaces"]["reviewer"] == "admin"
    assert _upload(daemon, case_id, sample)["case_id"] == case_id
    audit = [a["action"] for a in _get(daemon, "/api/audit?limit=10").json()["audit"]]
    assert audit[:3] == ["case.field_added", "case.amend", "case.sign"]
    report = _get(daemon, f"/api/cases/{case_id}/report").text
    assert "Not signed out" in report or "not reviewed" in report
    assert "amended by" in report and "second field to add" in report


def test_the_cell_gallery_groups_the_cases_cells_and_a_reviewer_reclassifies_them(daemon):
    case_id = _post(daemon, "/api/cases", json={"code": "CELLS-1"}).json()["id"]
    field = _upload(daemon, case_id, _sample("pre_b__")[0])
    gallery = _get(daemon, f"/api/cases/{case_id}/cells").json()
    groups = {g["label"]: g["cells"] for g in gallery["groups"]}
    model = [c for c in field["cells"]]
    assert sum(len(v) for v in groups.values()) == len(model)  # every cell of the field, once
    for label, cells in groups.items():
        for cell in cells:
            expected = model[cell["cell"] - 1]
            assert label == (expected["label"] if expected["familiar"] else "unfamiliar")
    blast = next(c for label, cells in groups.items() if label not in ("benign", "unfamiliar") for c in cells)
    image = _get(daemon, blast["image"])
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    assert _get(daemon, f"/api/results/{field['id']}/cells/999.jpg").status_code == 404

    review = {"label": "benign", "reviewer": "AB", "revision": blast["field_revision"]}
    assert _post(daemon, f"/api/results/{field['id']}/cells/{blast['cell']}/review",
                 json={**review, "label": "lymphoblast"}).status_code == 400
    r = _post(daemon, f"/api/results/{field['id']}/cells/{blast['cell']}/review", json=review)
    assert r.status_code == 200, r.text
    assert r.json()["cell_reviews"][str(blast["cell"] - 1)]["model_label"] == blast["model_label"]  # model's kept
    again = _post(daemon, f"/api/results/{field['id']}/cells/{blast['cell']}/review", json=review)
    assert again.status_code == 409  # made on the field's old revision
    gallery = _get(daemon, f"/api/cases/{case_id}/cells").json()
    moved = next(c for g in gallery["groups"] if g["label"] == "benign" for c in g["cells"]
                 if (c["result_id"], c["cell"]) == (field["id"], blast["cell"]))
    assert moved["review"]["reviewer"] == "admin"
    cells = _get(daemon, f"/api/cases/{case_id}").json()["case_call"]["cells"]
    assert cells["reviewed_cells"] == 1 and cells["reviewed_blasts"] == cells["blasts"] - 1
    assert "after review of 1 cell" in cells["reviewed_text"]
    audit = _get(daemon, "/api/audit?limit=5").json()["audit"]
    assert audit[0]["action"] == "cell.review" and audit[0]["after"]["cell"] == blast["cell"]


def test_exports_csv_json_fhir_and_by_date(daemon):
    from fhir.resources.R4B.bundle import Bundle

    case_id = _post(daemon, "/api/cases", json={"code": "EXP/9"}).json()["id"]
    for path in _sample("pro_b__") + _sample("benign__WBC-Benign-182"):
        _upload(daemon, case_id, path)
    r = _get(daemon, f"/api/cases/{case_id}/export.csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert 'filename="blastscope-case-EXP-9.csv"' in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["label"] for row in rows] == ["pro_b", "pro_b", "benign"] and {row["case_code"] for row in rows} == {"EXP/9"}
    assert rows[0]["review_call"] == "" and rows[0]["excluded_reason"] == ""  # empty cells stay empty
    data = _get(daemon, f"/api/cases/{case_id}/export.json").json()
    assert data["case"]["code"] == "EXP/9" and len(data["fields"]) == 3 and "not a diagnosis" in data["disclaimer"]

    r = _get(daemon, f"/api/cases/{case_id}/fhir")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())  # a FHIR library validates what was served
    report = bundle.entry[0].resource
    assert report.__resource_type__ == "DiagnosticReport" and report.identifier[0].value == "EXP/9"
    assert len(report.result) == 3 and report.status == "preliminary" and "not a diagnosis" in report.conclusion
    observations = [e.resource for e in bundle.entry[1:]]
    assert [o.valueCodeableConcept.text for o in observations] == ["Pro-B ALL", "Pro-B ALL", "Benign (hematogones)"]
    assert {e.fullUrl for e in bundle.entry[1:]} == {ref.reference for ref in report.result}

    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = _get(daemon, f"/api/export.csv?from={today}&to={today}")
    assert r.status_code == 200 and "EXP/9" in r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    everything = _get(daemon, f"/api/export.json?from={today}&to={today}")  # streamed, still one JSON document
    assert everything.status_code == 200 and "not a diagnosis" in everything.json()["disclaimer"]
    assert [f["result_id"] for f in everything.json()["fields"]] == [int(row["result_id"]) for row in rows]
    assert {row["case_code"] for row in rows} >= {"EXP/9"}
    assert _get(daemon, "/api/export.csv?from=yesterday").status_code == 400
    exports = [a for a in _get(daemon, "/api/audit").json()["audit"] if a["action"] == "export"]
    assert {a["after"]["what"] for a in exports} >= {"csv", "json", "fhir", "range csv", "range json"}
    assert [a["after"]["results"] for a in exports if a["after"]["what"] == "range json"][0] == len(rows)


def test_case_routes_need_authentication(daemon):
    assert requests.get(daemon.url + "/api/cases", timeout=10).status_code == 401
    assert requests.post(daemon.url + "/api/cases", json={"code": "X"}, timeout=10).status_code == 401
    report = _get(daemon, "/api/cases/1/report")
    assert report.status_code == 200 and "Screening aid, not a diagnosis" in report.text and "Model id" in report.text
