"""Guessing the PIN and replaying sessions (issue 9, items 12-13), against a real daemon over
loopback. Source addresses are cycled through 127.0.0.0/8 the way the attack cycled 49."""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse

import requests

from edge.web.auth import LoginGuard

from conftest import PIN, ServerProcess, wait_for


def _config(tmp_path, **server) -> str:
    path = tmp_path / "login.toml"
    path.write_text("[server]\n" + "".join(f"{k} = {v}\n" for k, v in server.items()))
    return str(path)


def _csrf_and_cookie(url: str, source: str) -> tuple[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10, source_address=(source, 0))
    conn.request("GET", "/login")
    r = conn.getresponse()
    body = r.read().decode()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    conn.close()
    return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1), cookie


def _guess(url: str, source: str, pin: str) -> tuple[int, str]:
    csrf, cookie = _csrf_and_cookie(url, source)
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10, source_address=(source, 0))
    conn.request("POST", "/login", urllib.parse.urlencode({"name": "admin", "pin": pin, "csrf": csrf}),
                 {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, body


def test_cycling_source_addresses_meets_the_device_wide_limit(tmp_path):
    srv = ServerProcess(tmp_path / "state", "--demo", "--config",
                        _config(tmp_path, login_free_failures=3, login_max_delay_seconds=4))
    try:
        outcomes: list[int] = []
        lock = threading.Lock()
        deadline = time.monotonic() + 6.0

        def attacker(k: int) -> None:
            n = 0
            while time.monotonic() < deadline and n < 200:  # bounded in time and count
                status, _ = _guess(srv.url, f"127.0.{k}.{n % 250 + 2}", f"{(k * 1000 + n) % 10**6:06d}")
                with lock:
                    outcomes.append(status)
                n += 1

        threads = [threading.Thread(target=attacker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        checked = outcomes.count(401)
        # 3 free, then 1 s, 2 s, 4 s apart: at most 3 + 3 PINs checked in 6 s, whatever the address
        assert 3 <= checked <= 7, outcomes
        assert outcomes.count(429) >= 20 and set(outcomes) <= {401, 429}
        # the right PIN from a fresh address is refused too while the device-wide wait runs
        status, body = _guess(srv.url, "127.0.9.9", PIN)
        assert status == 429 and "Try again in" in body and 'data-wait="' in body

        audit = requests.get(srv.url + "/api/audit?limit=1000", headers=srv.headers(), timeout=10).json()["audit"]
        failed = [a for a in audit if a["action"] == "login_failed"]
        assert len(failed) == checked and all(a["client"].startswith("127.0.") for a in failed)
        assert failed[0]["after"]["device_failures_24h"] == checked
        srv.stop()
        assert "".join(srv.output).count("wrong name or PIN for 'admin' from 127.0.") == checked
    finally:
        srv.stop()


def test_the_wait_ends_and_the_right_pin_then_works(tmp_path):
    srv = ServerProcess(tmp_path / "state", "--demo", "--config",
                        _config(tmp_path, login_free_failures=1, login_max_delay_seconds=1))
    try:
        assert _guess(srv.url, "127.0.1.2", "000000")[0] == 401
        status, body = _guess(srv.url, "127.0.1.3", "000001")
        assert status in (401, 429)
        time.sleep(2.2)
        assert _guess(srv.url, "127.0.1.4", PIN)[0] == 302
    finally:
        srv.stop()


def _log_in(srv: ServerProcess) -> tuple[requests.Session, str]:
    browser = requests.Session()
    html = browser.get(srv.url + "/login", timeout=10).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
    assert browser.post(srv.url + "/login", data={"name": "admin", "pin": PIN, "csrf": csrf}, allow_redirects=False,
                        timeout=10).status_code == 302
    page = browser.get(srv.url + "/", timeout=10).text
    return browser, re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)


def _replay(srv: ServerProcess, cookies) -> int:
    return requests.get(srv.url + "/api/status", cookies=cookies, timeout=10).status_code


def test_logout_revokes_a_replayed_cookie_and_needs_csrf(tmp_path):
    srv = ServerProcess(tmp_path / "state", "--demo")
    try:
        browser, csrf = _log_in(srv)
        stolen = browser.cookies.copy()
        assert _replay(srv, stolen) == 200
        r = browser.post(srv.url + "/logout", data={}, allow_redirects=False, timeout=10)
        assert r.status_code == 403 and _replay(srv, stolen) == 200  # no CSRF: not logged out
        r = browser.post(srv.url + "/logout", data={"csrf": csrf}, allow_redirects=False, timeout=10)
        assert r.status_code == 302
        assert _replay(srv, stolen) == 401
        assert requests.get(srv.url + "/", cookies=stolen, allow_redirects=False, timeout=10).status_code == 302
        actions = [a["action"] for a in requests.get(srv.url + "/api/audit", headers=srv.headers(),
                                                     timeout=10).json()["audit"]]
        assert actions[:2] == ["logout", "login"]
    finally:
        srv.stop()


def test_a_pin_change_ends_sessions_and_sessions_expire(tmp_path):
    state = tmp_path / "state"
    srv = ServerProcess(state, "--demo")
    browser, _ = _log_in(srv)
    cookies = browser.cookies.copy()
    assert srv.stop() == 0
    srv = ServerProcess(state, "--demo")  # same PIN: a restart keeps the clinician logged in
    try:
        assert _replay(srv, cookies) == 200
    finally:
        srv.stop()
    srv = ServerProcess(state, "--demo", env={"BLASTSCOPE_PIN": "13572468"})
    try:
        assert _replay(srv, cookies) == 401
    finally:
        srv.stop()

    srv = ServerProcess(tmp_path / "short", "--demo", "--config", _config(tmp_path, session_hours=0.0005))  # 1.8 s
    try:
        browser, _ = _log_in(srv)
        assert _replay(srv, browser.cookies) == 200
        assert wait_for(lambda: _replay(srv, browser.cookies) == 401, timeout=6)
    finally:
        srv.stop()


def test_parallel_attempts_cannot_slip_through_a_device_wide_wait():
    now = [1000.0]
    guard = LoginGuard(attempts=5, seconds=300, free=2, max_delay=60, clock=lambda: now[0])
    for k in range(2):
        assert guard.begin(f"a{k}") == 0
        guard.failed(f"a{k}")
    assert guard.begin("a2") == 1.0  # the 2nd failure reserved 1 s
    now[0] += 1.0
    results: list[float] = []
    barrier = threading.Barrier(16)

    def attempt(k: int) -> None:
        barrier.wait()
        results.append(guard.begin(f"b{k}"))

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(0.0) == 1 and sorted(results)[1:] == [2.0] * 15  # the next wait: 2 s


def test_brute_force_figures_for_the_default_limits():
    guard = LoginGuard(attempts=5, seconds=300, free=10, max_delay=120)
    six = guard.brute_force_figures(6)
    assert six["guesses_per_day"] == 730.0 and six["days_to_50_percent"] > 600 and six["days_to_search_all"] > 1300
