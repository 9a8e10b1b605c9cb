"""The web page and JSON API (Flask application factory).

People log in with their name and PIN (``edge.web.users``: a server-side session whose id is
in the cookie, CSRF token on every state-changing request including logout, limits on wrong
PINs per client, per user and device-wide with trusted phones apart, each failure logged and
audited); scripts send ``Authorization: Bearer <token>``, one token per user. Every request
runs as a user with a role (each route's level in the one table of ``edge.web.access``).
Everything the page needs is served from here: no CDN, no external fonts or scripts.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from http.cookies import CookieError, SimpleCookie
from typing import Any

from flask import Flask, Response, g, jsonify, redirect, render_template, request, send_file, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from edge.web.auth import Credentials, LoginGuard, same_secret
from edge.device.capture import CameraError
from edge.device.httpserver import ServerConfig
from edge.device.live import BOUNDARY, LiveBusy
from edge.analysis.labels import CELL_NAMES, DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.device.service import Service
from edge.web.sessions import Sessions, pin_fingerprint
from edge.web import clock_routes, errors, reports, user_routes, verification
from edge.web.cases import make_blueprint
from edge.web import wording
from edge.web import access
from edge.web.common import MAX_ID, Refused, client, json_error as _error, uploaded_frame, whole_number
from edge.web.users import ROLE_WORDS, ROLES, User, UserError, Users, check_name

#: The trusted-device cookie (``LoginGuard``): which user this phone logged in before.
DEVICE_COOKIE = "blastscope_device"
DEVICE_DAYS = 180
#: The users a phone remembers (a ward phone's staff); the oldest is forgotten past it.
MAX_DEVICE_USERS = 30

log = logging.getLogger("blastscope")


def create_app(service: Service, credentials: Credentials, cfg: ServerConfig) -> Flask:
    app = Flask(__name__)
    wording.register(app)
    app.config.update(
        SECRET_KEY=credentials.secret_key,
        MAX_CONTENT_LENGTH=int(cfg.max_upload_mb * 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
    )
    guard = LoginGuard(cfg.lockout_attempts, cfg.lockout_seconds, cfg.login_free_failures, cfg.login_max_delay_seconds)
    app.extensions["blastscope.login_guard"] = guard  # a second admin's PIN (verification) obeys the same limits
    sessions = Sessions(service.config.state_dir, pin_fingerprint(credentials.secret_key, credentials.pin),
                        cfg.session_hours * 3600)
    users = Users(service.config.state_dir)
    if users.damaged is None:
        users.ensure_first_admin(credentials.pin, credentials.token)
    else:
        log.error("%s", users.damaged)
    app.extensions["blastscope.users"] = users
    devices = URLSafeTimedSerializer(credentials.secret_key, salt="blastscope-trusted-device")

    def device_cookie() -> dict[str, Any]:
        """This phone's signed device cookie (user and id), or {} when absent, forged or expired."""
        try:
            data = devices.loads(request.cookies.get(DEVICE_COOKIE, ""), max_age=DEVICE_DAYS * 86400)
        except (BadSignature, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def known_users() -> dict[str, str]:
        """Every user who logged in on this phone (lower-case name -> device id): a shared ward
        phone is trusted for each of them, not only for the last (issue 35). Cookies of the
        form before (one "user" and "id") are read as one entry."""
        data = device_cookie()
        users_seen = data.get("users")
        if isinstance(users_seen, dict):
            return {str(k): str(v) for k, v in users_seen.items() if v}
        return {str(data["user"]).lower(): str(data["id"])} if data.get("user") and data.get("id") else {}

    def trusted_device(name: str) -> str | None:
        """The id this phone's device cookie holds for ``name``, else None."""
        return known_users().get(name.lower())

    def remembered_name() -> str:
        return str(device_cookie().get("last") or device_cookie().get("user", ""))

    def session_user(record: Any) -> User | None:
        """The session's user while they are active and unchanged since the login (a new PIN,
        role or deactivation ends the sessions opened before it)."""
        if record is None or not record.user:
            return None
        user, changed = users.session_check(record.user)
        if user is None or not user.active or changed is None or changed > record.created:
            return None
        return user

    def bearer_user(header: str) -> User | None:
        return users.by_token(header[7:].strip()) if header.startswith("Bearer ") else None

    def audit(action: str, after: Any = None, name: str = "") -> None:
        """Security events go to the append-only audit log; a full disk must not block a login."""
        try:
            who = f"{name} ({request.remote_addr or 'unknown'})" if name else client()
            service.store.audit(who, action, after=after)
        except Exception as exc:  # noqa: BLE001 - logged instead; the journal still has it
            log.error("audit of %s failed: %s", action, exc)

    def current_session():
        return sessions.lookup(session.get("sid"))

    cookie_reader = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]

    def body_gate(headers: dict[str, str]) -> bool:
        """Whether a request may send a large body, from its headers alone (the server asks
        before reading it, edge/device/httpserver.py): the API token, or a live session."""
        if bearer_user(headers.get("AUTHORIZATION", "")) is not None:
            return True
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("COOKIE", ""))
            data = cookie_reader.loads(jar[app.config["SESSION_COOKIE_NAME"]].value)
        except (KeyError, CookieError, BadSignature):
            return False
        return isinstance(data, dict) and session_user(sessions.lookup(data.get("sid"))) is not None

    app.extensions["blastscope.body_gate"] = body_gate

    def authenticate() -> tuple[Response, int] | None:
        """Who sends this request: a script (bearer token) or a logged-in page (session, CSRF on
        changes), kept in ``g.user``; the refusal when neither. Blueprints defined at module
        level run it before each of their routes (``edge.web.verification``)."""
        user = bearer_user(request.headers.get("Authorization", ""))
        if user is None:
            record = current_session()
            user = session_user(record)
            if record is None or user is None:
                return _error(401, "authentication required: log in with your name and PIN or send "
                                   "'Authorization: Bearer <token>'")
            if request.method not in ("GET", "HEAD"):
                sent = request.headers.get("X-CSRF-Token", "")
                if not sent or not same_secret(sent, record.csrf):
                    return _error(403, "CSRF token missing or wrong: reload the page")
        g.user = user
        return None

    app.extensions["blastscope.authenticate"] = authenticate
    app.extensions["blastscope.service"] = service

    @app.before_request
    def refuse_while_stopping():
        """After SIGTERM a request on a connection still open gets a clear answer; the server
        (edge/device/httpserver.py) closes the connection after it (WSGI apps may not set Connection)."""
        if service.stopping.is_set():
            response, status = _error(503, "the device is restarting; try again in a few seconds")
            response.headers["Retry-After"] = "5"
            return response, status
        return None

    @app.before_request
    def authorise():
        """Every route's level from the one table (``edge.web.access``): an endpoint with no row
        is refused, a public one passes, the rest authenticate and then check the role."""
        if request.endpoint is None:
            return None  # no such route: Flask answers 404
        level = access.required(request.endpoint)
        if level is None:
            return _error(403, f"route {request.endpoint} has no entry in the access table")
        if level == access.PUBLIC and not (users.damaged and request.endpoint == "login"):
            return None
        if users.damaged:
            response, status = _error(503, users.damaged)
            response.headers["Retry-After"] = "60"
            return response, status
        refusal = authenticate()
        if refusal is not None:
            return refusal
        user = g.user
        if level != access.USER and not user.may(level):
            return _error(403, f"{user.name} is a {user.role}: this needs a {level} "
                               f"(who may {ROLE_WORDS[level]}); ask an admin")
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
        if response.mimetype in ("text/html", "application/json"):
            # a case on a shared phone is not kept by the browser: Back after logout shows the login
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    errors.register(app, cfg.max_upload_mb)

    @app.get("/healthz")
    def healthz():
        return jsonify(service.health())

    @app.get("/login")
    def login_page():
        session.setdefault("csrf", secrets.token_hex(16))
        # the name last tried on this phone (a lockout is per name), else the one it remembers
        name = str(session.get("tried") or remembered_name())
        # a lockout in force shows on a fresh page too, with its count-down
        wait, _ = guard.standing(request.remote_addr or "unknown", name, trusted_device(name) if name else None)
        if wait > 0:
            seconds = int(wait) + 1
            whose = f"for {name}" if name else "from this phone"
            return render_template("login.html", csrf=session["csrf"], name=name, wait=seconds,
                                   error=f"Too many wrong PINs {whose}. Try again in {seconds} s.")
        expired = "Your session ended: log in again to go on where you were." if request.args.get("expired") else None
        return render_template("login.html", csrf=session["csrf"], error=expired, name=name)

    def login_page_with(error: str, status: int, name: str, wait: int | None = None):
        page = render_template("login.html", csrf=session.get("csrf", ""), error=error, name=name, wait=wait)
        return (page, status, {"Retry-After": str(wait)}) if status == 429 and wait else (page, status)

    @app.post("/login")
    def login():
        address = request.remote_addr or "unknown"
        raw_name = request.form.get("name", "")
        if not same_secret(request.form.get("csrf", ""), session.get("csrf", "") or "-"):
            session["csrf"] = secrets.token_hex(16)
            return login_page_with("The form expired. Enter your name and PIN again.", 403, raw_name[:40])
        try:
            name = check_name(raw_name)
        except UserError:
            return login_page_with("Enter your name (as an admin set it up) and your PIN.", 400, "")
        device = trusted_device(name)
        wait = guard.begin(address, name, device)
        if wait > 0:
            seconds = int(wait) + 1
            return login_page_with(f"Too many wrong PINs for {name}. Try again in {seconds} s.", 429, name, seconds)
        user = users.login(name, request.form.get("pin", ""))
        if user is None and users.deactivated(name, request.form.get("pin", "")):
            # the right PIN of a deactivated user: told so, and not a guess to count
            guard.succeeded(address, name, device)
            audit("login_refused", {"user": name, "why": "deactivated"})
            return login_page_with(f"{name} is deactivated: ask an admin to reactivate you.", 403, name)
        if user is None:
            session["tried"] = name
            failures = guard.failed(address, name, device)
            log.warning("wrong name or PIN for %r from %s (%d wrong PINs on this device in 24 h)", name, address, failures)
            audit("login_failed", {"user": name, "device_failures_24h": failures, "trusted_device": device is not None})
            next_wait = 0.0 if device is not None else guard.delay_after(failures)
            locked, left = guard.standing(address, name, device)
            error = "Wrong name or PIN."
            if locked > 0:
                error += f" Too many wrong PINs for {name}."
            elif left <= 2:  # a warning before the lockout, not after it
                span = (f"{round(cfg.lockout_seconds)} s" if cfg.lockout_seconds < 120
                        else f"{round(cfg.lockout_seconds / 60)} minutes")
                error += f" {left} more wrong PIN{'s' if left != 1 else ''} and {name} must wait {span}."
            seconds = int(max(next_wait, locked)) + (1 if locked > 0 else 0)
            if seconds >= 1:
                error += f" The next attempt is possible in {seconds} s."
            return login_page_with(error, 401, name, seconds if seconds >= 1 else None)
        guard.succeeded(address, user.name, device)
        session_id, _ = sessions.create(user.name)
        session.clear()
        session.permanent = True
        session["sid"] = session_id
        audit("login", {"user": user.name, "role": user.role, "trusted_device": device is not None}, name=user.name)
        response = redirect(url_for("index"))
        seen = {**known_users(), user.name.lower(): device or secrets.token_hex(16)}
        cookie = devices.dumps({"users": dict(list(seen.items())[-MAX_DEVICE_USERS:]), "last": user.name})
        response.set_cookie(DEVICE_COOKIE, cookie, max_age=DEVICE_DAYS * 86400, httponly=True, samesite="Strict")
        return response

    @app.post("/logout")
    def logout():
        record = current_session()
        if not same_secret(request.form.get("csrf", ""), record.csrf if record else "-"):
            return _error(403, "CSRF token missing or wrong: reload the page")
        sessions.revoke(session.get("sid"))
        audit("logout", name=record.user if record else "")
        session.clear()
        return redirect(url_for("login_page"))

    @app.get("/")
    def index():
        record = current_session()
        user = session_user(record)
        if record is None or user is None:
            return redirect(url_for("login_page"))
        return render_template("index.html", csrf=record.csrf, disclaimer=DISCLAIMER, names=DISPLAY_NAMES,
                               cell_names=CELL_NAMES, user=user)

    @app.get("/api/status")
    def status():
        return jsonify(service.status())

    @app.get("/metrics")
    def metrics():
        """Prometheus text format; scrape with the API token (``authorization`` in the scrape config)."""
        from edge.device.metrics import CONTENT_TYPE, render

        return Response(render(service), mimetype=None, content_type=CONTENT_TYPE)

    # Without a case in the URL a field goes into no case, whatever another phone has open:
    # the page names its case (/api/cases/<id>/classify) on every analysis.
    @app.post("/api/classify")
    def classify():
        frame, source = uploaded_frame(cfg.max_pixels)
        return jsonify({**service.queued(frame, source=source, client=client()).to_dict(), "case_id": None})

    @app.post("/api/capture")
    def capture():
        return jsonify({**service.capture(client=client()).to_dict(), "case_id": None})

    @app.get("/api/preview.jpg")
    def preview():
        return Response(service.preview_jpeg(), mimetype="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/live.mjpg")
    def live():
        """The live view (``edge.device.live``): 503 with the reason when there is no camera,
        it delivers nothing, or every stream slot is taken; the page then shows stills."""
        if service.live is None:
            raise Refused(503, "no camera source is configured")
        try:
            parts = service.live.open(owner=g.user.name)
        except (LiveBusy, CameraError) as exc:
            raise Refused(503, str(exc)) from None
        return Response(parts, mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                        headers={"Cache-Control": "no-store"}, direct_passthrough=True)

    @app.get("/api/results")
    def results():
        return jsonify({"results": service.store.recent(whole_number("limit", 20, 1, 500))})

    @app.get("/api/audit")
    def audit_log():
        return jsonify({"audit": service.store.audit_log(whole_number("limit", 100, 1, 1000))})

    @app.get("/api/me")
    def me():
        """Who this phone or token is logged in as, and what the role may do."""
        user = g.user
        return jsonify({"name": user.name, "role": user.role, "may": [r for r in ROLES if user.may(r)]})

    @app.get(f"/api/results/<int(max={MAX_ID}):result_id>")
    def result(result_id: int):
        record = service.store.get(result_id)
        return jsonify(record) if record else _error(404, f"no result {result_id}")

    @app.get(f"/api/results/<int(max={MAX_ID}):result_id>/<any(image, overlay):kind>")
    def result_file(result_id: int, kind: str):
        path = service.store.file_path(result_id, kind)
        if path is None or not path.exists():
            return _error(404, f"no {kind} for result {result_id}")
        return send_file(path, mimetype="image/jpeg", max_age=3600)

    app.register_blueprint(make_blueprint(service))
    app.register_blueprint(reports.bp)
    app.register_blueprint(user_routes.bp)
    app.register_blueprint(clock_routes.bp)
    app.register_blueprint(verification.bp)
    return app
