"""``python -m tools.hardening``: the figures behind the hardening claims, measured on a real
daemon over loopback (issue 9): peak memory under parallel worst-case uploads, requests
served while half-open connections pile up, and time to stop under load.

The daemon runs as a child process (``serve --demo`` on a temporary state folder and a free
port), so the figures are the daemon's own (``VmHWM`` from ``/proc``), not this command's.
Everything is bounded in count and time, and the child is always stopped.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from edge import SAMPLES_DIR

PIN, TOKEN = "864209", "hardening-figures-token-0123"


def _status_mb(status: str, field: str) -> float:
    """A memory figure of /proc/PID/status, in MB."""
    m = re.search(rf"{field}:\s+(\d+) kB", status)
    if m is None:
        raise RuntimeError(f"/proc status has no {field}")
    return round(int(m.group(1)) / 1024, 1)


class _Daemon:
    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--demo", "--host", "127.0.0.1", "--port", "0",
             "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "BLASTSCOPE_PIN": PIN, "BLASTSCOPE_TOKEN": TOKEN})
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None  # stdout=PIPE
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if m := re.search(r"serving on http://[\d.]+:(\d+)", line):
                self.port = int(m.group(1))
                threading.Thread(target=self._drain_output, daemon=True).start()
                return
        self.proc.kill()
        raise RuntimeError("the daemon did not start:\n" + "".join(self.lines))

    def _drain_output(self) -> None:
        assert self.proc.stdout is not None  # stdout=PIPE
        for line in self.proc.stdout:
            self.lines.append(line)

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return _status_mb(status, "VmHWM")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return _status_mb(status, "VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _post(port: int, path: str, body: bytes, content_type: str, timeout: float = 60) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _get(port: int, path: str, timeout: float = 10) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "blastscopehardening"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _encode(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def worst_case_uploads() -> dict[str, bytes]:
    """The largest images the daemon accepts, and the attacks it must refuse cheaply."""
    rng = np.random.default_rng(0)
    field = Image.open(min(SAMPLES_DIR.glob("*.jpg"))).convert("RGB")
    big_jpeg = field.resize((6000, 4000))  # 24 Mpx: the pixel limit; a real field, upscaled
    strip = np.zeros((732, 16384, 3), dtype=np.uint8)  # 12 Mpx (the PNG limit) at the side limit
    strip[:, :, 0] = np.arange(16384, dtype=np.uint32)[None, :] % 251
    strip[:, :2000] = rng.integers(0, 255, (732, 2000, 3), dtype=np.uint8)
    wide = np.zeros((1464, 16384, 3), dtype=np.uint8)
    return {
        "JPEG 6000x4000 (24 Mpx, accepted)": _encode(big_jpeg, "JPEG", quality=95),
        "PNG 16384x732 (12 Mpx, accepted)": _encode(Image.fromarray(strip), "PNG", compress_level=1),
        "PNG 16384x1464 (24 Mpx, refused: PNG limit)": _encode(Image.fromarray(wide), "PNG"),
        "PNG 1x40,000,000 (refused from its header)": _encode(Image.new("L", (1, 40_000_000)), "PNG"),
    }


def _parallel(n: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, work(k))) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def memory_figures(daemon: _Daemon, parallel: int = 4) -> dict[str, Any]:
    uploads = worst_case_uploads()
    figures: dict[str, Any] = {"idle_rss_mb": daemon.rss_mb(), "cases": []}
    for name, data in uploads.items():
        body, ctype = _multipart("worst.png" if "PNG" in name else "worst.jpg", data)
        start = time.monotonic()
        statuses = _parallel(parallel, lambda _k: _post(daemon.port, "/api/classify", body, ctype))
        figures["cases"].append({"upload": name, "bytes": len(data), "parallel": parallel, "statuses": statuses,
                                 "seconds": round(time.monotonic() - start, 2),
                                 "peak_rss_mb_so_far": daemon.peak_rss_mb()})
    figures["peak_rss_mb"] = daemon.peak_rss_mb()
    return figures


def half_open_figures(daemon: _Daemon, connections: int = 300, seconds: float = 5.0) -> dict[str, Any]:
    """Open ``connections`` sockets that send half a request and stall, then time real requests."""
    stalled = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
        # below the 64 KB a client may send before logging in (edge/device/httpserver.py), so
        # these stall rather than being refused from their headers
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\npartial")
        stalled.append(s)
    served = failed = 0
    latencies = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                ok = _get(daemon.port, "/healthz", timeout=5) == 200 and _get(daemon.port, "/api/status", timeout=5) == 200
            except OSError:
                ok = False
            latencies.append((time.monotonic() - start) * 1000)
            served, failed = served + ok, failed + (not ok)
    finally:
        for s in stalled:
            s.close()
    return {"half_open_connections": connections, "seconds": seconds, "request_pairs_served": served,
            "request_pairs_failed": failed, "p95_ms": round(float(np.percentile(latencies, 95)), 1) if latencies else None}


def _spooled_mb(pid: int) -> float:
    """What the daemon holds in deleted temporary files (waitress spools request bodies to
    unlinked temp files: they take disk space no ``du`` shows)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith("(deleted)"):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total / 1e6


def body_flood_figures(daemon: _Daemon, clients: int = 4, megabytes: int = 15) -> dict[str, Any]:
    """``clients`` connections that never logged in, each sending a ``megabytes`` body (under
    the upload limit): what they get back and the most the daemon spooled meanwhile."""
    statuses: list[int | None] = []
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _spooled_mb(daemon.proc.pid))
            time.sleep(0.02)

    def client(_k: int) -> None:
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
        try:
            s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      + f"Content-Length: {megabytes * 1_000_000}\r\n\r\n".encode())
            chunk = b"\0" * 65536
            try:
                for _ in range(megabytes * 1_000_000 // len(chunk)):
                    s.sendall(chunk)
            except OSError:
                pass  # the daemon answered and closed the connection
            answer = s.recv(200)
            statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None)
        finally:
            s.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    _parallel(clients, client)
    done.set()
    watcher.join()
    return {"clients": clients, "megabytes_each": megabytes, "statuses": sorted(set(s for s in statuses if s)),
            "seconds": round(time.monotonic() - started, 2), "peak_spooled_mb": round(peak[0], 2)}


def _fill(state: Path, results: int) -> None:
    """Make the daemon's record "full": one real analysed field (posted through the API)
    copied by SQL until there are ``results`` rows (the images are shared; exports never read them)."""
    import sqlite3

    db = sqlite3.connect(state / "results.db", timeout=30)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(results)") if r[1] != "id"]
        names = ", ".join(columns)
        while (n := db.execute("SELECT COUNT(*) FROM results").fetchone()[0]) < results:
            db.execute(f"INSERT INTO results({names}) SELECT {names} FROM results ORDER BY id LIMIT ?", (results - n,))
            db.commit()
    finally:
        db.close()


def _download_bytes(port: int, path: str) -> tuple[int, int]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        size = 0
        while chunk := response.read(1 << 16):
            size += len(chunk)
        return response.status, size
    finally:
        conn.close()


def export_figures(daemon: _Daemon, state: Path, results: int = 10000, parallel: int = 4) -> dict[str, Any]:
    """A full record (``results`` fields, the default ``store.max_results``), then ``parallel``
    date-range CSV exports of all of it at once: the daemon's peak RSS over them."""
    sample = next(p for p in sorted(Path(SAMPLES_DIR).glob("*.jpg")))
    body, ctype = _multipart(sample.name, sample.read_bytes())
    assert _post(daemon.port, "/api/classify", body, ctype) == 200
    _fill(state, results)
    idle = daemon.rss_mb()
    start = time.monotonic()
    answers = _parallel(parallel, lambda _k: _download_bytes(daemon.port, "/api/export.csv?from=2000-01-01"))
    return {"results": results, "parallel": parallel, "statuses": sorted({a[0] for a in answers}),
            "megabytes_each": round(answers[0][1] / 1e6, 2), "seconds": round(time.monotonic() - start, 2),
            "rss_before_mb": idle, "peak_rss_mb": daemon.peak_rss_mb()}


def stop_figures(daemon: _Daemon, clients: int = 6) -> dict[str, Any]:
    """SIGTERM while ``clients`` keep-alive clients upload fields; time until the process exits."""
    import requests

    data = min(SAMPLES_DIR.glob("*.jpg")).read_bytes()
    stop = threading.Event()
    answered: list[int] = []

    def client(_k: int) -> None:
        with requests.Session() as session:
            for _ in range(500):
                if stop.is_set():
                    return
                try:
                    r = session.post(f"http://127.0.0.1:{daemon.port}/api/classify", timeout=10,
                                     headers={"Authorization": f"Bearer {TOKEN}"}, files={"image": ("f.jpg", data)})
                    answered.append(r.status_code)
                except requests.RequestException:
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(answered) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        rc = daemon.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    seconds = time.monotonic() - start
    stop.set()
    for t in threads:
        t.join(timeout=15)
    drained = next((line.strip() for line in daemon.lines if "BlastScope stopped" in line), None)
    return {"clients": clients, "answered_before_stop": len(answered), "seconds_to_exit": round(seconds, 2),
            "exit_code": rc, "daemon_says": drained, "status_codes": sorted(set(answered))}


def login_figures() -> list[dict[str, float]]:
    """Time to guess the PIN at the default device-wide login limit (computed, not attacked:
    tests/test_login.py shows the limit holds against cycled source addresses)."""
    from edge.web.auth import LoginGuard
    from edge.device.httpserver import ServerConfig

    cfg = ServerConfig()
    guard = LoginGuard(cfg.lockout_attempts, cfg.lockout_seconds, cfg.login_free_failures, cfg.login_max_delay_seconds)
    return [guard.brute_force_figures(digits) for digits in (6, 8)]


def run(parallel: int = 4, connections: int = 300, seconds: float = 5.0, exports: int = 10000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="blastscope-hardening-") as tmp:
        report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}",
                                  "login": login_figures()}
        daemon = _Daemon(Path(tmp) / "a")
        try:
            report["memory"] = memory_figures(daemon, parallel)
            report["half_open"] = half_open_figures(daemon, connections, seconds)
            report["body_flood"] = body_flood_figures(daemon)
        finally:
            daemon.stop()
        daemon = _Daemon(Path(tmp) / "b")
        try:
            report["stop"] = stop_figures(daemon)
        finally:
            daemon.stop()
        daemon = _Daemon(Path(tmp) / "c")  # a fresh one: peak RSS is a high-water mark
        try:
            report["exports"] = export_figures(daemon, Path(tmp) / "c", exports)
        finally:
            daemon.stop()
    return report


def table(report: dict[str, Any]) -> str:
    m, h, s = report["memory"], report["half_open"], report["stop"]
    lines = [f"machine: {report['machine']}", f"memory: idle RSS {m['idle_rss_mb']} MB; peak RSS {m['peak_rss_mb']} MB "
             f"over all cases (target <= 300 MB)"]
    for case in m["cases"]:
        lines.append(f"  {case['parallel']} x {case['upload']}, {case['bytes'] / 1e6:.1f} MB each: HTTP "
                     f"{sorted(set(case['statuses']))} in {case['seconds']} s; peak RSS so far {case['peak_rss_mb_so_far']} MB")
    lines.append(f"half-open: {h['half_open_connections']} stalled half-sent requests; in {h['seconds']:g} s "
                 f"{h['request_pairs_served']} /healthz + /api/status pairs served, {h['request_pairs_failed']} failed, "
                 f"p95 {h['p95_ms']} ms")
    b = report["body_flood"]
    lines.append(f"body flood: {b['clients']} clients without a login each sending {b['megabytes_each']} MB: HTTP "
                 f"{b['statuses']} in {b['seconds']} s; the daemon spooled at most {b['peak_spooled_mb']} MB")
    for f in report["login"]:
        lines.append(f"login: {f['pin_digits']}-digit PIN at the default limit: {f['guesses_per_day']:g} guesses/day, "
                     f"{f['days_to_50_percent']:g} days to even odds, {f['days_to_search_all']:g} days to search all, "
                     f"{100 * f['chance_within_90_days']:.2f}% within 90 days")
    e = report["exports"]
    lines.append(f"exports: {e['parallel']} parallel date-range CSV exports of a full record ({e['results']} fields, "
                 f"{e['megabytes_each']} MB each): HTTP {e['statuses']} in {e['seconds']} s; RSS {e['rss_before_mb']} MB "
                 f"before, peak {e['peak_rss_mb']} MB")
    lines.append(f"stop: SIGTERM under {s['clients']} keep-alive upload clients: exit code {s['exit_code']} after "
                 f"{s['seconds_to_exit']} s (systemd stops at 20 s); {s['daemon_says']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m tools.hardening", description="measure a demo daemon: peak RSS under "
                                "parallel worst-case uploads, requests served under half-open connections, request bodies "
                                "from clients without a login, time to stop under load")
    p.add_argument("--parallel", type=int, default=4, help="parallel uploads per worst case")
    p.add_argument("--connections", type=int, default=300, help="half-open connections to hold")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to send requests while they are held")
    p.add_argument("--exports", type=int, default=10000, help="fields in the record before the parallel range exports")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = run(parallel=args.parallel, connections=args.connections, seconds=args.seconds, exports=args.exports)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
