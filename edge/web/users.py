"""Named users, each with their own PIN and API token, and a role.

A shared PIN made everyone the same person: the audit log knew only an address and
"reviewer" was free text. Each person now logs in with their name and PIN; reviews,
sign-outs and every audit row carry the name. Roles nest: a technician analyses fields and
works cases, a reviewer also reviews, excludes, signs out and amends, an admin also manages
users. Scripts keep bearer tokens, one per user, acting with that user's role.

Users live in ``users.db`` beside the record. PINs are kept as scrypt hashes (the standard
library's, salted per user) and tokens as SHA-256 hashes: a copied database gives no token
and costs an attacker a hash per guessed PIN. The first admin is made from the device's
first-start credentials (``edge.web.auth``), so a new device is never without one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from edge.web import text as text_rule

DATABASE = "users.db"
ROLES = ("technician", "reviewer", "admin")
#: What each role may do, in words for the 403 a lower role gets.
ROLE_WORDS = {"technician": "analyse fields and work cases", "reviewer": "also review, exclude, sign out and amend",
              "admin": "also manage users"}
FIRST_ADMIN = "admin"
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,40}")
_PIN = re.compile(r"[0-9]{6,12}")
#: scrypt's cost: 16 MiB and tens of milliseconds per PIN checked on a Pi.
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}


class UserError(ValueError):
    """A name, PIN or role that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    active: bool = True

    def may(self, role: str) -> bool:
        """Whether this user has ``role``'s rights (roles nest)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name.strip()) or text_rule.problem(name) is not None:
        raise UserError("a user name is 1 to 40 characters, without control characters, line separators or "
                        "text-direction controls")
    return name.strip()


def check_pin(pin: object) -> str:
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise UserError("a PIN is 6 to 12 digits")
    return pin


def check_role(role: object) -> str:
    if role not in ROLES:
        raise UserError(f"a role is one of {', '.join(ROLES)}")
    return str(role)


def _pin_hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, **_SCRYPT)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, state_dir: Path) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(Path(state_dir) / DATABASE, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        #: Why nobody can log in: users.db is damaged (every signed-in request then answers 503
        #: with this, instead of a 500 with no reason while /healthz said 200).
        self.damaged: str | None = None
        try:
            with self._lock:
                if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("quick_check failed")
                self._db.execute("CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY COLLATE NOCASE, "
                                 "role TEXT NOT NULL, pin_salt BLOB NOT NULL, pin_hash BLOB NOT NULL, "
                                 "token_hash TEXT NOT NULL UNIQUE, active INTEGER NOT NULL, created REAL NOT NULL, "
                                 "changed REAL NOT NULL)")
        except sqlite3.DatabaseError as exc:
            self.damaged = (f"{Path(state_dir) / DATABASE} is damaged ({exc}): nobody can log in. Restore it from a "
                            "backup, or move it aside and restart (the first-start PIN then makes a new admin)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ensure_first_admin(self, pin: str, token: str) -> bool:
        """With no user at all, make ``admin`` from the device's first-start PIN and token
        (``edge.web.auth``); returns whether it did."""
        with self._lock:
            if self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
                return False
            self._insert_locked(FIRST_ADMIN, "admin", pin, token)
            return True

    def add(self, name: str, role: str, pin: str) -> str:
        """A new user; returns their API token, shown once (only its hash is kept)."""
        name, role, pin = check_name(name), check_role(role), check_pin(pin)
        token = secrets.token_urlsafe(24)
        with self._lock:
            try:
                self._insert_locked(name, role, pin, token)
            except sqlite3.IntegrityError:
                raise UserError(f"a user named {name!r} exists already") from None
        return token

    def _insert_locked(self, name: str, role: str, pin: str, token: str) -> None:
        salt, now = secrets.token_bytes(16), time.time()
        self._db.execute("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)",
                         (name, role, salt, _pin_hash(pin, salt), _token_hash(token), 1, now, now))

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._db.execute("SELECT name, role, active FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], row[1], bool(row[2]))

    def all(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, active FROM users ORDER BY name").fetchall()
        return [User(n, r, bool(a)) for n, r, a in rows]

    def login(self, name: str, pin: str) -> User | None:
        """The active user with this name and PIN, or None. A name that does not exist costs the
        same hash as one that does, so timing does not tell which names exist."""
        with self._lock:
            row = self._db.execute("SELECT name, role, active, pin_salt, pin_hash FROM users WHERE name = ?",
                                   (name.strip(),)).fetchone()
        salt, stored = (row[3], row[4]) if row else (b"\0" * 16, b"")
        good = hmac.compare_digest(_pin_hash(pin, salt), stored)
        if row is None or not good or not row[2]:
            return None
        return User(row[0], row[1], True)

    def deactivated(self, name: str, pin: str) -> bool:
        """Whether ``name`` is a deactivated user and ``pin`` their right PIN (so the page may say
        so: someone without the PIN learns nothing of who exists or is deactivated)."""
        with self._lock:
            row = self._db.execute("SELECT active, pin_salt, pin_hash FROM users WHERE name = ?",
                                   (name.strip(),)).fetchone()
        return row is not None and not row[0] and hmac.compare_digest(_pin_hash(pin, row[1]), row[2])

    def by_token(self, token: str) -> User | None:
        if not token:
            return None
        with self._lock:
            row = self._db.execute("SELECT name, role, active FROM users WHERE token_hash = ?",
                                   (_token_hash(token),)).fetchone()
        return None if row is None or not row[2] else User(row[0], row[1], True)

    def change(self, name: str, role: str | None = None, pin: str | None = None, active: bool | None = None,
               new_token: bool = False) -> str | None:
        """Change a user's role, PIN or whether they may log in; returns a new token when asked.
        The last active admin cannot lose the role or be deactivated: someone must manage users."""
        name = check_name(name)
        role = None if role is None else check_role(role)
        pin = None if pin is None else check_pin(pin)
        token = secrets.token_urlsafe(24) if new_token else None
        with self._lock:
            row = self._db.execute("SELECT name, role, active FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UserError(f"no user named {name!r}")
            losing_admin = row[1] == "admin" and row[2] and ((role is not None and role != "admin") or active is False)
            if losing_admin and self._db.execute(
                    "SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1").fetchone()[0] <= 1:
                raise UserError(f"{row[0]} is the last active admin: make another admin first")
            now = time.time()
            if role is not None:
                self._db.execute("UPDATE users SET role = ?, changed = ? WHERE name = ?", (role, now, name))
            if pin is not None:
                salt = secrets.token_bytes(16)
                self._db.execute("UPDATE users SET pin_salt = ?, pin_hash = ?, changed = ? WHERE name = ?",
                                 (salt, _pin_hash(pin, salt), now, name))
            if active is not None:
                self._db.execute("UPDATE users SET active = ?, changed = ? WHERE name = ?", (int(active), now, name))
            if token is not None:
                self._db.execute("UPDATE users SET token_hash = ?, changed = ? WHERE name = ?",
                                 (_token_hash(token), now, name))
        return token

    def session_check(self, name: str) -> tuple[User | None, float | None]:
        """The user and when they last changed, in one query: every request of a logged-in
        phone asks both."""
        with self._lock:
            row = self._db.execute("SELECT name, role, active, changed FROM users WHERE name = ?", (name,)).fetchone()
        return (None, None) if row is None else (User(row[0], row[1], bool(row[2])), float(row[3]))

