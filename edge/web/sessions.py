"""Logged-in sessions, kept on the device so that they can be ended.

A signed cookie alone cannot be revoked: a cookie copied before logout kept working for 31
days. The cookie now carries only a random session id. The device keeps, in
``sessions.db`` beside the record, the id's hash (a stolen database reveals no usable id),
when it ends, its CSRF token and a fingerprint of the PIN it was opened with. Logout
deletes the row; a PIN change ends every session opened with the old PIN; every session
ends after ``server.session_hours`` whatever happens. A clock set backwards (an offline Pi
has no RTC) ends sessions rather than stretching them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DATABASE = "sessions.db"
log = logging.getLogger("blastscope.sessions")


def pin_fingerprint(secret_key: str, pin: str) -> str:
    return hmac.new(secret_key.encode(), pin.encode(), hashlib.sha256).hexdigest()[:32]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: float
    user: str = ""  # who logged in (``edge.web.users``)
    created: float = 0.0


class Sessions:
    def __init__(self, state_dir: Path, fingerprint: str, lifetime_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.fingerprint, self.lifetime_s, self.clock = fingerprint, lifetime_s, clock
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._open(Path(state_dir))
        except sqlite3.DatabaseError as exc:
            # sessions are disposable (everyone logs in again): a damaged file must not stop the
            # daemon from starting (it did: a restart loop), so it is set aside and made anew
            log.warning("%s unreadable (%s): set aside, a new one made; every user logs in again", DATABASE, exc)
            if getattr(self, "_db", None) is not None:
                self._db.close()
            os.replace(Path(state_dir) / DATABASE, Path(state_dir) / f"{DATABASE}.damaged-{int(time.time())}")
            self._open(Path(state_dir))

    def _open(self, state_dir: Path) -> None:
        self._db = sqlite3.connect(state_dir / DATABASE, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS sessions (id_hash TEXT PRIMARY KEY, created REAL NOT NULL, "
                             "expires REAL NOT NULL, csrf TEXT NOT NULL, pin TEXT NOT NULL)")
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(sessions)")]
            if "user" not in columns:  # sessions.db from before named users: those sessions end
                self._db.execute("DELETE FROM sessions")
                self._db.execute("ALTER TABLE sessions ADD COLUMN user TEXT NOT NULL DEFAULT ''")
            # a PIN change (new config) ends every session opened with the old PIN
            self._db.execute("DELETE FROM sessions WHERE pin != ? OR expires <= ?", (self.fingerprint, self.clock()))

    def create(self, user: str) -> tuple[str, Session]:
        """A new session of ``user``: (the id for the cookie, its record)."""
        session_id, now = secrets.token_urlsafe(32), self.clock()
        record = Session(csrf=secrets.token_hex(16), expires=now + self.lifetime_s, user=user, created=now)
        with self._lock:
            self._db.execute("INSERT INTO sessions(id_hash, created, expires, csrf, pin, user) VALUES (?,?,?,?,?,?)",
                             (_hash(session_id), now, record.expires, record.csrf, self.fingerprint, user))
        return session_id, record

    def lookup(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, ended, expired, or opened with
        another PIN, or created 'in the future' because the clock went back)."""
        if not session_id or not isinstance(session_id, str):
            return None
        now = self.clock()
        with self._lock:
            row = self._db.execute("SELECT created, expires, csrf, pin, user FROM sessions WHERE id_hash = ?",
                                   (_hash(session_id),)).fetchone()
            if row is None:
                return None
            created, expires, csrf, pin, user = row
            if pin != self.fingerprint or now >= expires or created > now + 60:
                self._db.execute("DELETE FROM sessions WHERE id_hash = ?", (_hash(session_id),))
                return None
        return Session(csrf=csrf, expires=expires, user=user, created=created)

    def revoke(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE id_hash = ?", (_hash(str(session_id)),)).rowcount > 0

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions WHERE expires > ?", (self.clock(),)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
