"""The same field twice (issue 34): a second tap with the stage still, or the same image sent
again, is stored excluded as a repeat of the first, not counted twice (the gallery showed each
cell twice and the blast count was inflated); "count anyway" is one tap for a technician."""

from __future__ import annotations

import io

import cv2
import numpy as np

from conftest import sample_paths


def _upload(client, headers, case_id, data: bytes, name: str) -> dict:
    r = client.post(f"/api/cases/{case_id}/classify", headers=headers, data={"image": (io.BytesIO(data), name)})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _recaptured(path) -> bytes:
    """The same field taken again: camera noise, a 2-pixel shift, 5% more light, JPEG 85."""
    bgr = cv2.imread(str(path))
    rng = np.random.default_rng(3)
    again = np.clip(np.roll(bgr, 2, axis=1) * 1.05 + rng.normal(0, 3, bgr.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", again, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def test_the_same_field_twice_is_counted_once(client, bearer):
    technician = client.post("/api/users", json={"name": "dup-tech", "role": "technician", "pin": "97531864"},
                             headers=bearer).get_json()
    tech = {"Authorization": f"Bearer {technician['token']}"}
    case_id = client.post("/api/cases", json={"code": "DUP-1"}, headers=tech).get_json()["id"]
    pre_b, benign = [p for p in sample_paths() if p.name.startswith("pre_b__")][0], \
        [p for p in sample_paths() if p.name.startswith("benign__")][0]
    first = _upload(client, tech, case_id, pre_b.read_bytes(), pre_b.name)
    assert first["excluded"] is None
    same = _upload(client, tech, case_id, pre_b.read_bytes(), "again.jpg")
    near = _upload(client, tech, case_id, _recaptured(pre_b), "retaken.jpg")
    other = _upload(client, tech, case_id, benign.read_bytes(), benign.name)
    for repeat in (same, near):
        assert repeat["excluded"]["duplicate_of"] == first["id"]
        assert f"the same field as #{first['id']}" in repeat["excluded"]["reason"]
    assert other["excluded"] is None
    case = client.get(f"/api/cases/{case_id}", headers=tech).get_json()
    assert case["field_count"] == 2 and case["case_call"]["fields"] == 2 and case["case_call"]["excluded"] == 2
    assert case["case_call"]["cells"]["blasts"] == first["blasts"] + other["blasts"]
    gallery = client.get(f"/api/cases/{case_id}/cells", headers=tech).get_json()
    shown = [c["result_id"] for g in gallery["groups"] for c in g["cells"]]
    assert set(shown) == {first["id"], other["id"]}  # each cell once

    # "count anyway": the technician knows the stage moved
    r = client.post(f"/api/results/{near['id']}/include", json={}, headers=tech)
    assert r.status_code == 200 and r.get_json()["excluded"] is None
    assert client.get(f"/api/cases/{case_id}", headers=tech).get_json()["case_call"]["fields"] == 3
    assert client.post(f"/api/results/{near['id']}/include", json={}, headers=tech).status_code == 409
    # a reviewer's exclusion is a reviewer's to undo
    assert client.post(f"/api/results/{other['id']}/exclude", json={"reason": "wrong slide"}, headers=bearer).status_code == 200
    r = client.post(f"/api/results/{other['id']}/include", json={}, headers=tech)
    assert r.status_code == 403 and "only a reviewer may include it again" in r.get_json()["error"]
    assert client.post(f"/api/results/{other['id']}/include", json={}, headers=bearer).status_code == 200
    audit = client.get("/api/audit", headers=bearer).get_json()["audit"]
    assert [a["action"] for a in audit].count("result.include") == 2
