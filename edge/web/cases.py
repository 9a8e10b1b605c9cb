"""Cases on the API: create, list, read, analyse into, review, exclude, report and export.

Every route sits behind the app's authentication (``api``); every change and every export
goes to the append-only audit log with the client's address. A review records the
clinician's call beside the model's, which is never changed.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable

from flask import Blueprint, Response, jsonify, render_template, request

from edge.capture import CameraError
from edge.export import case_rows, csv_text, fhir_bundle
from edge.imagefile import ImageRejected, decode_image
from edge.labels import DISPLAY_NAMES
from edge.result import DISCLAIMER
from edge.service import Service

MAX_ID = 2**63 - 1
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,39}$")
CALLS = ("positive", "negative", "uncertain")
FILTER_CALLS = CALLS + ("pending",)


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"error": reason, "status": status}), status


def _client() -> str:
    return request.remote_addr or "unknown"


def _json_body() -> dict[str, Any] | None:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def _review(data: dict[str, Any] | None) -> dict[str, str] | tuple[Response, int]:
    """A review from a request body, or the 400 that says what is missing."""
    if data is None:
        return _error(400, 'send JSON {"call": ..., "reason": ..., "reviewer": ...}')
    call, reason, reviewer = (str(data.get(k, "")).strip() for k in ("call", "reason", "reviewer"))
    if call not in CALLS:
        return _error(400, f"call must be one of {', '.join(CALLS)}")
    if not reason or len(reason) > 500:
        return _error(400, "reason is required (at most 500 characters)")
    if not reviewer or len(reviewer) > 40:
        return _error(400, "reviewer (name or initials) is required (at most 40 characters)")
    return {"call": call, "reason": reason, "reviewer": reviewer}


def _day(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ValueError(f"{name} must be a date like 2026-11-23") from None


def make_blueprint(service: Service, api: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Blueprint:
    bp = Blueprint("cases", __name__)
    store = service.store

    def case_or_404(case_id: int) -> dict[str, Any] | tuple[Response, int]:
        case = service.case(case_id)
        return case if case is not None else _error(404, f"no case {case_id}")

    @bp.post("/api/cases")
    @api
    def create_case():
        data = _json_body()
        if data is None:
            return _error(400, 'send JSON {"code": "<lab number, or empty to generate one>", "note": "..."}')
        code, note = str(data.get("code") or "").strip(), str(data.get("note") or "").strip()
        if code and not CODE.match(code):
            return _error(400, "code: 1-40 letters, digits, spaces or . _ / - (a lab number; no patient names)")
        if len(note) > 500:
            return _error(400, "note: at most 500 characters")
        try:
            return jsonify(service.create_case(code, note, _client())), 201
        except ValueError as exc:
            return _error(409, str(exc))

    @bp.get("/api/cases")
    @api
    def list_cases():
        limit, offset, call = (request.args.get(k, d) for k, d in (("limit", "20"), ("offset", "0"), ("call", "")))
        if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 200):
            return _error(400, "limit must be a whole number from 1 to 200")
        if not (offset.isascii() and offset.isdigit() and int(offset) <= 10**9):
            return _error(400, "offset must be a whole number")
        if call and call not in FILTER_CALLS:
            return _error(400, f"call must be one of {', '.join(FILTER_CALLS)}")
        cases, total = store.list_cases(int(limit), int(offset), call or None)
        active = store.active_case()
        for case in cases:
            case["active"] = case["id"] == active
            case["final_call"] = (case["review"] or {}).get("call") or case["call"]
        return jsonify({"cases": cases, "total": total, "limit": int(limit), "offset": int(offset),
                        "active_case": active})

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>")
    @api
    def get_case(case_id: int):
        case = case_or_404(case_id)
        return jsonify(case) if isinstance(case, dict) else case

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/activate")
    @api
    def activate(case_id: int):
        if store.get_case(case_id) is None:
            return _error(404, f"no case {case_id}")
        store.set_active_case(case_id)
        store.audit(_client(), "case.activate", after={"case_id": case_id})
        return jsonify(service.case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/classify")
    @api
    def classify_into(case_id: int):
        if store.get_case(case_id) is None:
            return _error(404, f"no case {case_id}")
        upload = request.files.get("image")
        if upload is None:
            return _error(400, "multipart field 'image' is required")
        try:
            frame = decode_image(upload.read(), service.config.server.max_pixels)
        except ImageRejected as exc:
            return _error(exc.status, exc.reason)
        result = service.analyze(frame, source=f"upload:{upload.filename or 'image'}", case_id=case_id)
        return jsonify({**result.to_dict(), "case_id": case_id})

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/capture")
    @api
    def capture_into(case_id: int):
        if store.get_case(case_id) is None:
            return _error(404, f"no case {case_id}")
        try:
            return jsonify({**service.capture(case_id).to_dict(), "case_id": case_id})
        except CameraError as exc:
            return _error(503, f"camera unavailable: {exc}")

    def reviewed(save: Callable[[int, dict[str, str], str], Any], target: int, what: str,
                 answer: Callable[[int], Any]):
        """Validate the review in the body, save it beside the model's output, answer."""
        review = _review(_json_body())
        if not isinstance(review, dict):
            return review
        if save(target, review, _client()) is None:
            return _error(404, f"no {what} {target}")
        return jsonify(answer(target))

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/review")
    @api
    def review_result(result_id: int):
        return reviewed(store.review_result, result_id, "result", store.get)

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/exclude")
    @api
    def exclude_result(result_id: int):
        data = _json_body() or {}
        reason = str(data.get("reason", "")).strip()
        if not reason or len(reason) > 500:
            return _error(400, 'send JSON {"reason": "..."}: why the field is excluded (wrong slide, artefact)')
        if store.exclude_result(result_id, reason, _client()) is None:
            return _error(404, f"no result {result_id}")
        record = store.get(result_id)
        if record and record.get("case_id") is not None:
            service.refresh_case_call(record["case_id"])
        return jsonify(record)

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/review")
    @api
    def review_case(case_id: int):
        return reviewed(store.review_case, case_id, "case", service.case)

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/report")
    @api
    def report(case_id: int):
        case = case_or_404(case_id)
        if not isinstance(case, dict):
            return case
        thumbnails = {}
        for f in case["fields"]:
            path = store.file_path(f["id"], "overlay")
            if path is not None and path.exists():
                thumbnails[f["id"]] = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
        store.audit(_client(), "case.report", after={"case_id": case_id})
        return render_template("report.html", case=case, thumbnails=thumbnails, names=DISPLAY_NAMES,
                               disclaimer=DISCLAIMER, device=service.config.device_name,
                               printed=time.strftime("%Y-%m-%d %H:%M", time.localtime()))

    def export(case: dict[str, Any] | None, fields: list[dict[str, Any]], kind: str, name: str):
        rows = case_rows(fields, {case["id"]: case} if case else {})
        store.mark_exported([f["id"] for f in fields], case["id"] if case else None, _client(), kind)
        if kind == "csv":
            body, mimetype = csv_text(rows), "text/csv"
        elif kind == "json":
            return Response(jsonify({"case": {k: v for k, v in case.items() if k != "fields"} if case else None,
                                     "fields": rows, "disclaimer": DISCLAIMER}).get_data(), mimetype="application/json",
                            headers={"Content-Disposition": f'attachment; filename="{name}.json"'})
        else:
            body, mimetype = fhir_bundle(case, fields, service.config.device_name), "application/fhir+json"
        return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{name}.{kind}"'})

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/export.<any(csv, json):kind>")
    @api
    def export_case(case_id: int, kind: str):
        case = case_or_404(case_id)
        if not isinstance(case, dict):
            return case
        return export(case, case["fields"], kind, f"blastscope-case-{case['code'].replace('/', '-')}")

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/fhir")
    @api
    def export_fhir(case_id: int):
        case = case_or_404(case_id)
        if not isinstance(case, dict):
            return case
        return export(case, case["fields"], "fhir", f"blastscope-case-{case['code'].replace('/', '-')}")

    @bp.get("/api/export.<any(csv, json):kind>")
    @api
    def export_range(kind: str):
        try:
            start = _day(request.args.get("from"), "from") or 0.0
            end = (_day(request.args.get("to"), "to") or time.time() - 86400) + 86400  # 'to' is inclusive
        except ValueError as exc:
            return _error(400, str(exc))
        fields = store.between(start, end)
        cases = {f["case_id"]: store.get_case(f["case_id"]) for f in fields if f.get("case_id") is not None}
        rows = case_rows(fields, {k: v for k, v in cases.items() if v})
        store.mark_exported([f["id"] for f in fields], None, _client(), f"range {kind}")
        name = f"blastscope-{request.args.get('from') or 'start'}-to-{request.args.get('to') or 'today'}"
        if kind == "csv":
            return Response(csv_text(rows), mimetype="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
        return Response(jsonify({"fields": rows, "disclaimer": DISCLAIMER}).get_data(), mimetype="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.json"'})

    return bp
