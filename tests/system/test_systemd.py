"""sd_notify messages on a real unix datagram socket, as systemd would receive them."""

from __future__ import annotations

import socket
import time

from conftest import ServerProcess


def _messages(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(until in m for m in got):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    return got


def test_ready_status_watchdog_and_stopping(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        server = ServerProcess(tmp_path / "state", "--demo",
                               env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        try:
            ready = _messages(sock, "READY=1")
            # a new device is not verified at this site: that is not a fault
            assert any("READY=1" in m and "STATUS=ok: backend cpu, camera ok" in m for m in ready), ready
            pings = _messages(sock, "WATCHDOG=1", timeout=5)
            assert any(m.startswith("WATCHDOG=1") for m in pings), pings
        finally:
            assert server.stop() == 0
        assert any("STOPPING=1" in m for m in _messages(sock, "STOPPING=1", timeout=5))


def test_no_notify_socket_is_a_no_op(monkeypatch):
    from edge.device.notify import notifier, watchdog_interval

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier()("READY=1")  # nothing to send to, nothing raised
    assert watchdog_interval() is None
