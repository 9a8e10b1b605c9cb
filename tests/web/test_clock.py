"""An admin sets the device's clock to the phone's (issue 36 item 7), through the real route and
a real subprocess. The command that would set the system clock (``timedatectl set-time``) is
replaced by a script that records what it was asked: a test must never change this machine's
clock, and systemd-timedated with its polkit rule is a Pi's, checked on the device."""

from __future__ import annotations

import time

from edge.device.clock import ClockConfig

from test_users import _add


def _stand_in(app, tmp_path, fail: bool = False):
    """The system clock's stand-in: a script that writes its arguments, or refuses as timedated does."""
    script = tmp_path / "set-time"
    asked = tmp_path / "asked"
    body = ('echo "Failed to set time: Automatic time synchronization is enabled" >&2; exit 1' if fail
            else f'echo "$@" > {asked}')
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    service = app.service
    service.config = service.config.model_copy(update={"clock": ClockConfig(set_command=(str(script),))})
    return asked


def test_an_admin_sets_the_device_clock_to_the_phone_s_time(app, client, bearer, tmp_path):
    asked = _stand_in(app, tmp_path)
    phone = time.time() + 3 * 3600  # the Pi booted three hours behind
    r = client.post("/api/clock", json={"now": phone, "device_now": time.time()}, headers=bearer)
    assert r.status_code == 200 and r.get_json()["set"] is True, r.get_json()
    assert asked.read_text().split() == [f"@{round(phone)}"]
    audit = app.service.store.audit_log(5)
    assert audit[0]["action"] == "clock.set" and audit[0]["after"]["phone_time"] == round(phone, 1)


def test_only_an_admin_with_a_fresh_page_and_a_set_phone_may_set_it(app, client, bearer, tmp_path):
    asked = _stand_in(app, tmp_path)
    now = time.time()
    tech = _add(client, bearer, "Tess Tech", "technician", "135791")
    assert client.post("/api/clock", json={"now": now + 3600, "device_now": now}, headers=tech).status_code == 403
    for body in ({}, {"now": "noon", "device_now": now}, {"now": now + 3600}, {"now": float("nan"), "device_now": now},
                 {"now": True, "device_now": now}):
        r = client.post("/api/clock", json=body, headers=bearer)
        assert r.status_code == 400 and "now" in r.get_json()["error"], (body, r.get_json())
    unset_phone = client.post("/api/clock", json={"now": 946684800.0, "device_now": now}, headers=bearer)  # 2000-01-01
    assert unset_phone.status_code == 400 and "phone's own clock is not set" in unset_phone.get_json()["error"]
    stale = client.post("/api/clock", json={"now": now + 3600, "device_now": now - 3600}, headers=bearer)
    assert stale.status_code == 409 and "reload the page" in stale.get_json()["error"]
    agree = client.post("/api/clock", json={"now": time.time() + 1, "device_now": now}, headers=bearer)
    assert agree.status_code == 200 and agree.get_json()["set"] is False
    assert not asked.exists()  # none of these reached the clock
    assert not any(a["action"] == "clock.set" for a in app.service.store.audit_log(50))


def test_a_time_before_the_newest_field_needs_confirming_and_a_refusal_is_said(app, client, bearer, tmp_path):
    from conftest import sample_paths

    asked = _stand_in(app, tmp_path)
    with open(sample_paths()[0], "rb") as f:
        assert client.post("/api/classify", data={"image": (f, "a.jpg")}, headers=bearer).status_code == 200
    earlier = time.time() - 86400  # the phone says yesterday: the newest field would be "in the future"
    r = client.post("/api/clock", json={"now": earlier, "device_now": time.time()}, headers=bearer)
    assert r.status_code == 409 and "newest field in the record" in r.get_json()["error"] and not asked.exists()
    r = client.post("/api/clock", json={"now": earlier, "device_now": time.time(), "confirm": True}, headers=bearer)
    assert r.status_code == 200 and asked.exists()
    _stand_in(app, tmp_path, fail=True)
    r = client.post("/api/clock", json={"now": time.time() + 3600, "device_now": time.time()}, headers=bearer)
    assert r.status_code == 503 and "Automatic time synchronization is enabled" in r.get_json()["error"]
