"""Who may use the page and the API: a PIN for people, a bearer token for scripts.

When the configuration and the environment set neither, both are generated at first
start, kept in the state directory with mode 0600 and printed once, so a new device is
never open on the clinic network and never needs a keyboard to set up.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CREDENTIALS = "credentials"


@dataclass(frozen=True)
class Credentials:
    pin: str
    token: str
    secret_key: str  # signs the session cookie
    generated: tuple[str, ...]  # which of pin/token were generated on this start


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if value:
            out[key.strip()] = value.strip()
    return out


def load_credentials(state_dir: Path, pin: str = "", token: str = "") -> Credentials:
    """Configured values win; otherwise the stored ones; otherwise new ones, stored 0600."""
    path = Path(state_dir) / CREDENTIALS
    stored = _read(path)
    generated = []
    if not pin and "pin" not in stored:
        stored["pin"] = f"{secrets.randbelow(10**6):06d}"
        generated.append("pin")
    if not token and "token" not in stored:
        stored["token"] = secrets.token_urlsafe(24)
        generated.append("token")
    stored.setdefault("secret_key", secrets.token_hex(32))
    if generated or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in stored.items()))
        os.replace(path.with_suffix(".tmp"), path)
    os.chmod(path, 0o600)
    return Credentials(pin or stored["pin"], token or stored["token"], stored["secret_key"], tuple(generated))


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class LockOut:
    """Counts failed PIN attempts per client; after ``attempts`` failures the client is
    locked out for ``seconds``. A success clears the count."""

    def __init__(self, attempts: int, seconds: float) -> None:
        self.attempts, self.seconds = attempts, seconds
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked_for(self, client: str) -> float:
        """Seconds left in the client's lock-out (0 when not locked)."""
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if time.monotonic() - t < self.seconds]
            self._failures[client] = recent
            if len(recent) >= self.attempts:
                return self.seconds - (time.monotonic() - recent[-1])
            return 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
