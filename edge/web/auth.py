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
from typing import Callable

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
            f.flush()
            os.fsync(f.fileno())  # a power cut must not leave a new PIN the technician was never shown
        os.replace(path.with_suffix(".tmp"), path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    os.chmod(path, 0o600)
    return Credentials(pin or stored["pin"], token or stored["token"], stored["secret_key"], tuple(generated))


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class LoginGuard:
    """Limits on guessing PINs: per client, per user, for the whole device, and apart for
    trusted devices.

    Per user name on each client, and per user name: after ``attempts`` failures within
    ``seconds`` that name waits out the rest of ``seconds``, on that phone or anywhere. One
    user's wrong PINs never lock another user out of a shared phone (they did when the limit
    was per client: a technician's typos locked the phone for the clinician). Device-wide, because an
    attacker can cycle source addresses (a per-address limit alone falls to many addresses in
    seconds; docs/security.md has the measurement): after
    ``free`` failures within the last 24 h, each further attempt must wait 1, 2, 4 ... seconds
    after the previous one, up to ``max_delay``. An attempt reserves its delay before the PIN
    is checked, so parallel requests cannot slip through together.

    That device-wide limit locked clinicians out while an attack lasted. A phone that has
    logged a user in before carries a signed device cookie for that user (OWASP's device
    cookie scheme, ``edge.web``): its attempts for that user skip the per-user and
    device-wide limits and count only against that cookie, so an attacker without one cannot
    lock the clinic out. Failures are kept in memory: a restart forgets them, and only a
    restart the attacker cannot cause (power, systemd) does that.
    """

    WINDOW_S = 24 * 3600.0

    def __init__(self, attempts: int, seconds: float, free: int, max_delay: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.seconds, self.free, self.max_delay, self.clock = attempts, seconds, free, max_delay, clock
        self._client_failures: dict[str, list[float]] = {}
        self._device_failures: list[float] = []
        self._next_allowed = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _on(client: str, user: str) -> str:
        """The key of one user name on one client."""
        return f"{client}|user:{user.lower()}"

    def delay_after(self, failures: int) -> float:
        """Device-wide wait after the ``failures``-th failure in the window."""
        return 0.0 if failures < self.free else float(min(2.0 ** (failures - self.free), self.max_delay))

    def _prune(self, now: float) -> None:
        self._device_failures = [t for t in self._device_failures if now - t < self.WINDOW_S]

    def _wait_locked(self, key: str, now: float) -> float:
        recent = [t for t in self._client_failures.get(key, []) if now - t < self.seconds]
        self._client_failures[key] = recent
        return self.seconds - (now - recent[-1]) if len(recent) >= self.attempts else 0.0

    def standing(self, client: str, user: str = "", device: str | None = None) -> tuple[float, int]:
        """(seconds this client and name must still wait, wrong PINs left before they must),
        without reserving an attempt: what the login page warns of before a lockout and shows
        on a fresh page while one lasts."""
        with self._lock:
            now = self.clock()
            keys = [f"device:{device}"] if device is not None else [self._on(client, user), f"user:{user.lower()}"]
            wait = max(self._wait_locked(key, now) for key in keys)
            left = min(self.attempts - len(self._client_failures.get(key, [])) for key in keys)
            return wait, max(left, 0)

    def begin(self, client: str, user: str = "", device: str | None = None) -> float:
        """Seconds to wait before this attempt (0: go ahead, delay reserved). ``device`` is the
        id of a valid trusted-device cookie for ``user``, or None."""
        with self._lock:
            now = self.clock()
            if device is not None:
                return self._wait_locked(f"device:{device}", now)
            wait = max(self._wait_locked(self._on(client, user), now), self._wait_locked(f"user:{user.lower()}", now))
            if wait > 0:
                return wait
            if now < self._next_allowed:
                return self._next_allowed - now
            self._prune(now)
            self._next_allowed = now + self.delay_after(len(self._device_failures) + 1)
            return 0.0

    def failed(self, client: str, user: str = "", device: str | None = None) -> int:
        """Record a wrong PIN; returns the device-wide failures in the last 24 h (a trusted
        device's failures count against that device only)."""
        with self._lock:
            now = self.clock()
            if device is not None:
                self._client_failures.setdefault(f"device:{device}", []).append(now)
                self._prune(now)
                return len(self._device_failures)
            self._client_failures.setdefault(self._on(client, user), []).append(now)
            self._client_failures.setdefault(f"user:{user.lower()}", []).append(now)
            self._device_failures.append(now)
            self._prune(now)
            return len(self._device_failures)

    def succeeded(self, client: str, user: str = "", device: str | None = None) -> None:
        with self._lock:
            self._client_failures.pop(self._on(client, user), None)
            if device is not None:  # an attacker's failures on this name stand: only this phone is cleared
                self._client_failures.pop(f"device:{device}", None)
            else:
                self._client_failures.pop(f"user:{user.lower()}", None)
                self._next_allowed = min(self._next_allowed, self.clock())  # release this attempt's reservation

    def brute_force_figures(self, digits: int) -> dict[str, float]:
        """How long guessing a ``digits``-digit PIN takes at the device-wide limit (per-client
        limits ignored: the attacker has many addresses)."""
        per_day = self.WINDOW_S / self.max_delay + self.free
        space = 10 ** digits
        return {"pin_digits": digits, "guesses_per_day": round(per_day, 1),
                "days_to_50_percent": round(space / 2 / per_day, 1), "days_to_search_all": round(space / per_day, 1),
                "chance_within_90_days": round(min(1.0, 90 * per_day / space), 4)}
