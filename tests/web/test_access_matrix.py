"""The authorisation matrix (issue 34): every rule of the URL map, asked by a technician, a
reviewer, an admin and nobody, against the one access table (``edge.web.access``).

A route whose role was dropped (the exclude route once let a technician exclude fields and
change a case's call) or a new route nobody placed in the table fails here."""

from __future__ import annotations

import pytest

from edge.web import access
from edge.web.users import ROLES

from conftest import TOKEN

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DUMMY = {"string": "nobody", "path": "style.css"}


def _url(app, rule) -> str:
    """The rule built with every argument filled by a value of its converter's type."""
    values = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        kind = type(converter).__name__.lower()
        values[name] = (sorted(converter.items)[0] if kind == "anyconverter" else
                        1 if "int" in kind else DUMMY["path"] if "path" in kind else DUMMY["string"])
    return app.url_map.bind("localhost").build(rule.endpoint, values)


@pytest.fixture
def headers(client):
    out = {"admin": ADMIN}
    for role in ("technician", "reviewer"):
        r = client.post("/api/users", json={"name": f"matrix-{role}", "role": role, "pin": "97531864"}, headers=ADMIN)
        assert r.status_code == 201, r.get_json()
        out[role] = {"Authorization": f"Bearer {r.get_json()['token']}"}
    return out


def test_every_route_has_one_row_and_every_row_a_route(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - set(access.ACCESS) == set(), "routes with no entry in edge/web/access.py"
    assert set(access.ACCESS) - endpoints == set(), "rows of edge/web/access.py with no route"
    assert set(access.ACCESS.values()) <= {access.PUBLIC, access.USER, *ROLES}


def test_each_role_gets_what_the_table_says(app, client, headers):
    checked = 0
    for rule in app.url_map.iter_rules():
        level = access.ACCESS[rule.endpoint]
        url = _url(app, rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            anonymous = client.open(url, method=method)
            if level == access.PUBLIC:
                assert anonymous.status_code != 401, (method, url)
                continue
            assert anonymous.status_code == 401, (method, url, anonymous.status_code)
            for role in ROLES:
                r = client.open(url, method=method, headers=headers[role], buffered=True)
                allowed = level == access.USER or ROLES.index(role) >= ROLES.index(level)
                refused = r.status_code == 403 and "this needs a" in (r.get_json(silent=True) or {}).get("error", "")
                assert refused != allowed, (role, method, url, r.status_code, r.get_data(as_text=True)[:200])
                r.close()
                checked += 1
    assert checked > 100


def test_an_endpoint_with_no_row_is_refused(app, client, monkeypatch):
    monkeypatch.delitem(access.ACCESS, "cases.list_cases")
    r = client.get("/api/cases", headers=ADMIN)
    assert r.status_code == 403 and "no entry in the access table" in r.get_json()["error"]


#: The clinical rule the table must keep, written apart from it: only a reviewer changes what a
#: case says (a review, an exclusion, a cell's class, a sign-out, an amendment), and only an
#: admin manages users or a site verification's course.
REVIEWER_ONLY = {"cases.review_result", "cases.exclude_result", "cases.review_case", "cases.review_cell",
                 "cases.sign_case", "cases.amend_case", "audit_log"}
ADMIN_ONLY = {"users.list_users", "users.add_user", "users.change_user", "verification.start_verification", "verification.finish",
              "verification.abandon"}


def test_the_table_keeps_the_clinical_rule():
    assert {e for e in REVIEWER_ONLY if access.ACCESS[e] not in ("reviewer", "admin")} == set()
    assert {e for e in ADMIN_ONLY if access.ACCESS[e] != "admin"} == set()


def test_a_technician_cannot_exclude_review_a_cell_or_amend(client, headers):
    case = client.post("/api/cases", json={"code": "ACL-1"}, headers=headers["technician"]).get_json()["id"]
    for url, body in (("/api/results/1/exclude", {"reason": "blurred"}),
                      ("/api/results/1/cells/1/review", {"label": "benign", "revision": 0}),
                      (f"/api/cases/{case}/amend", {"reason": "typo", "revision": 0}),
                      (f"/api/cases/{case}/sign", {"call": "negative", "reason": "read", "revision": 0})):
        r = client.post(url, json=body, headers=headers["technician"])
        assert r.status_code == 403 and "needs a reviewer" in r.get_json()["error"], url
