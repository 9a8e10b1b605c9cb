"""Site verification on the page and the API: an admin starts a verification with its
acceptance criteria, technicians analyse known slides into cases of it (the truth entered,
hidden until the slide is done), and an admin closes it, which signs the report.

A module-level blueprint, as in Flask's tutorial: the device's ``Service`` and the app's
authentication come from ``current_app.extensions`` (set by ``edge.web.create_app``).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from pydantic import ValidationError

from edge.analysis.labels import DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.analysis.verification import CHALLENGING, Criteria, evaluate
from edge.device.service import Service
from edge.record.verification import Verification, VerificationError
from edge.web.wording import local_minute
from edge.web.auth import LoginGuard
from edge.web.common import MAX_ID, Refused, clean_text, client, set_open_case
from edge.web.users import User, Users
from edge.web.cases import CODE

bp = Blueprint("verification", __name__)


def _service() -> Service:
    return cast(Service, current_app.extensions["blastscope.service"])


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and not request.data:
        return {}
    if not isinstance(data, dict):
        raise Refused(400, "send a JSON object")
    return data


def _existing(verification_id: int) -> Verification:
    verification = _service().site.record.get(verification_id)
    if verification is None:
        raise Refused(404, f"no verification {verification_id}")
    return verification


def _view(verification: Verification) -> dict[str, Any]:
    """A verification as the page and scripts see it: the truth of a slide not yet done is
    hidden (from everyone: the people analysing it must not be led by it), the figures so far."""
    out = verification.to_dict(reveal=False)
    out["so_far"] = evaluate(verification.slides, verification.criteria).to_dict()
    out["below_floor"] = verification.criteria.below_floor()
    out["started_iso"] = local_minute(verification.started)
    if verification.finished:
        out["finished_iso"] = local_minute(verification.finished)
    return out


def _step(action: Any) -> Any:
    try:
        return action()
    except VerificationError as exc:
        raise Refused(409, str(exc)) from None
    except LookupError as exc:
        raise Refused(404, str(exc).strip("'\"")) from None


def _second_admin(data: Any) -> str:
    """The name of the second admin who confirms criteria below the floor, their PIN checked
    under the login limits (a wrong PIN counts as a failed login for that name)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("pin"), str):
        raise Refused(400, 'confirm: send {"name": ..., "pin": ...} of a second admin')
    guard = cast(LoginGuard, current_app.extensions["blastscope.login_guard"])
    users = cast(Users, current_app.extensions["blastscope.users"])
    address, name = request.remote_addr or "unknown", data["name"].strip()[:40]
    if (wait := guard.begin(address, name)) > 0:
        raise Refused(429, f"too many wrong PINs for {name}: try again in {int(wait) + 1} s")
    second = users.login(name, data["pin"])
    if second is None:
        guard.failed(address, name)
        raise Refused(403, f"confirm: wrong name or PIN for {name}")
    guard.succeeded(address, name)
    me = g.get("user")
    if second.role != "admin":
        raise Refused(403, f"confirm: {second.name} is not an admin")
    if isinstance(me, User) and me.name.lower() == second.name.lower():
        raise Refused(403, "confirm: a second admin must confirm, not the one starting the verification")
    return second.name


@bp.get("/api/verifications")
def list_verifications() -> Response:
    site = _service().site
    return jsonify({"state": site.state().to_dict(), "defaults": Criteria().model_dump(),
                    "verifications": [_view(v) for v in site.record.all()]})


@bp.post("/api/verifications")
def start_verification() -> tuple[Response, int]:
    """Start a verification for the model and camera settings in force; the criteria given
    (else the defaults, which are the floor) are fixed from here on. Criteria below the floor
    need ``confirm``: a second admin's name and PIN."""
    data = _body()
    try:
        criteria = Criteria.model_validate(data.get("criteria") or {})
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise Refused(400, f"criteria.{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None
    note = clean_text("note", data.get("note"), 500)
    confirmed_by = _second_admin(data["confirm"]) if criteria.below_floor() and data.get("confirm") else None
    verification = _step(lambda: _service().site.start(criteria, client(), note, confirmed_by))
    return jsonify(_view(verification)), 201


@bp.get(f"/api/verifications/<int(max={MAX_ID}):verification_id>")
def get_verification(verification_id: int) -> Response:
    return jsonify(_view(_existing(verification_id)))


@bp.post(f"/api/verifications/<int(max={MAX_ID}):verification_id>/slides")
def add_slide(verification_id: int) -> tuple[Response, int]:
    """A known slide: a new case (opened on this phone) whose fields are analysed as usual."""
    data = _body()
    code = clean_text("code", data.get("code"), 40)
    if code and not CODE.match(code):
        raise Refused(400, "code: 1-40 letters, digits, spaces or . _ / - (a slide number; no patient names)")
    truth, kind = data.get("truth"), data.get("kind") or ""
    if not isinstance(truth, str) or not isinstance(kind, str):
        raise Refused(400, 'send {"truth": "positive|negative", "kind": "" or "hematogone-rich" or "reactive"}')
    service = _service()
    case_id = _step(lambda: service.site.record.add_slide(verification_id, truth, kind, code, client()))
    set_open_case(case_id)
    case = service.case(case_id)
    return jsonify(case), 201


@bp.post(f"/api/verifications/<int(max={MAX_ID}):verification_id>/slides/<int(max={MAX_ID}):case_id>/done")
def slide_done(verification_id: int, case_id: int) -> Response:
    """The slide is read: the device's case call is frozen into the verification, and only
    now is the truth shown beside it."""
    service = _service()
    case = service.case(case_id)
    slide = service.site.record.slide_of_case(case_id)
    if case is None or slide is None or slide[0] != verification_id:
        raise Refused(404, f"case {case_id} is not a slide of verification {verification_id}")
    call = (case.get("case_call") or {}).get("call") or case["call"]
    if call == "pending":
        needed = (case.get("case_call") or {}).get("fields_needed")
        raise Refused(409, "the case has no call yet: analyse more fields"
                      + (f" ({needed} more needed)" if needed else ""))
    _step(lambda: service.site.record.mark_done(case_id, call, client()))
    return jsonify({**_view(_existing(verification_id)), "case": service.case(case_id)})


@bp.post(f"/api/verifications/<int(max={MAX_ID}):verification_id>/finish")
def finish(verification_id: int) -> Response:
    """Close and sign: passed if every criterion holds, else failed (with why)."""
    _existing(verification_id)
    return jsonify(_view(_step(lambda: _service().site.finish(verification_id, client()))))


@bp.post(f"/api/verifications/<int(max={MAX_ID}):verification_id>/abandon")
def abandon(verification_id: int) -> Response:
    reason = clean_text("reason", _body().get("reason"), 500, required=True)
    _existing(verification_id)
    return jsonify(_view(_step(lambda: _service().site.abandon(verification_id, reason, client()))))


@bp.get(f"/api/verifications/<int(max={MAX_ID}):verification_id>/report")
def report(verification_id: int) -> str:
    """The printable verification report: criteria, every slide with truth and call, the
    figures with intervals, the verdict and who signed it."""
    verification = _existing(verification_id)
    service = _service()
    service.store.audit(client(), "verification.report", after={"verification_id": verification_id})
    return render_template("verification.html", v=_view(verification), names=DISPLAY_NAMES, disclaimer=DISCLAIMER,
                           device=service.config.device_name, challenging=CHALLENGING,
                           printed=local_minute(time.time()))


@bp.get(f"/api/verifications/<int(max={MAX_ID}):verification_id>/export.json")
def export(verification_id: int) -> Response:
    verification = _existing(verification_id)
    service = _service()
    service.store.audit(client(), "verification.export", after={"verification_id": verification_id})
    body = json.dumps({"verification": _view(verification), "device": service.config.device_name,
                       "disclaimer": DISCLAIMER}, indent=1)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="blastscope-verification-{verification_id}.json"'})


# -- the site reference (issue 33): what this clinic's normal cells look like --------------

@bp.get("/api/site-references")
def list_references() -> Response:
    site = _service().site
    active = site.active_reference()
    return jsonify({"active": None if active is None else active.id,
                    "references": [r.to_dict() for r in site.references.all()]})


@bp.post("/api/site-references")
def propose_reference() -> tuple[Response, int]:
    """Measure the cases of at least 10 known-negative slides (read from the device's camera)
    and propose a site reference from them; an admin accepts it with a second call."""
    ids = _body().get("case_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID
                                            for i in ids):
        raise Refused(400, 'send {"case_ids": [...]}: the cases of the known-negative slides, one case a slide')
    service = _service()
    stored = _step(lambda: service.site.propose_reference(service.pipeline, ids, client()))
    return jsonify(stored.to_dict()), 201


@bp.post(f"/api/site-references/<int(max={MAX_ID}):reference_id>/accept")
def accept_reference(reference_id: int) -> Response:
    """The proposed reference is in force from now on: a verification passed before it no longer
    covers the device, and a new one, on other slides, is needed."""
    service = _service()
    stored = _step(lambda: service.site.accept_reference(reference_id, client()))
    service.apply_site_reference()
    return jsonify({**stored.to_dict(), "site_verification": service.site.state().to_dict()})
