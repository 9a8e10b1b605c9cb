"""Cases on the API: create, list, read, analyse into, review, exclude, report and export.

Every route sits behind the app's authentication (``api``); every change and every export
goes to the append-only audit log with the client's address. A review records the
clinician's call beside the model's, which is never changed. A request that cannot be
served raises ``Refused``; the app turns it into a JSON 4xx.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from edge.analysis.case import final_call
from edge.record.store import MISSING
from edge.analysis.labels import CELL_NAMES, DIFFERENTIAL
from edge.device.service import ScanBusy, Service
from edge.record.store import Locked, Stale, locked_message
from edge.web.common import MAX_ID, Refused, clean_text, client as _client, current_user, open_case, set_open_case, uploaded_frame, whole_number

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,39}$")
CALLS = ("positive", "negative", "uncertain")
FILTER_CALLS = CALLS + ("pending",)
#: What a reviewer may call a cell in the gallery: a class, or not a white cell at all.
#: Every class of the differential is pickable by a reviewer (a neutrophil is a neutrophil,
#: not a hematogone), whatever the bundle's model reads.
CELL_CLASSES = DIFFERENTIAL


def cell_jpeg(field_image: Path, box: list[int], side: int = 96) -> bytes:
    """The cell's box and a quarter of it around, square, from the stored field, enlarged."""
    import cv2

    field = cv2.imread(str(field_image))
    if field is None:
        raise ValueError(f"the stored field image {field_image.name} cannot be read")
    x, y, w, h = box
    half = int(max(w, h) * 0.75) + 2
    cx, cy = x + w // 2, y + h // 2
    padded = cv2.copyMakeBorder(field, half, half, half, half, cv2.BORDER_REPLICATE)
    crop = padded[cy:cy + 2 * half, cx:cx + 2 * half]
    ok, data = cv2.imencode(".jpg", cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"OpenCV could not encode a cell of {field_image.name}")
    return data.tobytes()


def _json_body(example: str) -> dict[str, Any]:
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # JSON nested a thousand deep: Python's parser gives up
        raise Refused(400, "the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise Refused(400, f"send JSON {example}")
    return data


def _review() -> tuple[dict[str, Any], int]:
    """The review in the request body and the revision of what the reviewer saw (the
    ``revision`` the API gave with the field or case); ``Refused`` says what is missing."""
    data = _json_body('{"call": ..., "reason": ..., "revision": ...}')
    call = clean_text("call", data.get("call"), 20)
    if call not in CALLS:
        raise Refused(400, f"call must be one of {', '.join(CALLS)}")
    reason = clean_text("reason", data.get("reason"), 500, required=True)
    # the reviewer is who is logged in (edge.web.users), never a name typed into the form
    return {"call": call, "reason": reason, "reviewer": current_user().name, "at": time.time()}, _revision(data, "reviewed")


def _revision(data: dict[str, Any], done: str) -> int:
    """The ``revision`` a change was made on, as the API gave it with the field or case: a
    change to something that changed since is refused (409), never written over it."""
    seen = data.get("revision")
    if not isinstance(seen, int) or isinstance(seen, bool) or not 0 <= seen <= MAX_ID:
        raise Refused(400, f"say which revision you {done}: 'revision' as the API gave it with the field or case "
                           "(a change to something that changed since is refused, never written over it)")
    return seen


def _only_owner_or_reviewer(by: str, what: str) -> None:
    """Only who started a scan or armed the button (``by`` is "name (address)"), or a reviewer,
    may stop or move it: another technician's tap must not end someone's work."""
    user = current_user()
    if by.rsplit(" (", 1)[0] != user.name and not user.may("reviewer"):
        raise Refused(403, f"{by.rsplit(' (', 1)[0]} started this: only they or a reviewer may {what}")


def make_blueprint(service: Service) -> Blueprint:
    bp = Blueprint("cases", __name__)
    store = service.store

    def existing_case(case_id: int) -> dict[str, Any]:
        """The case with ``active`` meaning "open on the phone that asks" (never device-wide)."""
        case = service.case(case_id)
        if case is None:
            raise Refused(404, f"no case {case_id}")
        case["active"] = case_id == open_case()
        return case

    def analysed_into(case_id: int, result: Any) -> Response:
        """The result with the case it was stored in, so the page shows where it went."""
        case = existing_case(case_id)
        # a field that repeats one already in the case is stored excluded, with the reason said
        return jsonify({**result.to_dict(), "case_id": case_id, "case_code": case["code"],
                        "excluded": store.exclusion(result.id) if result.id is not None else None})

    @bp.post("/api/cases")
    def create_case():
        data = _json_body('{"code": "<lab number, or empty to generate one>", "note": "..."}')
        code, note = clean_text("code", data.get("code"), 40), clean_text("note", data.get("note"), 500)
        if code and not CODE.match(code):
            raise Refused(400, "code: 1-40 letters, digits, spaces or . _ / - (a lab number; no patient names)")
        try:
            case = service.create_case(code, note, _client())
        except ValueError as exc:
            raise Refused(409, str(exc)) from None
        set_open_case(case["id"])
        return jsonify(existing_case(case["id"])), 201

    @bp.get("/api/cases")
    def list_cases():
        limit, offset, call = whole_number("limit", 20, 1, 200), whole_number("offset", 0, 0, 10**9), request.args.get("call", "")
        if call and call not in FILTER_CALLS:
            raise Refused(400, f"call must be one of {', '.join(FILTER_CALLS)}")
        cases, total = store.list_cases(limit, offset, call or None)
        active = open_case()
        for case in cases:
            case["active"] = case["id"] == active
            case["final_call"] = final_call(case["signed"] or case["review"], case["call"])
        return jsonify({"cases": cases, "total": total, "limit": limit, "offset": offset, "active_case": active})

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>")
    def get_case(case_id: int):
        return jsonify(existing_case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/activate")
    def activate(case_id: int):
        existing_case(case_id)
        set_open_case(case_id)
        store.audit(_client(), "case.activate", after={"case_id": case_id})
        return jsonify(existing_case(case_id))

    def open_for_fields(case_id: int) -> None:
        """A signed-out case takes no field: refused before anything is analysed."""
        case = existing_case(case_id)
        if case["signed"]:
            raise Locked(locked_message(case["code"], case["signed"]))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/classify")
    def classify_into(case_id: int):
        open_for_fields(case_id)
        if service.site.record.slide_of_case(case_id) is not None:
            raise Refused(409, "this case is a site-verification slide: its fields come from the device's camera "
                               "(Capture or Scan), never from a picture, so that the camera and optics the clinic "
                               "uses are what is verified")
        frame, source = uploaded_frame(service.config.server.max_pixels)
        return analysed_into(case_id, service.queued(frame, source=source, case_id=case_id, client=_client()))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/capture")
    def capture_into(case_id: int):
        open_for_fields(case_id)
        return analysed_into(case_id, service.capture(case_id, client=_client()))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/scan")
    def scan_case(case_id: int):
        """Start or stop scanning this case hands-free (``edge.device.scan``): fields are taken
        by themselves while the stage pauses over new, sharp areas, until the case rule has its
        fields. One scan at a time: the device has one camera."""
        case = existing_case(case_id)
        action = _json_body('{"action": "start" | "stop"}').get("action")
        if action == "start":
            if case.get("signed"):
                raise Refused(409, locked_message(case["code"], case["signed"]))
            try:
                session = service.start_scan(case_id, _client())
            except ScanBusy as exc:
                raise Refused(409, str(exc)) from None
            store.audit(_client(), "scan.start", after={"case_id": case_id})
            signed = (store.case_summary(case_id) or {}).get("signed")
            if signed:  # signed out while the scan started: the sign-out's stop may have run first
                service.stop_scan(case_id)
                raise Refused(409, locked_message(case["code"], signed))
        elif action == "stop":
            running = service.scan
            if running is None or running.case_id != case_id:
                raise Refused(404, f"case {case['code']} is not being scanned")
            _only_owner_or_reviewer(running.client, "stop this scan")
            stopped = service.stop_scan(case_id)
            if stopped is None:
                raise Refused(404, f"case {case['code']} is not being scanned")
            store.audit(_client(), "scan.stop", after={"case_id": case_id, "started_by": stopped.client})
            session = stopped
        else:
            raise Refused(400, 'action must be "start" or "stop"')
        return jsonify(session.status())

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/button")
    def button_case(case_id: int):
        """Arm the Pi's GPIO button for this case, or disarm it (``edge.device.button``): a
        press analyses a field into the case a phone armed it for, never into another."""
        action = _json_body('{"action": "arm" | "disarm"}').get("action")
        current = service.button_target.armed
        if action == "arm":
            open_for_fields(case_id)
            if service.config.button.gpio is None:
                raise Refused(409, "this device has no GPIO button: set button.gpio in the config")
            if current is not None:
                _only_owner_or_reviewer(current.by, "arm the button away from the case they armed it for")
            armed = service.button_target.arm(case_id, _client())
            store.audit(_client(), "button.arm", after={"case_id": case_id})
            after = store.case_summary(case_id) or {}
            if after.get("signed"):  # signed out between the check and the arm: its disarm may have run first
                service.button_target.disarm(case_id)
                raise Refused(409, locked_message(after["code"], after["signed"]))
            return jsonify({"case_id": case_id, "armed_by": armed.by})
        if action == "disarm":
            existing_case(case_id)
            if current is not None and current.case_id == case_id:
                _only_owner_or_reviewer(current.by, "disarm the button")
            service.button_target.disarm(case_id)
            store.audit(_client(), "button.disarm", after={"case_id": case_id})
            return jsonify({"case_id": case_id, "armed_by": None})
        raise Refused(400, 'action must be "arm" or "disarm"')

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/scan")
    def scan_status(case_id: int):
        existing_case(case_id)
        session = service.scan
        if session is None or session.case_id != case_id:
            return jsonify({"case_id": case_id, "running": False, "state": "off", "taken": 0, "fields": [], "path": [],
                            "ended": None})
        return jsonify(session.status())

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/review")
    def review_result(result_id: int):
        review, seen = _review()
        if store.review_result(result_id, review, _client(), seen) is None:
            raise Refused(404, f"no result {result_id}")
        return jsonify(store.get(result_id))

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/exclude")
    def exclude_result(result_id: int):
        reason = clean_text("reason (why the field is excluded: wrong slide, artefact)",
                            _json_body('{"reason": "..."}').get("reason"), 500, required=True)
        if store.exclude_result(result_id, reason, _client()) is None:
            raise Refused(404, f"no result {result_id}")
        record = store.get(result_id)
        if record is None:  # removed by retention between the two calls
            raise Refused(404, f"no result {result_id}")
        if record.get("case_id") is not None:
            service.refresh_case_call(record["case_id"])
        return jsonify(record)

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/include")
    def include_result(result_id: int):
        """Count an excluded field again. A field excluded as a repeat of another ("analyse
        anyway": the technician knows the stage moved) any technician may count; a field a
        reviewer excluded only a reviewer may include again."""
        exclusion = store.exclusion(result_id)
        if exclusion is None:
            if store.get(result_id) is None:
                raise Refused(404, f"no result {result_id}")
            raise Refused(409, f"field #{result_id} is not excluded: it already counts")
        user = current_user()
        if exclusion.get("duplicate_of") is None and not user.may("reviewer"):
            raise Refused(403, f"{user.name} is a {user.role}: field #{result_id} was excluded by a reviewer "
                               f"({exclusion.get('reason')}); only a reviewer may include it again")
        if store.include_result(result_id, _client()) is MISSING:
            raise Refused(404, f"no result {result_id}")
        record = store.get(result_id)
        if record is not None and record.get("case_id") is not None:
            service.refresh_case_call(record["case_id"])
        return jsonify(record)

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/review")
    def review_case(case_id: int):
        review, seen = _review()
        if store.review_case(case_id, review, _client(), seen) is None:
            raise Refused(404, f"no case {case_id}")
        return jsonify(existing_case(case_id))

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/cells")
    def case_cells(case_id: int):
        """The case's white cells grouped by class, CellaVision's way: the reviewer's class where
        a cell was reclassified, else the model's (kept beside it); cells the model did not
        recognise in their own group. Excluded and rejected fields are left out."""
        case = existing_case(case_id)
        groups: dict[str, list[dict[str, Any]]] = {k: [] for k in (*CELL_CLASSES, "unfamiliar")}
        for f in case["fields"]:
            if f.get("excluded") or f.get("status") != "classified":
                continue
            reviews = f.get("cell_reviews") or {}
            for i, cell in enumerate(f.get("cells") or []):
                review = reviews.get(str(i))
                label = review["label"] if review else cell["label"] if cell.get("familiar") else "unfamiliar"
                groups[label].append({"result_id": f["id"], "cell": i + 1, "model_label": cell["label"],
                                      "familiar": cell.get("familiar"), "review": review,
                                      "field_revision": f["revision"],
                                      "image": f"/api/results/{f['id']}/cells/{i + 1}.jpg"})
        names = {**CELL_NAMES, "unfamiliar": "Not recognised by the model"}
        return jsonify({"case_id": case_id, "revision": case["revision"],
                        "groups": [{"label": k, "name": names[k], "cells": v} for k, v in groups.items()],
                        "cells": (case.get("case_call") or {}).get("cells")})

    @bp.get(f"/api/results/<int(max={MAX_ID}):result_id>/cells/<int(min=1, max=999):n>.jpg")
    def cell_image(result_id: int, n: int):
        record = store.get(result_id)
        cells = (record or {}).get("cells") or []
        path = store.file_path(result_id, "image")
        if record is None or n > len(cells) or path is None or not path.exists():
            raise Refused(404, f"no cell {n} in field #{result_id}")
        try:
            jpeg = cell_jpeg(path, cells[n - 1]["box"])
        except ValueError as exc:  # a damaged stored image: say which, never a traceback
            raise Refused(500, str(exc)) from exc
        return Response(jpeg, mimetype="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/cells/<int(min=1, max=999):n>/review")
    def review_cell(result_id: int, n: int):
        data = _json_body('{"label": ..., "revision": ...}')
        label = clean_text("label", data.get("label"), 30)
        if label not in CELL_CLASSES:
            raise Refused(400, f"label must be one of {', '.join(CELL_CLASSES)}")
        reviewer = current_user().name
        seen = _revision(data, "reviewed")
        try:
            saved = store.review_cell(result_id, n - 1, {"label": label, "reviewer": reviewer}, _client(), seen)
        except ValueError as exc:
            if isinstance(exc, (Locked, Stale)):
                raise
            raise Refused(404, str(exc)) from None
        if saved is None:
            raise Refused(404, f"no result {result_id}")
        return jsonify(store.get(result_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/sign")
    def sign_case(case_id: int):
        """Sign the case out with the final call; locked until amended."""
        signature, seen = _review()
        if store.sign_case(case_id, signature, _client(), seen, district=service.district is not None) is None:
            raise Refused(404, f"no case {case_id}")
        # a signed case takes no field: its button is disarmed and its scan stopped, both audited
        armed = service.button_target.armed
        if armed is not None and armed.case_id == case_id:
            service.button_target.disarm(case_id)
            store.audit(_client(), "button.disarm", after={"case_id": case_id, "why": "case signed out"})
        if (stopped := service.stop_scan(case_id)) is not None:
            store.audit(_client(), "scan.stop", after={"case_id": case_id, "started_by": stopped.client,
                                                       "why": "case signed out"})
        return jsonify(existing_case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/amend")
    def amend_case(case_id: int):
        """Unlock a signed-out case as a new version; the reason is required and kept."""
        data = _json_body('{"reason": "why the signed case must change", "revision": ...}')
        reason = clean_text("reason (why the signed-out case must change)", data.get("reason"), 500, required=True)
        seen = _revision(data, "are amending")
        if store.amend_case(case_id, reason, _client(), seen) is None:
            raise Refused(404, f"no case {case_id}")
        return jsonify(existing_case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/second-read")
    def second_read(case_id: int):
        """Send a positive or uncertain case to the district for a second read now, before (or
        without) its sign-out (issue 37); the outbox sends it when the link is up."""
        if service.district is None:
            raise Refused(409, "no district server is configured on this device ([district] url)")
        case = existing_case(case_id)
        call = case.get("final_call") or (case.get("case_call") or {}).get("call")
        if call not in ("positive", "uncertain"):
            raise Refused(409, f"a second read is asked for a positive or uncertain case; this one is {call or 'not called yet'}")
        store.outbox.queue(case_id, _client(), "second read wanted")
        return jsonify(existing_case(case_id))

    return bp
