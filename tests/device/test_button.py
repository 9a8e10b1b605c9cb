"""The Pi's GPIO push button (live scan issue, item 5), in process on a real Service, store
and app. gpiozero's MockFactory stands in for the Pi's GPIO pins (TEST DOUBLE: no GPIO
here); the camera replays the real sample fields. A press analyses a field into the case a
phone armed the button for, never into another phone's case, and into nothing once the case
is signed out or when none is armed."""

from __future__ import annotations

import time

import pytest

from conftest import PIN, SAMPLES, TOKEN


@pytest.fixture
def device(tmp_path):
    pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    from edge.device.capture import CameraWorker, open_source
    from edge.device.config import load_config
    from edge.device.service import Service
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline
    from edge.record.store import Store
    from edge.web import create_app
    from edge.web.auth import load_credentials

    cfg = load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path), "store.min_free_mb": 0,
                                                    "server.pin": PIN, "server.token": TOKEN, "button.gpio": 17,
                                                    "button.bounce_seconds": 0})
    camera = CameraWorker(f"replay:{SAMPLES}", open_source, fps=15, retry_max_s=1.0).start()
    camera.latest(wait_s=5)
    bundle = load_bundle(default_bundle_path())
    service = Service(cfg, bundle, Pipeline.on_cpu(bundle, threads=1), Store(tmp_path, cfg.store), camera=camera)
    factory = MockFactory()
    service.start_button(pin_factory=factory)
    app = create_app(service, load_credentials(tmp_path, PIN, TOKEN), cfg.server)
    yield service, app.test_client(), {"Authorization": f"Bearer {TOKEN}"}, factory.pin(17)
    if service.button is not None:
        service.button.close()
    camera.stop()
    service.store.close()


def _press(pin, service, presses_before: int) -> None:
    pin.drive_low()  # pressed: the button connects the pin to ground
    pin.drive_high()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        target = service.button_target
        if target.presses > presses_before and not target._busy.locked() and target.last:
            return
        time.sleep(0.05)
    raise AssertionError("the press was never handled")


def test_a_press_analyses_into_the_armed_case_only(device):
    service, client, bearer, pin = device
    a = client.post("/api/cases", json={"code": "BTN-A"}, headers=bearer).get_json()
    b = client.post("/api/cases", json={"code": "BTN-B"}, headers=bearer).get_json()

    _press(pin, service, 0)  # nothing armed: nothing analysed
    assert "no case armed" in service.button_target.last
    assert client.get(f"/api/cases/{a['id']}", headers=bearer).get_json()["field_count"] == 0

    armed = client.post(f"/api/cases/{a['id']}/button", json={"action": "arm"}, headers=bearer)
    assert armed.status_code == 200 and armed.get_json()["armed_by"].startswith("admin")
    assert client.get(f"/api/cases/{a['id']}", headers=bearer).get_json()["button"]["armed_by"].startswith("admin")
    assert client.get(f"/api/cases/{b['id']}", headers=bearer).get_json()["button"] is None
    _press(pin, service, 1)
    record = client.get(f"/api/cases/{a['id']}", headers=bearer).get_json()
    assert record["field_count"] == 1 and service.button_target.last.startswith(f"field #{record['fields'][0]['id']} analysed into case BTN-A")
    assert client.get(f"/api/cases/{b['id']}", headers=bearer).get_json()["field_count"] == 0
    status = client.get("/api/status", headers=bearer).get_json()["button"]
    assert status["gpio"] == 17 and status["working"] and status["armed_case_id"] == a["id"] and status["presses"] == 2
    actions = [x["action"] for x in service.store.audit_log(50)]
    assert "button.arm" in actions and "case.field_added" in actions

    # arming another case moves the button there
    client.post(f"/api/cases/{b['id']}/button", json={"action": "arm"}, headers=bearer)
    _press(pin, service, 2)
    assert client.get(f"/api/cases/{b['id']}", headers=bearer).get_json()["field_count"] == 1
    assert client.get(f"/api/cases/{a['id']}", headers=bearer).get_json()["field_count"] == 1


def test_signing_the_case_out_disarms_the_button(device):
    service, client, bearer, pin = device
    case = client.post("/api/cases", json={"code": "BTN-S"}, headers=bearer).get_json()
    client.post(f"/api/cases/{case['id']}/button", json={"action": "arm"}, headers=bearer)
    _press(pin, service, 0)
    revision = client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()["revision"]
    signed = client.post(f"/api/cases/{case['id']}/sign", json={"call": "negative", "reason": "read", "revision": revision},
                         headers=bearer)
    assert signed.status_code == 200, signed.get_json()
    assert service.button_target.armed is None
    _press(pin, service, 1)
    assert client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()["field_count"] == 1
    again = client.post(f"/api/cases/{case['id']}/button", json={"action": "arm"}, headers=bearer)
    assert again.status_code == 409 and "signed out" in again.get_json()["error"]
    assert client.post(f"/api/cases/{case['id']}/button", json={"action": "push"}, headers=bearer).status_code == 400


def test_a_device_without_a_button_refuses_to_arm_and_a_broken_one_is_a_degraded_reason(app, client, bearer, tmp_path):
    case = client.post("/api/cases", json={"code": "NOBTN"}, headers=bearer).get_json()
    r = client.post(f"/api/cases/{case['id']}/button", json={"action": "arm"}, headers=bearer)
    assert r.status_code == 409 and "no GPIO button" in r.get_json()["error"]

    from edge.device.config import load_config
    from edge.device.service import Service

    service = app.service
    broken = Service(load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path), "button.gpio": 17}),
                     service.bundle, service.pipeline, service.store, camera=None)

    class NoPins:  # TEST DOUBLE: a pin factory that has no pins, as on a machine without GPIO
        def __getattr__(self, name):
            raise RuntimeError("no GPIO on this machine")

    broken.start_button(pin_factory=NoPins())
    assert broken.button is None and any(r.startswith("the GPIO button on pin 17 is not working")
                                         for r in broken.degraded_reasons())


def test_only_who_armed_it_or_a_reviewer_moves_the_button_and_sign_out_stops_the_scan(device):
    """Issue 35 item 3: any user could re-arm, disarm or stop what another armed or started;
    scans were not audited; a scan kept running (holding the camera) after its case was signed."""
    service, client, bearer, _ = device
    tokens = {}
    for name in ("Tomas", "Ines"):
        r = client.post("/api/users", json={"name": name, "role": "technician", "pin": "97531864"}, headers=bearer)
        tokens[name] = {"Authorization": f"Bearer {r.get_json()['token']}"}
    a = client.post("/api/cases", json={"code": "OWN-A"}, headers=tokens["Tomas"]).get_json()
    b = client.post("/api/cases", json={"code": "OWN-B"}, headers=tokens["Ines"]).get_json()
    assert client.post(f"/api/cases/{a['id']}/button", json={"action": "arm"}, headers=tokens["Tomas"]).status_code == 200
    for body, case in (({"action": "arm"}, b), ({"action": "disarm"}, a)):
        r = client.post(f"/api/cases/{case['id']}/button", json=body, headers=tokens["Ines"])
        assert r.status_code == 403 and "only they or a reviewer" in r.get_json()["error"], r.get_json()
    assert service.button_target.armed.case_id == a["id"]

    started = client.post(f"/api/cases/{a['id']}/scan", json={"action": "start"}, headers=tokens["Tomas"])
    assert started.status_code == 200, started.get_json()
    r = client.post(f"/api/cases/{a['id']}/scan", json={"action": "stop"}, headers=tokens["Ines"])
    assert r.status_code == 403 and service.scan is not None and service.scan.running
    revision = client.get(f"/api/cases/{a['id']}", headers=bearer).get_json()["revision"]
    signed = client.post(f"/api/cases/{a['id']}/sign", json={"call": "negative", "reason": "read", "revision": revision},
                         headers=bearer)
    assert signed.status_code == 200, signed.get_json()
    assert service.button_target.armed is None and not service.scan.running  # the camera is free for other cases
    actions = [(x["action"], (x.get("after") or {}).get("why")) for x in service.store.audit_log(50)]
    assert ("scan.start", None) in actions and ("scan.stop", "case signed out") in actions
    assert ("button.disarm", "case signed out") in actions
