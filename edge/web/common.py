"""What the page's routes share: JSON errors, the one way a request is refused, and reading
the parameters and uploads every route checks the same way."""

from __future__ import annotations


import numpy as np
from flask import Response, g, jsonify, request, session

from edge.analysis.imagefile import decode_image
from edge.web import text as text_rule
from edge.web.users import User

#: SQLite's largest integer: a larger id in a URL is a plain 404, not an overflow.
MAX_ID = 2**63 - 1


class Refused(Exception):
    """A request the API answers with ``status`` and ``reason`` (a 4xx), raised anywhere in a
    route and turned into JSON by the app's error handler."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def json_error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"error": reason, "status": status}), status


def whole_number(name: str, default: int, low: int, high: int) -> int:
    """A query parameter that must be a plain whole number in [low, high] ("²".isdigit() is True)."""
    text = request.args.get(name, str(default))
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise Refused(400, f"{name} must be a whole number from {low} to {high}")
    return int(text)


def uploaded_frame(max_pixels: int) -> tuple[np.ndarray, str]:
    """The decoded multipart ``image`` and its source label; ``ImageRejected`` says why not."""
    upload = request.files.get("image")
    if upload is None:
        raise Refused(400, "multipart field 'image' is required")
    # a file name is only a label: what the text rule refuses is dropped, and it is capped
    name = text_rule.scrubbed(upload.filename or "", text_rule.MAX_FILE_NAME).strip() or "image"
    return decode_image(upload.read(), max_pixels), f"upload:{name}"


def current_user() -> User:
    """Who made this request (set by the app's ``api`` check before any route runs)."""
    user = g.get("user")
    if not isinstance(user, User):
        raise Refused(401, "authentication required: log in with your name and PIN or send 'Authorization: Bearer <token>'")
    return user


def client() -> str:
    """Who made the request, for the audit log: the user's name and the address."""
    address = request.remote_addr or "unknown"
    user = g.get("user")
    return f"{user.name} ({address})" if isinstance(user, User) else address


#: The key in a phone's session cookie for the case that phone has open. It is per phone
#: (per login), never per device: two phones on one device each work their own patient.
OPEN_CASE = "case_id"


def open_case() -> int | None:
    """The case this phone has open, or None (a script with a bearer token has none)."""
    value = session.get(OPEN_CASE)
    return value if isinstance(value, int) else None


def set_open_case(case_id: int | None) -> None:
    """Open ``case_id`` on this phone only; a bearer-token request has no session to keep it."""
    if "sid" not in session:
        return
    if case_id is None:
        session.pop(OPEN_CASE, None)
    else:
        session[OPEN_CASE] = case_id


def clean_text(name: str, value: object, limit: int, required: bool = False) -> str:
    """A text field from a request, checked at the boundary: a string of at most ``limit``
    characters, no control characters (tab excepted) and no unpaired UTF-16 surrogates.
    A lone surrogate (``"\\ud800"`` in JSON) stored once broke every report and export
    of its case: it cannot be encoded as UTF-8."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Refused(400, f"{name} must be text")
    text = value.strip()
    if (why := text_rule.problem(text)) is not None:
        raise Refused(400, f"{name} contains {why}")
    if len(text) > limit:
        raise Refused(400, f"{name}: at most {limit} characters (got {len(text)})")
    if required and not text:
        raise Refused(400, f"{name} is required")
    return text
