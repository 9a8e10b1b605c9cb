"""The district's second read over DICOMweb (issue 37), against a real Orthanc with its DICOMweb
plugin (Debian's ``orthanc`` and ``orthanc-dicomweb``) on localhost, no mock: a signed-out case
is queued in its sign-out's transaction and sent as valid DICOM (``dciodvfy``); a wrong password
shows "refused: wrong credentials" on the case; a resend keeps one instance per field; a server
that is down leaves the case waiting with the reason, and it goes when the server is back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PIN, TOKEN, sample_paths

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture
def orthanc(tmp_path):
    if not Path(ORTHANC).exists() or not PLUGIN.exists():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (apt install orthanc orthanc-dicomweb)")
    from tools.district_load import Server

    server = Server(tmp_path / "orthanc", {"ward3": "right-password"}).start()  # a real Orthanc, one user a device
    yield server
    server.stop()


@pytest.fixture
def district_app(tmp_path, orthanc):
    from edge.device.config import load_config
    from edge.device.service import Service
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline
    from edge.record.store import Store
    from edge.web import create_app
    from edge.web.auth import load_credentials

    password = tmp_path / "district-password"
    password.write_text("wrong-password\n")
    state = tmp_path / "state"
    cfg = load_config(None, environ={}, overrides={
        "store.state_dir": str(state), "store.min_free_mb": 0, "server.pin": PIN, "server.token": TOKEN,
        "district.url": f"{orthanc.url}/dicom-web", "district.user": "ward3", "district.password_file": str(password)})
    bundle = load_bundle(default_bundle_path())
    service = Service(cfg, bundle, Pipeline.on_cpu(bundle, threads=1), Store(state, cfg.store), camera=None)
    app = create_app(service, load_credentials(state, PIN, TOKEN), cfg.server)
    app.config["TESTING"] = True
    app.service, app.password = service, password
    yield app
    service.store.close()


def _signed_case(client, headers, code: str) -> dict:
    case_id = client.post("/api/cases", json={"code": code}, headers=headers).get_json()["id"]
    for path in [p for p in sample_paths() if p.name.startswith("pre_b__")]:
        with open(path, "rb") as f:
            assert client.post(f"/api/cases/{case_id}/classify", data={"image": (f, path.name)},
                               headers=headers).status_code == 200
    case = client.get(f"/api/cases/{case_id}", headers=headers).get_json()
    signed = client.post(f"/api/cases/{case_id}/sign", json={"call": "positive", "reason": "blasts seen",
                                                            "revision": case["revision"]}, headers=headers)
    assert signed.status_code == 200, signed.get_json()
    return client.get(f"/api/cases/{case_id}", headers=headers).get_json()


def test_a_signed_case_reaches_the_district_once_whatever_the_link_does(district_app, orthanc, tmp_path):
    client, headers = district_app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    sender, outbox = district_app.service.district, district_app.service.store.outbox
    case = _signed_case(client, headers, "WARD3-001")
    assert case["district"]["state"] == "waiting" and case["district"]["text"] == "waiting to be sent to district"

    # a wrong password: said on the case card, nothing on the server
    assert sender.run_once() == 0
    case = client.get(f"/api/cases/{case['id']}", headers=headers).get_json()
    assert case["district"]["text"] == "refused: wrong credentials" and orthanc.instances() == []

    district_app.password.write_text("right-password\n")  # the admin fixes it: picked up at the next try
    assert sender.run_once(now=time.time() + 3600) == 1
    case = client.get(f"/api/cases/{case['id']}", headers=headers).get_json()
    assert case["district"]["state"] == "sent" and case["district"]["text"].startswith("sent to district")
    fields = [f for f in case["fields"] if not f["excluded"] and f["status"] == "classified"]
    assert len(orthanc.instances()) == len(fields) + 1 >= 2  # the fields and the case's summary SR

    # a resend (the link cut after the server stored it): the same UIDs, still one instance a field
    outbox.queue(case["id"], "test", "resent")
    assert sender.run_once() == 1 and len(orthanc.instances()) == len(fields) + 1

    # the server down: the next case waits with the reason, and goes when the server is back
    orthanc.stop()
    second = _signed_case(client, headers, "WARD3-002")
    assert sender.run_once() == 0
    waiting = client.get(f"/api/cases/{second['id']}", headers=headers).get_json()["district"]
    assert waiting["state"] == "waiting" and waiting["text"].startswith("waiting (1 try, last: server not reachable")
    orthanc.start()
    assert sender.run_once(now=time.time() + 3600) == 1
    assert len(orthanc.instances()) == 2 * (len(fields) + 1)
    metrics = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert "blastscope_district_outbox 0.0" in metrics
    actions = [a["action"] for a in district_app.service.store.audit_log(200)]
    assert {"district.queue", "district.sent", "district.failed"} <= set(actions)


def test_the_instances_are_valid_dicom(district_app, tmp_path):
    """``dciodvfy`` (Debian's dicom3tools) finds no error in a field's instance."""
    from edge.record.dicom import case_instances

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt install dicom3tools)")
    client, headers = district_app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    case = _signed_case(client, headers, "WARD3-010")
    store = district_app.service.store
    instances = case_instances(case, lambda rid: store.file_path(rid, "image"), "ward3", "model", "positive")
    assert instances
    path = tmp_path / "field.dcm"
    instances[0].save_as(path)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
    assert str(instances[0].ContainerIdentifier) == "WARD3-010" and not instances[0].get("PatientName")  # nothing of the patient
    # the case's summary SR: valid too, and it carries the call and the count
    summary = instances[-1]
    assert summary.Modality == "SR" and summary.SeriesDescription == "BlastScope case summary"
    summary.save_as(tmp_path / "summary.dcm")
    checked = subprocess.run(["dciodvfy", str(tmp_path / "summary.dcm")], capture_output=True, text=True)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in summary.ContentSequence}
    assert items["Finding"].TextValue == "final call: positive"
    white = float(items["White cells counted (model)"].MeasuredValueSequence[0].NumericValue)
    blasts = float(items["Blasts among them (model)"].MeasuredValueSequence[0].NumericValue)
    fields = [f for f in case["fields"] if not f["excluded"] and f["status"] == "classified"]
    assert white == sum(f["white_cells"] for f in fields) and blasts == sum(f["blasts"] for f in fields)


def test_a_second_read_is_asked_for_an_uncertain_or_positive_case_before_its_sign_out(district_app, orthanc):
    """Issue 37: "second read wanted" queues a positive or uncertain case without signing it out;
    a case with no call yet is refused with the reason."""
    client, headers = district_app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    district_app.password.write_text("right-password\n")
    empty = client.post("/api/cases", json={"code": "WARD3-020"}, headers=headers).get_json()["id"]
    refused = client.post(f"/api/cases/{empty}/second-read", headers=headers)
    assert refused.status_code == 409 and "positive or uncertain" in refused.get_json()["error"]
    case_id = client.post("/api/cases", json={"code": "WARD3-021"}, headers=headers).get_json()["id"]
    for path in [p for p in sample_paths() if p.name.startswith("pre_b__")]:
        with open(path, "rb") as f:
            client.post(f"/api/cases/{case_id}/classify", data={"image": (f, path.name)}, headers=headers)
    asked = client.post(f"/api/cases/{case_id}/second-read", headers=headers).get_json()
    assert asked["signed"] is None and asked["district"]["why"] == "second read wanted"
    assert district_app.service.district.run_once() == 1 and orthanc.instances()


def test_a_second_read_comes_back_and_shows_on_the_case_audited(district_app, orthanc, tmp_path):
    """Issue 37, item 4: the district hematologist stores a read (``blastscope-edge district-read``,
    a real STOW-RS of an Enhanced SR into the case's study); the device fetches it back (QIDO-RS,
    WADO-RS), shows it on the case card and the report beside the sign-out, says when it differs,
    audits it, and a second fetch adds nothing."""
    from conftest import run_cli

    client, headers = district_app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    district_app.password.write_text("right-password\n")
    sender = district_app.service.district
    case = _signed_case(client, headers, "WARD3-030")
    assert sender.run_once() == 1
    assert sender.fetch_reads() == 0  # nothing read yet

    password = tmp_path / "reader-password"
    password.write_text("right-password\n")
    url = f"{orthanc.url}/dicom-web"
    wrong = run_cli("blastscope-edge", "district-read", "--url", url, "--user", "ward3", "--password-file",
                    str(password), "--case", "NO-SUCH-CASE", "--call", "negative", "--reader", "Dr Sara Amini")
    assert wrong.returncode == 2 and "no study on the server for case NO-SUCH-CASE" in wrong.stderr
    read = run_cli("blastscope-edge", "district-read", "--url", url, "--user", "ward3", "--password-file", str(password),
                   "--case", "WARD3-030", "--call", "negative", "--comment", "Hematogones, not blasts.",
                   "--reader", "Dr Sara Amini")
    assert read.returncode == 0, read.stderr
    assert "second read stored" in read.stdout

    assert sender.fetch_reads() == 1
    shown = client.get(f"/api/cases/{case['id']}", headers=headers).get_json()
    assert [(r["reader"], r["call"], r["comment"]) for r in shown["second_reads"]] == [
        ("Dr Sara Amini", "negative", "Hematogones, not blasts.")]
    assert shown["second_reads"][0]["text"].startswith("District second read by Dr Sara Amini")
    assert shown["final_call"] == "positive" and shown["second_read_differs"] is True  # beside, never over, the sign-out
    report = client.get(f"/api/cases/{case['id']}/report", headers=headers).get_data(as_text=True)
    assert "District second read by Dr Sara Amini" in report and "differs from this case" in report
    audit = [a for a in district_app.service.store.audit_log(200) if a["action"] == "district.second_read"]
    assert len(audit) == 1 and audit[0]["client"] == "district reader Dr Sara Amini"
    assert sender.fetch_reads() == 0  # fetched again: still one read
    assert len(client.get(f"/api/cases/{case['id']}", headers=headers).get_json()["second_reads"]) == 1


def test_no_link_a_usb_stick_takes_the_cases_and_brings_the_acknowledgement_back(district_app, orthanc, tmp_path):
    """Issue 37, item 5: ``district usb-export`` writes the waiting cases as a DICOMDIR with a
    manifest authenticated by the device's district password; a file changed on the way is
    refused at the district with nothing imported; ``district-import`` stores the instances on
    the real Orthanc and writes the acknowledgement; ``district usb-ack`` marks the cases sent."""
    import pydicom
    from pydicom.fileset import FileSet

    from conftest import run_cli

    client, headers = district_app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    state = district_app.service.store.root
    case = _signed_case(client, headers, "WARD3-040")
    assert case["district"]["state"] == "waiting"
    config = tmp_path / "device.toml"
    config.write_text(f'[store]\nstate_dir = "{state}"\nmin_free_mb = 0\n[server]\ndevice_name = "ward3"\n[district]\nurl = "{orthanc.url}/dicom-web"\n'
                      f'user = "ward3"\npassword_file = "{district_app.password}"\n')
    stick = tmp_path / "stick"
    stick.mkdir()
    out = run_cli("blastscope-edge", "district", "usb-export", str(stick), "--config", str(config))
    assert out.returncode == 0, out.stderr
    folder = stick / "BLASTSCOPE" / "ward3"
    fileset = FileSet(pydicom.dcmread(folder / "DICOMDIR"))
    fields = [f for f in case["fields"] if not f["excluded"] and f["status"] == "classified"]
    assert len(list(fileset)) == len(fields) + 1 >= 2  # the fields and the summary SR
    assert client.get(f"/api/cases/{case['id']}", headers=headers).get_json()["district"]["state"] == "waiting"

    server_password = tmp_path / "server-password"
    server_password.write_text("right-password\n")
    args = ["blastscope-edge", "district-import", str(folder), "--url", f"{orthanc.url}/dicom-web", "--user", "ward3",
            "--password-file", str(server_password), "--device-password-file", str(district_app.password)]
    image = next(p for p in folder.rglob("*") if p.is_file() and p.name not in ("DICOMDIR",) and not p.suffix)
    original = image.read_bytes()
    image.write_bytes(original[:-4] + b"XXXX")  # changed on the way
    tampered = run_cli(*args)
    assert tampered.returncode == 2 and "changed since the device wrote it" in tampered.stderr
    assert orthanc.instances() == [] and not (folder / "BLASTSCOPE_ACK.json").exists()
    image.write_bytes(original)

    imported = run_cli(*args)
    assert imported.returncode == 0, imported.stderr
    assert len(orthanc.instances()) == len(fields) + 1
    ack = run_cli("blastscope-edge", "district", "usb-ack", str(stick), "--config", str(config))
    assert ack.returncode == 0 and "acknowledged 1 case(s)" in ack.stdout, ack.stderr
    district = client.get(f"/api/cases/{case['id']}", headers=headers).get_json()["district"]
    assert district["state"] == "sent"
    actions = [a["action"] for a in district_app.service.store.audit_log(200)]
    assert {"district.usb_export", "district.usb_ack", "district.sent"} <= set(actions)


def test_a_hundred_cases_from_two_devices_arrive_once_while_the_server_flaps_and_a_sender_is_killed():
    """Issue 37's target at CI size: 100 signed cases from 2 devices (real records, the device's
    own outbox and sender in separate processes) to a real Orthanc stopped and started every 3 s,
    one sender killed with SIGKILL mid-send and started again: every case on the server exactly
    once (one study a case, one instance a field), none lost, none duplicated. The full size
    (20 devices) is ``python -m tools.district_load`` (README)."""
    import sys

    from conftest import ROOT

    if not Path(ORTHANC).exists() or not PLUGIN.exists():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (apt install orthanc orthanc-dicomweb)")
    run = subprocess.run([sys.executable, "-m", "tools.district_load", "--devices", "2", "--cases", "50", "--chaos",
                          "--flap-seconds", "3", "--json"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["cases"] == 100 and report["every_case_once"], report
    assert report["studies_on_server"] == 100 and report["instances_on_server"] == 200  # a field and a summary each
    assert report["senders_killed"] == 1 and report["server_restarts"] >= 1, report
    assert report["worker_errors"] == {}, report
