"""The web page and JSON API (Flask application factory).

People log in with the PIN (session cookie, CSRF token on every state-changing request,
lock-out after repeated failures); scripts send ``Authorization: Bearer <token>``.
Everything the page needs is served from here: no CDN, no external fonts or scripts.
"""

from __future__ import annotations

import secrets
from functools import wraps
from typing import Any, Callable

from flask import Flask, Response, jsonify, redirect, render_template, request, send_file, session, url_for
from werkzeug.exceptions import HTTPException

from edge.auth import Credentials, LockOut, same_secret
from edge.capture import CameraError
from edge.config import ServerConfig
from edge.imagefile import ImageRejected, decode_image
from edge.labels import DISPLAY_NAMES
from edge.result import DISCLAIMER
from edge.service import Service
from edge.store import StoreFull


#: SQLite's largest integer: a larger id in a URL is a plain 404, not an overflow.
MAX_ID = 2**63 - 1


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"error": reason, "status": status}), status


def create_app(service: Service, credentials: Credentials, cfg: ServerConfig) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=credentials.secret_key,
        MAX_CONTENT_LENGTH=int(cfg.max_upload_mb * 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    lockout = LockOut(cfg.lockout_attempts, cfg.lockout_seconds)

    def authenticated() -> str | None:
        """'token', 'session', or None."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and same_secret(header[7:].strip(), credentials.token):
            return "token"
        return "session" if session.get("auth") else None

    def api(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            how = authenticated()
            if how is None:
                return _error(401, "authentication required: log in with the PIN or send 'Authorization: Bearer <token>'")
            if how == "session" and request.method not in ("GET", "HEAD"):
                sent = request.headers.get("X-CSRF-Token", "")
                if not sent or not same_secret(sent, session.get("csrf", "")):
                    return _error(403, "CSRF token missing or wrong: reload the page")
            return view(*args, **kwargs)
        return wrapper

    @app.before_request
    def refuse_while_stopping():
        """After SIGTERM a request on a connection still open gets a clear answer; the server
        (edge/httpserver.py) closes the connection after it (WSGI apps may not set Connection)."""
        if service.stopping.is_set():
            response, status = _error(503, "the device is restarting; try again in a few seconds")
            response.headers["Retry-After"] = "5"
            return response, status
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/") or request.path == "/healthz":
            reason = exc.description if exc.code != 413 else (
                f"upload too large: the limit is {cfg.max_upload_mb:g} MB")
            return _error(exc.code or 500, reason)
        return exc

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull):
        return _error(507, str(exc))

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.get("/healthz")
    def healthz():
        status = service.status()
        return jsonify({"status": status["status"], "backend": status["backend"]["active"]})

    @app.get("/login")
    def login_page():
        session.setdefault("csrf", secrets.token_hex(16))
        return render_template("login.html", csrf=session["csrf"], error=None)

    @app.post("/login")
    def login():
        client = request.remote_addr or "unknown"
        wait = lockout.locked_for(client)
        if wait > 0:
            return render_template("login.html", csrf=session.get("csrf", ""),
                                   error=f"Too many wrong PINs. Try again in {int(wait) + 1} s."), 429
        if not same_secret(request.form.get("csrf", ""), session.get("csrf", "") or "-"):
            session["csrf"] = secrets.token_hex(16)
            return render_template("login.html", csrf=session["csrf"], error="The form expired. Enter the PIN again."), 403
        if not same_secret(request.form.get("pin", ""), credentials.pin):
            lockout.failed(client)
            return render_template("login.html", csrf=session["csrf"], error="Wrong PIN."), 401
        lockout.succeeded(client)
        session.clear()
        session["auth"] = True
        session["csrf"] = secrets.token_hex(16)
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login_page"))

    @app.get("/")
    def index():
        if not session.get("auth"):
            return redirect(url_for("login_page"))
        return render_template("index.html", csrf=session["csrf"], disclaimer=DISCLAIMER, names=DISPLAY_NAMES)

    @app.get("/api/status")
    @api
    def status():
        return jsonify(service.status())

    @app.post("/api/classify")
    @api
    def classify():
        upload = request.files.get("image")
        if upload is None:
            return _error(400, "multipart field 'image' is required")
        try:
            frame = decode_image(upload.read(), cfg.max_pixels)
        except ImageRejected as exc:
            return _error(exc.status, exc.reason)
        return jsonify(service.analyze(frame, source=f"upload:{upload.filename or 'image'}").to_dict())

    @app.post("/api/capture")
    @api
    def capture():
        try:
            return jsonify(service.capture().to_dict())
        except CameraError as exc:
            return _error(503, f"camera unavailable: {exc}")

    @app.get("/api/preview.jpg")
    @api
    def preview():
        try:
            return Response(service.preview_jpeg(), mimetype="image/jpeg", headers={"Cache-Control": "no-store"})
        except CameraError as exc:
            return _error(503, f"camera unavailable: {exc}")

    @app.get("/api/results")
    @api
    def results():
        limit = request.args.get("limit", "20")
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= 500:  # "²".isdigit() is True
            return _error(400, "limit must be a whole number from 1 to 500")
        return jsonify({"results": service.store.recent(int(limit))})

    @app.get(f"/api/results/<int(max={MAX_ID}):result_id>")
    @api
    def result(result_id: int):
        record = service.store.get(result_id)
        return jsonify(record) if record else _error(404, f"no result {result_id}")

    @app.get(f"/api/results/<int(max={MAX_ID}):result_id>/<any(image, overlay):kind>")
    @api
    def result_file(result_id: int, kind: str):
        path = service.store.file_path(result_id, kind)
        if path is None or not path.exists():
            return _error(404, f"no {kind} for result {result_id}")
        return send_file(path, mimetype="image/jpeg", max_age=3600)

    return app
