"""Named users in process (review issue, item 1): each person logs in with their own name and
PIN, roles decide who may review, every audit row names the user, and an attacker without a
trusted-device cookie cannot lock a clinician out."""

from __future__ import annotations

import re

import pytest

from conftest import PIN, sample_paths
from edge.web import DEVICE_COOKIE
from edge.web.users import UserError, Users


def _add(client, bearer, name, role, pin):
    r = client.post("/api/users", json={"name": name, "role": role, "pin": pin}, headers=bearer)
    assert r.status_code == 201, r.get_json()
    return {"Authorization": f"Bearer {r.get_json()['token']}"}


def _csrf(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def _login(client, name, pin, address="127.0.0.1"):
    return client.post("/login", data={"name": name, "pin": pin, "csrf": _csrf(client)},
                       environ_base={"REMOTE_ADDR": address})


def _case_with_field(client, headers, code):
    case = client.post("/api/cases", json={"code": code}, headers=headers).get_json()
    path = sample_paths()[0]
    with open(path, "rb") as f:
        field = client.post(f"/api/cases/{case['id']}/classify", data={"image": (f, path.name)}, headers=headers)
    assert field.status_code == 200, field.get_json()
    return case, field.get_json()


def test_a_technician_analyses_but_only_a_reviewer_reviews_under_their_own_name(app, client, bearer):
    tech = _add(client, bearer, "Tess Tech", "technician", "135791")
    rev = _add(client, bearer, "Rob Review", "reviewer", "864202")
    assert client.get("/api/me", headers=tech).get_json() == {"name": "Tess Tech", "role": "technician",
                                                              "may": ["technician"]}
    case, field = _case_with_field(client, tech, "LAB-ROLES")
    review = {"call": "negative", "reason": "artefact", "reviewer": "somebody else", "revision": field["revision"]}
    refused = client.post(f"/api/results/{field['id']}/review", json=review, headers=tech)
    assert refused.status_code == 403 and "Tess Tech is a technician" in refused.get_json()["error"]
    for path in (f"/api/cases/{case['id']}/sign", f"/api/cases/{case['id']}/review"):
        assert client.post(path, json={**review, "revision": case["revision"]}, headers=tech).status_code == 403
    assert client.get("/api/users", headers=tech).status_code == 403  # managing users is an admin's
    saved = client.post(f"/api/results/{field['id']}/review", json=review, headers=rev)
    assert saved.status_code == 200 and saved.get_json()["review"]["reviewer"] == "Rob Review"  # not the typed name
    audit = app.service.store.audit_log(50)
    assert any(a["action"] == "result.review" and a["client"].startswith("Rob Review (") for a in audit), audit[:3]
    assert any(a["client"].startswith("Tess Tech (") for a in audit)  # her case and field are hers
    assert any(a["action"] == "user.add" and a["client"].startswith("admin (") for a in audit)


def test_users_log_in_with_name_and_pin_and_a_changed_pin_ends_their_sessions(app, client, bearer):
    _add(client, bearer, "Ana", "reviewer", "11223344")
    assert _login(client, "Ana", "99999999").status_code == 401
    assert _login(client, "Nobody", "11223344").status_code == 401
    ok = _login(client, "ana", "11223344")  # names are not case-sensitive
    assert ok.status_code == 302 and DEVICE_COOKIE in ok.headers.get("Set-Cookie", "")
    assert client.get("/api/me").get_json()["name"] == "Ana"
    page = client.get("/").get_data(as_text=True)
    assert 'Log out <span class="who">Ana</span>' in page and 'name="reviewer"' not in page  # the review form types no name
    assert client.post("/api/users/Ana", json={"pin": "55667788"}, headers=bearer).status_code == 200
    assert client.get("/api/me").status_code == 401  # the session opened with the old PIN ended
    assert _login(client, "Ana", "11223344").status_code == 401
    assert _login(client, "Ana", "55667788").status_code == 302
    assert client.post("/api/users/Ana", json={"active": False}, headers=bearer).status_code == 200
    assert client.get("/api/me").status_code == 401
    # a deactivated user with the right PIN is told so (issue 35), and it is not counted as a guess
    refused = _login(client, "Ana", "55667788")
    assert refused.status_code == 403 and "Ana is deactivated: ask an admin" in refused.get_data(as_text=True)
    wrong = _login(client, "Ana", "00000000")  # without the PIN nobody learns that Ana is deactivated
    assert wrong.status_code == 401 and "deactivated" not in wrong.get_data(as_text=True)


def test_an_attacker_without_the_phones_cookie_cannot_lock_the_clinician_out(app, bearer):
    first = app.test_client()
    first.post("/api/users", json={"name": "Rob", "role": "reviewer", "pin": "864202"}, headers=bearer)
    phone, attacker = app.test_client(), app.test_client()
    assert _login(phone, "Rob", "864202").status_code == 302  # this phone is now trusted for Rob
    phone.post("/logout", data={"csrf": re.search(r'name="csrf" value="([0-9a-f]+)"',
                                                 phone.get("/").get_data(as_text=True)).group(1)})
    for i in range(12):  # from many addresses, as an attacker cycling them would
        assert _login(attacker, "Rob", f"{100000 + i}", address=f"10.0.0.{i + 1}").status_code in (401, 429)
    locked = _login(attacker, "Rob", "864202", address="10.0.0.99")
    assert locked.status_code == 429  # the right PIN from an untrusted client waits too
    assert _login(phone, "Rob", "864202").status_code == 302  # the clinician's phone gets in at once
    assert "Rob" in phone.get("/login").get_data(as_text=True)  # and the page remembers the name


def test_user_rules_and_the_last_admin(app, client, bearer, tmp_path):
    for body in ({"name": "x", "role": "technician", "pin": "12345"}, {"name": "x", "role": "technician", "pin": "1" * 13},
                 {"name": "x", "role": "technician", "pin": "12a456"}, {"name": "x", "role": "boss", "pin": "123456"},
                 {"name": "", "role": "technician", "pin": "123456"}, {"name": "A" * 41, "role": "technician", "pin": "123456"}):
        r = client.post("/api/users", json=body, headers=bearer)
        assert r.status_code == 400 and r.get_json()["error"], body
    _add(client, bearer, "Twin", "technician", "123456")
    again = client.post("/api/users", json={"name": "twin", "role": "admin", "pin": "123456"}, headers=bearer)
    assert again.status_code == 400 and "exists already" in again.get_json()["error"]
    demote = client.post("/api/users/admin", json={"role": "reviewer"}, headers=bearer)
    assert demote.status_code == 400 and "last active admin" in demote.get_json()["error"]
    renewed = client.post("/api/users/Twin", json={"new_token": True}, headers=bearer).get_json()["token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {renewed}"}).get_json()["name"] == "Twin"
    users = Users(tmp_path / "other")
    assert users.ensure_first_admin(PIN, "tok-1") and not users.ensure_first_admin("000000", "tok-2")
    assert users.login("admin", PIN) is not None and users.by_token("tok-2") is None
    with pytest.raises(UserError, match="last active admin"):
        users.change("admin", active=False)


def test_one_users_wrong_pins_never_lock_another_user_of_the_phone(app, bearer):
    """Issue 35: 5 wrong PINs of one user locked the whole phone; another user with the right PIN
    was refused, named in the message as the one who erred. And a shared phone remembers every
    user who logged in on it, not only the last."""
    phone = app.test_client()
    for name, pin in (("Tina", "24682468"), ("Carl", "13571357")):
        assert phone.post("/api/users", json={"name": name, "role": "technician", "pin": pin},
                          headers=bearer).status_code == 201
    for _ in range(5):
        assert _login(phone, "Tina", "99999999").status_code in (401, 429)
    locked = _login(phone, "Tina", "24682468")
    assert locked.status_code == 429 and "for Tina" in locked.get_data(as_text=True)
    carl = _login(phone, "Carl", "13571357")
    assert carl.status_code == 302, carl.get_data(as_text=True)
    phone.post("/logout", data={"csrf": ""})
    # the shared phone trusts each user who logged in on it: an attack on Carl's name from
    # elsewhere does not lock Carl out of this phone, and Tina's entry is still there
    attacker = app.test_client()
    for _ in range(6):
        _login(attacker, "Carl", "00000000")
    assert _login(attacker, "Carl", "13571357").status_code == 429
    assert _login(phone, "Carl", "13571357").status_code == 302



def test_a_zeroed_sessions_db_is_made_anew_not_a_restart_loop(tmp_path):
    """Issue 34: a zeroed sessions.db (disposable data) stopped the daemon from starting."""
    from edge.web.sessions import DATABASE, Sessions

    (tmp_path / DATABASE).write_bytes(b"\0" * 8192)
    sessions = Sessions(tmp_path, "fp", 3600)
    sid, _ = sessions.create("Ana")
    assert sessions.lookup(sid) is not None
    assert list(tmp_path.glob(f"{DATABASE}.damaged-*"))  # the damaged one kept aside


def test_a_damaged_users_db_says_so_with_503(tmp_path):
    """Issue 34: a bad page in users.db gave /healthz 200 and every signed-in request 500."""
    from edge.device.config import load_config
    from edge.device.service import Service
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline
    from edge.record.store import Store
    from edge.web import create_app
    from edge.web.auth import load_credentials

    from conftest import PIN, TOKEN

    (tmp_path / "users.db").write_bytes(b"SQLite format 3\0" + b"\x13" * 4080)
    cfg = load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path), "store.min_free_mb": 0,
                                                    "server.pin": PIN, "server.token": TOKEN})
    bundle = load_bundle(default_bundle_path())
    service = Service(cfg, bundle, Pipeline.on_cpu(bundle, threads=1), Store(tmp_path, cfg.store), camera=None)
    client = create_app(service, load_credentials(tmp_path, PIN, TOKEN), cfg.server).test_client()
    try:
        r = client.get("/api/cases", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 503 and "users.db is damaged" in r.get_json()["error"]
        assert client.post("/login", data={"name": "admin", "pin": PIN}).status_code == 503
        assert client.get("/healthz").status_code == 200  # the device itself still runs
    finally:
        service.analyses.close()
        service.store.close()
