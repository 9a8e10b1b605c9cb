"""The web page and JSON API (Flask application factory).

People log in with the PIN (a server-side session whose id is in the cookie, CSRF token on
every state-changing request including logout, per-client and device-wide limits on wrong
PINs, each failure logged and audited); scripts send ``Authorization: Bearer <token>``.
Everything the page needs is served from here: no CDN, no external fonts or scripts.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from functools import wraps
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable

from flask import Flask, Response, jsonify, redirect, render_template, request, send_file, session, url_for
from itsdangerous import BadSignature
from werkzeug.exceptions import HTTPException

from edge.web.auth import Credentials, LoginGuard, same_secret
from edge.device.capture import CameraError
from edge.device.httpserver import ServerConfig
from edge.analysis.imagefile import ImageRejected
from edge.analysis.labels import DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.device.service import Service
from edge.web.sessions import Sessions, pin_fingerprint
from edge.record.store import Locked, Stale, StoreFull
from edge.web.cases import make_blueprint
from edge.web.common import MAX_ID, Refused, client, json_error as _error, uploaded_frame, whole_number

log = logging.getLogger("blastscope")


def create_app(service: Service, credentials: Credentials, cfg: ServerConfig) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=credentials.secret_key,
        MAX_CONTENT_LENGTH=int(cfg.max_upload_mb * 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
    )
    guard = LoginGuard(cfg.lockout_attempts, cfg.lockout_seconds, cfg.login_free_failures, cfg.login_max_delay_seconds)
    sessions = Sessions(service.config.state_dir, pin_fingerprint(credentials.secret_key, credentials.pin),
                        cfg.session_hours * 3600)

    def audit(action: str, after: Any = None) -> None:
        """Security events go to the append-only audit log; a full disk must not block a login."""
        try:
            service.store.audit(request.remote_addr or "unknown", action, after=after)
        except Exception as exc:  # noqa: BLE001 - logged instead; the journal still has it
            log.error("audit of %s failed: %s", action, exc)

    def current_session():
        return sessions.lookup(session.get("sid"))

    cookie_reader = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]

    def body_gate(headers: dict[str, str]) -> bool:
        """Whether a request may send a large body, from its headers alone (the server asks
        before reading it, edge/device/httpserver.py): the API token, or a live session."""
        auth = headers.get("AUTHORIZATION", "")
        if auth.startswith("Bearer ") and same_secret(auth[7:].strip(), credentials.token):
            return True
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("COOKIE", ""))
            data = cookie_reader.loads(jar[app.config["SESSION_COOKIE_NAME"]].value)
        except (KeyError, CookieError, BadSignature):
            return False
        return isinstance(data, dict) and sessions.lookup(data.get("sid")) is not None

    app.extensions["blastscope.body_gate"] = body_gate

    def api(view: Callable[..., Any]) -> Callable[..., Any]:
        """A route for scripts (bearer token) or a logged-in page (session, CSRF on changes)."""
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            if not (header.startswith("Bearer ") and same_secret(header[7:].strip(), credentials.token)):
                record = current_session()
                if record is None:
                    return _error(401, "authentication required: log in with the PIN or send 'Authorization: Bearer <token>'")
                if request.method not in ("GET", "HEAD"):
                    sent = request.headers.get("X-CSRF-Token", "")
                    if not sent or not same_secret(sent, record.csrf):
                        return _error(403, "CSRF token missing or wrong: reload the page")
            return view(*args, **kwargs)
        return wrapper

    @app.before_request
    def refuse_while_stopping():
        """After SIGTERM a request on a connection still open gets a clear answer; the server
        (edge/device/httpserver.py) closes the connection after it (WSGI apps may not set Connection)."""
        if service.stopping.is_set():
            response, status = _error(503, "the device is restarting; try again in a few seconds")
            response.headers["Retry-After"] = "5"
            return response, status
        return None

    @app.after_request
    def security_headers(response: Response) -> Response:
        """Everything the page needs comes from the device: no script, style or frame from
        elsewhere, no inline script, no framing by another site, no MIME sniffing, and no
        case URL leaked in a Referer."""
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                                    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/") or request.path == "/healthz":
            reason = (exc.description or exc.name) if exc.code != 413 else (
                f"upload too large: the limit is {cfg.max_upload_mb:g} MB")
            return _error(exc.code or 500, reason)
        return exc

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull):
        return _error(507, str(exc))

    @app.errorhandler(Stale)
    @app.errorhandler(Locked)
    def conflict(exc: Stale | Locked):
        return _error(409, str(exc))

    @app.errorhandler(Refused)
    @app.errorhandler(ImageRejected)
    def refused(exc: Refused | ImageRejected):
        return _error(exc.status, exc.reason)

    @app.errorhandler(CameraError)
    def camera_unavailable(exc: CameraError):
        return _error(503, f"camera unavailable: {exc}")

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

    def login_refused(wait: float):
        seconds = int(wait) + 1
        page = render_template("login.html", csrf=session.get("csrf", ""), wait=seconds,
                               error=f"Too many wrong PINs. Try again in {seconds} s.")
        return page, 429, {"Retry-After": str(seconds)}

    @app.post("/login")
    def login():
        client = request.remote_addr or "unknown"
        if not same_secret(request.form.get("csrf", ""), session.get("csrf", "") or "-"):
            session["csrf"] = secrets.token_hex(16)
            return render_template("login.html", csrf=session["csrf"], error="The form expired. Enter the PIN again."), 403
        wait = guard.begin(client)
        if wait > 0:
            return login_refused(wait)
        if not same_secret(request.form.get("pin", ""), credentials.pin):
            failures = guard.failed(client)
            log.warning("wrong PIN from %s (%d wrong PINs on this device in 24 h)", client, failures)
            audit("login_failed", {"device_failures_24h": failures})
            next_wait = guard.delay_after(failures)
            error = "Wrong PIN." + (f" The next attempt is possible in {int(next_wait)} s." if next_wait >= 1 else "")
            return render_template("login.html", csrf=session["csrf"], error=error,
                                   wait=int(next_wait) if next_wait >= 1 else None), 401
        guard.succeeded(client)
        session_id, _ = sessions.create()
        session.clear()
        session.permanent = True
        session["sid"] = session_id
        audit("login")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout():
        record = current_session()
        if not same_secret(request.form.get("csrf", ""), record.csrf if record else "-"):
            return _error(403, "CSRF token missing or wrong: reload the page")
        sessions.revoke(session.get("sid"))
        audit("logout")
        session.clear()
        return redirect(url_for("login_page"))

    @app.get("/")
    def index():
        record = current_session()
        if record is None:
            return redirect(url_for("login_page"))
        return render_template("index.html", csrf=record.csrf, disclaimer=DISCLAIMER, names=DISPLAY_NAMES)

    @app.get("/api/status")
    @api
    def status():
        return jsonify(service.status())

    @app.get("/metrics")
    @api
    def metrics():
        """Prometheus text format; scrape with the API token (``authorization`` in the scrape config)."""
        from edge.device.metrics import CONTENT_TYPE, render

        return Response(render(service), mimetype=None, content_type=CONTENT_TYPE)

    # Without a case in the URL a field goes into no case, whatever another phone has open:
    # the page names its case (/api/cases/<id>/classify) on every analysis.
    @app.post("/api/classify")
    @api
    def classify():
        frame, source = uploaded_frame(cfg.max_pixels)
        return jsonify({**service.analyze(frame, source=source, client=client()).to_dict(), "case_id": None})

    @app.post("/api/capture")
    @api
    def capture():
        return jsonify({**service.capture(client=client()).to_dict(), "case_id": None})

    @app.get("/api/preview.jpg")
    @api
    def preview():
        return Response(service.preview_jpeg(), mimetype="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/results")
    @api
    def results():
        return jsonify({"results": service.store.recent(whole_number("limit", 20, 1, 500))})

    @app.get("/api/audit")
    @api
    def audit_log():
        return jsonify({"audit": service.store.audit_log(whole_number("limit", 100, 1, 1000))})

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

    app.register_blueprint(make_blueprint(service, api))
    return app
