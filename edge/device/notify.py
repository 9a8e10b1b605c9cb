"""systemd integration: READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 via sd_notify.

Uses systemd-python's ``daemon.notify`` where it is installed (the service's virtual
environment on the Pi). Where it is not, the same datagram is sent directly: the
protocol is one line of text to the unix socket named in ``$NOTIFY_SOCKET``.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Callable


def _raw_notify(message: str) -> None:
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def notifier() -> Callable[[str], None]:
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda message: None
    try:
        from systemd import daemon  # type: ignore[import-not-found]

        return lambda message: daemon.notify(message)
    except ImportError:
        return _raw_notify


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asked for, in seconds (None: no watchdog)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings WATCHDOG=1 (and refreshes STATUS=) only while ``healthy()`` says the pipeline
    makes progress (the daemon passes ``Service.stalled``), so systemd restarts a daemon whose
    inference hangs or whose camera thread died, not one that is merely degraded."""

    def __init__(self, notify: Callable[[str], None], interval: float, healthy: Callable[[], bool],
                 status: Callable[[], str]) -> None:
        self.notify, self.interval, self.healthy, self.status = notify, interval, healthy, status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.healthy():
                self.notify(f"WATCHDOG=1\nSTATUS={self.status()}")
