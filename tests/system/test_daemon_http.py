"""The daemon over real HTTP: a real server process, real images, real requests."""

from __future__ import annotations

import re
import sqlite3
import struct
import time
import zlib

import cv2
import numpy as np
import requests

from edge.analysis.labels import LABELS

from conftest import PIN, ServerProcess, sample_paths


def _jpeg(path) -> bytes:
    return path.read_bytes()


def _classify(server, data: bytes, name: str = "field.jpg", **kw) -> requests.Response:
    return requests.post(f"{server.url}/api/classify", files={"image": (name, data)}, headers=server.headers(),
                         timeout=30, **kw)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG whose header claims a huge size (its pixels are never decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_health_and_auth_required(server):
    r = requests.get(f"{server.url}/healthz", timeout=10)
    # a new device has not been verified on the clinic's slides: healthy, and says it is unverified
    # apart, so a monitor can tell "new" from "broken" (issue 33)
    assert r.status_code == 200 and r.json() == {"status": "ok", "backend": "cpu", "verified": False}
    r = requests.get(f"{server.url}/api/status", timeout=10)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    r = requests.get(f"{server.url}/api/status", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401


def test_classify_upload_then_fetch_record_and_images(server):
    sample = sample_paths()[4]
    r = _classify(server, _jpeg(sample), sample.name)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["classified"] and result["label"] in (*LABELS, "uncertain")
    assert set(result["probabilities"]) == set(LABELS)
    assert result["backend"] == "cpu" and result["timings_ms"]["inference"] > 0
    assert "not a diagnosis" in result["disclaimer"]
    assert {"focus", "clipped_fraction", "brightness"} <= set(result["quality"])
    stored = requests.get(f"{server.url}/api/results/{result['id']}", headers=server.headers(), timeout=10).json()
    assert stored["probabilities"] == result["probabilities"] and stored["id"] == result["id"]
    for kind in ("image", "overlay"):
        img = requests.get(f"{server.url}/api/results/{result['id']}/{kind}", headers=server.headers(), timeout=10)
        assert img.status_code == 200 and img.headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR) is not None
    listing = requests.get(f"{server.url}/api/results?limit=5", headers=server.headers(), timeout=10).json()
    assert listing["results"][0]["id"] == result["id"]


def test_capture_classifies_the_replayed_camera_frame(server):
    r = requests.post(f"{server.url}/api/capture", headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["source"].startswith("replay:") and r.json()["classified"]
    preview = requests.get(f"{server.url}/api/preview.jpg", headers=server.headers(), timeout=10)
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"


def test_rejected_fields_are_stored_with_reasons(server):
    sharp = cv2.imread(str(sample_paths()[0]))
    blurred = cv2.GaussianBlur(sharp, (0, 0), 5.0)  # past sigma 4, where the shipped model stops reading
    r = _classify(server, cv2.imencode(".png", blurred)[1].tobytes(), "blurred.png")
    assert r.status_code == 200
    assert r.json()["status"] == "rejected" and "out of focus" in r.json()["reasons"][0]
    assert "label" not in r.json()
    blank = np.full((600, 800, 3), 235, np.uint8)
    r = _classify(server, cv2.imencode(".jpg", blank)[1].tobytes(), "blank.jpg")
    assert r.json()["status"] == "rejected"
    assert any(reason.startswith("out of focus") or reason.startswith("no cells") for reason in r.json()["reasons"])
    stored = requests.get(f"{server.url}/api/results/{r.json()['id']}", headers=server.headers(), timeout=10).json()
    assert stored["status"] == "rejected"


def test_bad_input_gets_4xx_with_reason_and_daemon_keeps_running(server):
    good = _jpeg(sample_paths()[0])
    cases = [
        (_classify(server, b"%PDF-1.4 not an image", "report.pdf"), 415, "not a JPEG or PNG"),
        (_classify(server, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n", "x.eps"), 415,
         "not a JPEG or PNG"),  # never handed to Ghostscript
        (_classify(server, _png_header_only(1, 40_000_000), "line.png"), 413, "16384 pixels a side"),
        (_classify(server, good[: len(good) // 2], "cut.jpg"), 400, "truncated"),
        (_classify(server, b"", "empty.jpg"), 400, "empty"),
        (_classify(server, _png_header_only(6000, 6000), "huge.png"), 413, "limit is 24,000,000 pixels"),
        (_classify(server, b"\xff" * (17 * 1024 * 1024), "big.jpg"), 413, "upload too large"),
        (requests.post(f"{server.url}/api/classify", headers=server.headers(), timeout=10), 400, "field 'image'"),
        (requests.get(f"{server.url}/api/results?limit=abc", headers=server.headers(), timeout=10), 400, "limit"),
        (requests.get(f"{server.url}/api/results?limit=²", headers=server.headers(), timeout=10), 400, "limit"),
        (requests.get(f"{server.url}/api/results/{2**63}", headers=server.headers(), timeout=10), 404, ""),
        (requests.get(f"{server.url}/api/results/{2**64}/image", headers=server.headers(), timeout=10), 404, ""),
        (requests.get(f"{server.url}/api/results/999999", headers=server.headers(), timeout=10), 404, "no result"),
        (requests.get(f"{server.url}/api/nothing", headers=server.headers(), timeout=10), 404, ""),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, (reason, response.text)
        assert reason in response.json()["error"]
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert _classify(server, good).status_code == 200


def test_status_tells_the_operator_what_runs(server):
    s = requests.get(f"{server.url}/api/status", headers=server.headers(), timeout=10).json()
    assert s["status"] == "ok" and s["degraded_reasons"] == []  # a new device is not broken; it says it is new:
    assert s["site_verification"]["verified"] is False and "start" in s["site_verification"]["why"]
    assert s["backend"]["active"] == "cpu" and s["model"]["id"]
    assert s["camera"]["source"].startswith("replay:")
    assert {"free_mb", "results", "state_dir"} <= set(s["disk"])
    assert s["uptime_s"] >= 0 and "mean_latency_ms" in s["analysis"]
    from edge.model.bundle import load_bundle, default_bundle_path
    fitted = load_bundle(default_bundle_path()).manifest["quality_gate"]["limits"]
    assert {k: s["quality_limits"][k] for k in fitted} == fitted and s["quality_limits"]["overridden"] == []


def test_a_device_setting_overrides_the_bundles_gate_limit(tmp_path):
    """``[quality] min_focus`` in the device's config wins over the bundle's fitted limit, and
    the status says which limits were overridden."""
    from conftest import ServerProcess

    config = tmp_path / "config.toml"
    config.write_text("[quality]\nmin_focus = 1000.0\n")
    server = ServerProcess(tmp_path / "state", "--demo", "--config", str(config))
    try:
        s = requests.get(f"{server.url}/api/status", headers=server.headers(), timeout=10).json()
        assert s["quality_limits"]["min_focus"] == 1000.0 and s["quality_limits"]["overridden"] == ["min_focus"]
        r = _classify(server, _jpeg(sample_paths()[0]))
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        assert r.json()["reasons"][0].startswith("out of focus")
    finally:
        server.stop()


def _login_page(session: requests.Session, url: str) -> str:
    html = session.get(f"{url}/login", timeout=10).text
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_pin_login_session_csrf_and_lockout(server):
    browser = requests.Session()
    assert browser.get(f"{server.url}/", allow_redirects=False, timeout=10).status_code == 302
    csrf = _login_page(browser, server.url)
    assert browser.post(f"{server.url}/login", data={"name": "admin", "pin": "000000", "csrf": csrf}, timeout=10).status_code == 401
    r = browser.post(f"{server.url}/login", data={"name": "admin", "pin": PIN, "csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    page = browser.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and "not a diagnosis" in page.text
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)
    assert browser.post(f"{server.url}/api/capture", timeout=30).status_code == 403  # no CSRF header
    r = browser.post(f"{server.url}/api/capture", headers={"X-CSRF-Token": token}, timeout=30)
    assert r.status_code == 200 and r.json()["id"]
    assert browser.get(f"{server.url}/api/status", timeout=10).status_code == 200

    attacker = requests.Session()
    csrf = _login_page(attacker, server.url)
    for _ in range(5):
        attacker.post(f"{server.url}/login", data={"name": "admin", "pin": "111111", "csrf": csrf}, timeout=10)
    r = attacker.post(f"{server.url}/login", data={"name": "admin", "pin": PIN, "csrf": csrf}, timeout=10)
    assert r.status_code == 429 and "Too many wrong PINs" in r.text


def test_generated_credentials_are_private_and_printed_once(tmp_path):
    import os
    import stat

    env = {"BLASTSCOPE_PIN": "", "BLASTSCOPE_TOKEN": "", "INVOCATION_ID": "", "JOURNAL_STREAM": ""}  # a terminal
    first = ServerProcess(tmp_path / "state", "--demo", env=env)
    assert first.stop() == 0
    printed = "".join(first.output)
    pin = re.search(r"PIN (\d{6})", printed).group(1)
    creds = tmp_path / "state" / "credentials"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    assert f"pin={pin}" in creds.read_text()
    second = ServerProcess(tmp_path / "state", "--demo", env=env)
    try:
        assert "first start" not in "".join(second.output)
        session = requests.Session()
        csrf = _login_page(session, second.url)
        assert session.post(f"{second.url}/login", data={"name": "admin", "pin": pin, "csrf": csrf}, allow_redirects=False,
                            timeout=10).status_code == 302
    finally:
        second.stop()


def test_under_systemd_the_first_start_names_the_file_not_the_pin(tmp_path):
    """The journal keeps what a unit prints: the PIN and token stay out of it, and a root-only
    command shows them."""
    from conftest import run_cli

    env = {"BLASTSCOPE_PIN": "", "BLASTSCOPE_TOKEN": "", "INVOCATION_ID": "0123456789abcdef"}
    first = ServerProcess(tmp_path / "state", "--demo", env=env)
    assert first.stop() == 0
    printed = "".join(first.output)
    stored = dict(line.split("=", 1) for line in (tmp_path / "state" / "credentials").read_text().splitlines())
    assert stored["pin"] not in printed and stored["token"] not in printed
    assert "sudo blastscope-edge credentials" in printed
    # log lines carry their syslog priority for journald (sd-daemon(3) prefixes)
    assert re.search(r"^<6>INFO blastscope: signal 15: stopping", printed, re.M), printed
    shown = run_cli("blastscope-edge", "credentials", "--state-dir", str(tmp_path / "state"))
    assert shown.returncode == 0 and f"PIN {stored['pin']}" in shown.stdout and stored["token"] in shown.stdout
    missing = run_cli("blastscope-edge", "credentials", "--state-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no credentials yet" in missing.stderr


def test_sigterm_shuts_down_cleanly_and_flushes(server):
    assert _classify(server, _jpeg(sample_paths()[1])).status_code == 200
    assert server.stop() == 0
    assert "store closed" in "".join(server.output)
    wal = server.state_dir / "results.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(server.state_dir / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_config_errors_name_the_key(tmp_path):
    from conftest import run_cli

    bad = tmp_path / "config.toml"
    bad.write_text('[server]\nport = "eighty"\n')
    r = run_cli("blastscope-edge", "serve", "--config", str(bad))
    assert r.returncode == 2 and "config: server.port: Input should be a valid integer" in r.stderr and "Traceback" not in r.stderr
    bad.write_text('[camera]\nsorce = "picamera2"\n')
    r = run_cli("blastscope-edge", "serve", "--config", str(bad))
    assert r.returncode == 2 and "unknown key camera.sorce" in r.stderr


def test_half_sent_requests_do_not_lock_out_the_page_or_the_api(server):
    """110 connections that send half a request and stall (loopback, bounded, closed at the
    end): /healthz and an authenticated request still answer at once."""
    import socket
    from urllib.parse import urlparse

    port = urlparse(server.url).port
    stalled = []
    try:
        for _ in range(110):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                      b"Authorization: Bearer " + server.headers()["Authorization"][7:].encode() + b"\r\n\r\npartial")
            stalled.append(s)
        started = time.monotonic()
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{server.url}/api/results?limit=1", headers=server.headers(), timeout=5).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        for s in stalled:
            s.close()


def _answer_to_headers(server, head: bytes) -> tuple[int, bytes]:
    """Send only a request's headers (no body) and read the answer: what the server decides
    from the headers alone."""
    import socket
    from urllib.parse import urlparse

    with socket.create_connection(("127.0.0.1", urlparse(server.url).port), timeout=10) as s:
        s.sendall(head)
        answer = b""
        while chunk := s.recv(65536):  # the server closes the connection after answering
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_body_is_refused_from_its_headers_before_it_is_read(server):
    """No login, a body claimed at 10 MB, none of it sent: 401 at once, connection closed (the
    issue's clients filled the disk this way). Chunked bodies too. With the token, a body above
    the upload limit gets 413 from its Content-Length alone."""
    post = b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    status, answer = _answer_to_headers(server, post + b"Content-Length: 10000000\r\n\r\n")
    assert status == 401 and b"log in first" in answer
    status, answer = _answer_to_headers(server, post + b"Transfer-Encoding: chunked\r\n\r\n")
    assert status == 401 and b"log in first" in answer
    cookie = b"Cookie: session=forged.value.sig\r\n"  # a cookie the device did not sign
    status, _ = _answer_to_headers(server, post + cookie + b"Content-Length: 10000000\r\n\r\n")
    assert status == 401
    token = f"Authorization: Bearer {server.headers()['Authorization'][7:]}\r\n".encode()
    status, answer = _answer_to_headers(server, post + token + b"Content-Length: 200000000\r\n\r\n")
    assert status == 413
    # a small body needs no login to be read (the login form); the app then answers as before
    r = requests.post(f"{server.url}/api/classify", data=b"x" * 1000, timeout=10)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_a_logged_in_page_may_send_a_large_upload(server):
    """The gate reads the page's own session cookie: a logged-in phone's upload over 64 KB is
    read and analysed; after logout the same cookie is refused from the headers."""
    browser = requests.Session()
    csrf = _login_page(browser, server.url)
    assert browser.post(f"{server.url}/login", data={"name": "admin", "pin": PIN, "csrf": csrf}, allow_redirects=False,
                        timeout=10).status_code == 302
    page = browser.get(f"{server.url}/", timeout=10)
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)
    sample = sample_paths()[4]
    files = {"image": (sample.name, sample.read_bytes()), "padding": ("pad.bin", b"\0" * 200_000)}
    r = browser.post(f"{server.url}/api/classify", files=files, headers={"X-CSRF-Token": token}, timeout=30)
    assert r.status_code == 200, r.text
    cookie = browser.cookies.get("session")
    browser.post(f"{server.url}/logout", headers={"X-CSRF-Token": token}, data={"csrf": token}, timeout=10)
    post = (b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Cookie: session=" + cookie.encode() + b"\r\nContent-Length: 10000000\r\n\r\n")
    status, _ = _answer_to_headers(server, post)
    assert status == 401


def test_metrics_count_what_the_device_did_in_prometheus_format(tmp_path):
    """A fresh daemon: one classified field, one too blurred to read; /metrics (with the token)
    counts both, names the rejection, times the stages and says which model runs."""
    from prometheus_client.parser import text_string_to_metric_families

    daemon = ServerProcess(tmp_path / "state", "--demo")
    try:
        assert requests.get(f"{daemon.url}/metrics", timeout=10).status_code == 401
        assert _classify(daemon, _jpeg(sample_paths()[4])).json()["classified"]
        blurred = cv2.GaussianBlur(cv2.imread(str(sample_paths()[0])), (0, 0), 5.0)
        assert _classify(daemon, cv2.imencode(".png", blurred)[1].tobytes(), "b.png").json()["status"] == "rejected"
        r = requests.get(f"{daemon.url}/metrics", headers=daemon.headers(), timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(r.text) for s in family.samples}
        assert samples[("blastscope_fields_total", (("status", "classified"),))] == 1
        assert samples[("blastscope_fields_total", (("status", "rejected"),))] == 1
        assert samples[("blastscope_rejections_total", (("reason", "out of focus"),))] == 1
        assert samples[("blastscope_stage_seconds_count", (("stage", "inference"),))] == 1
        assert samples[("blastscope_stage_seconds_count", (("stage", "quality"),))] == 2
        assert samples[("blastscope_stage_seconds_sum", (("stage", "inference"),))] > 0
        status = requests.get(f"{daemon.url}/api/status", headers=daemon.headers(), timeout=10).json()
        model = [k for k in samples if k[0] == "blastscope_model_info"][0]
        assert dict(model[1])["model_id"] == status["model"]["id"]
        assert samples[("blastscope_disk_free_bytes", ())] > 0
        assert samples[("blastscope_degraded", ())] == (1.0 if status["status"] == "degraded" else 0.0)
        # issue 36, item 9: build, inferences per backend, queue depth, site verification
        build = [k for k in samples if k[0] == "blastscope_build_info"][0]
        assert dict(build[1])["version"] == status["version"]
        assert samples[("blastscope_inferences_total", (("backend", "cpu"),))] >= 1
        assert samples[("blastscope_analysis_queue_depth", ())] == 0
        assert samples[("blastscope_site_verified", ())] == 0
    finally:
        daemon.stop()


def test_the_live_view_streams_jpegs_over_real_http_and_a_third_phone_gets_stills(server):
    """The MJPEG live view from the demo daemon (its camera replays the sample fields): parts
    that are JPEGs, a 401 without credentials, a 503 with the reason once both slots are taken
    by two users, a slot back as soon as a phone closes its stream, and one stream per user (a
    user's second stream ends their first instead of taking the other user's slot)."""
    assert requests.get(f"{server.url}/api/live.mjpg", timeout=10).status_code == 401
    who = []
    for name in ("Lena", "Milo", "Nora"):
        r = requests.post(f"{server.url}/api/users", headers=server.headers(), timeout=10,
                          json={"name": name, "role": "technician", "pin": "86420246"})
        who.append({"Authorization": f"Bearer {r.json()['token']}"})
    streams = []
    try:
        for headers in who[:2]:
            r = requests.get(f"{server.url}/api/live.mjpg", headers=headers, stream=True, timeout=10)
            assert r.status_code == 200 and r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=blastscope-frame"
            streams.append(r)
        body = b""
        chunks = streams[0].iter_content(4096)
        while body.count(b"--blastscope-frame") < 4:
            body += next(chunks)
        part = body.split(b"--blastscope-frame\r\n")[2]
        head, _, rest = part.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        assert b"Content-Type: image/jpeg" in head and rest[:2] == b"\xff\xd8" and rest[length - 2:length] == b"\xff\xd9"
        third = requests.get(f"{server.url}/api/live.mjpg", headers=who[2], timeout=10)
        assert third.status_code == 503 and "already open on 2 phone(s)" in third.json()["error"]
        assert requests.get(f"{server.url}/api/status", headers=server.headers(), timeout=10).json()["live_view"]["streams"] == 2
        streams.pop().close()
        deadline = time.monotonic() + 10  # the server notices the closed connection at its next write
        while time.monotonic() < deadline:
            again = requests.get(f"{server.url}/api/live.mjpg", headers=who[2], stream=True, timeout=10)
            if again.status_code == 200:
                streams.append(again)
                break
            again.close()
            time.sleep(0.2)
        assert len(streams) == 2, "the closed stream's slot never came back"
        # Lena reconnects with both slots taken: her new stream replaces her old one
        replaced = requests.get(f"{server.url}/api/live.mjpg", headers=who[0], stream=True, timeout=10)
        assert replaced.status_code == 200
        streams.append(replaced)
    finally:
        for r in streams:
            r.close()
