"""Cases on the API: create, list, read, analyse into, review, exclude, report and export.

Every route sits behind the app's authentication (``api``); every change and every export
goes to the append-only audit log with the client's address. A review records the
clinician's call beside the model's, which is never changed. A request that cannot be
served raises ``Refused``; the app turns it into a JSON 4xx.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable

from flask import Blueprint, Response, jsonify, render_template, request

from edge.analysis.case import final_call
from edge.record.export import case_rows, csv_text, fhir_bundle
from edge.analysis.labels import DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.device.service import Service
from edge.web.common import MAX_ID, Refused, client as _client, open_case, set_open_case, uploaded_frame, whole_number

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,39}$")
CALLS = ("positive", "negative", "uncertain")
FILTER_CALLS = CALLS + ("pending",)


def _json_body(example: str) -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused(400, f"send JSON {example}")
    return data


def _review() -> dict[str, str]:
    """The review in the request body; ``Refused`` says what is missing."""
    data = _json_body('{"call": ..., "reason": ..., "reviewer": ...}')
    call, reason, reviewer = (str(data.get(k, "")).strip() for k in ("call", "reason", "reviewer"))
    if call not in CALLS:
        raise Refused(400, f"call must be one of {', '.join(CALLS)}")
    if not reason or len(reason) > 500:
        raise Refused(400, "reason is required (at most 500 characters)")
    if not reviewer or len(reviewer) > 40:
        raise Refused(400, "reviewer (name or initials) is required (at most 40 characters)")
    return {"call": call, "reason": reason, "reviewer": reviewer}


def _day(name: str) -> float | None:
    """A ``YYYY-MM-DD`` query parameter as the UTC start of that day, or None when absent."""
    text = request.args.get(name)
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise Refused(400, f"{name} must be a date like 2026-11-23") from None


def _download(body: str | bytes, mimetype: str, filename: str) -> Response:
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def make_blueprint(service: Service, api: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Blueprint:
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
        return jsonify({**result.to_dict(), "case_id": case_id, "case_code": case["code"]})

    @bp.post("/api/cases")
    @api
    def create_case():
        data = _json_body('{"code": "<lab number, or empty to generate one>", "note": "..."}')
        code, note = str(data.get("code") or "").strip(), str(data.get("note") or "").strip()
        if code and not CODE.match(code):
            raise Refused(400, "code: 1-40 letters, digits, spaces or . _ / - (a lab number; no patient names)")
        if len(note) > 500:
            raise Refused(400, "note: at most 500 characters")
        try:
            case = service.create_case(code, note, _client())
        except ValueError as exc:
            raise Refused(409, str(exc)) from None
        set_open_case(case["id"])
        return jsonify(existing_case(case["id"])), 201

    @bp.get("/api/cases")
    @api
    def list_cases():
        limit, offset, call = whole_number("limit", 20, 1, 200), whole_number("offset", 0, 0, 10**9), request.args.get("call", "")
        if call and call not in FILTER_CALLS:
            raise Refused(400, f"call must be one of {', '.join(FILTER_CALLS)}")
        cases, total = store.list_cases(limit, offset, call or None)
        active = open_case()
        for case in cases:
            case["active"] = case["id"] == active
            case["final_call"] = final_call(case["review"], case["call"])
        return jsonify({"cases": cases, "total": total, "limit": limit, "offset": offset, "active_case": active})

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>")
    @api
    def get_case(case_id: int):
        return jsonify(existing_case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/activate")
    @api
    def activate(case_id: int):
        existing_case(case_id)
        set_open_case(case_id)
        store.audit(_client(), "case.activate", after={"case_id": case_id})
        return jsonify(existing_case(case_id))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/classify")
    @api
    def classify_into(case_id: int):
        existing_case(case_id)
        frame, source = uploaded_frame(service.config.server.max_pixels)
        return analysed_into(case_id, service.analyze(frame, source=source, case_id=case_id, client=_client()))

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/capture")
    @api
    def capture_into(case_id: int):
        existing_case(case_id)
        return analysed_into(case_id, service.capture(case_id, client=_client()))

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/review")
    @api
    def review_result(result_id: int):
        if store.review_result(result_id, _review(), _client()) is None:
            raise Refused(404, f"no result {result_id}")
        return jsonify(store.get(result_id))

    @bp.post(f"/api/results/<int(max={MAX_ID}):result_id>/exclude")
    @api
    def exclude_result(result_id: int):
        reason = str(_json_body('{"reason": "..."}').get("reason", "")).strip()
        if not reason or len(reason) > 500:
            raise Refused(400, 'send JSON {"reason": "..."}: why the field is excluded (wrong slide, artefact)')
        if store.exclude_result(result_id, reason, _client()) is None:
            raise Refused(404, f"no result {result_id}")
        record = store.get(result_id)
        if record.get("case_id") is not None:
            service.refresh_case_call(record["case_id"])
        return jsonify(record)

    @bp.post(f"/api/cases/<int(max={MAX_ID}):case_id>/review")
    @api
    def review_case(case_id: int):
        if store.review_case(case_id, _review(), _client()) is None:
            raise Refused(404, f"no case {case_id}")
        return jsonify(existing_case(case_id))

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/report")
    @api
    def report(case_id: int):
        case = existing_case(case_id)
        thumbnails = {}
        for f in case["fields"]:
            path = store.file_path(f["id"], "overlay")
            if path is not None and path.exists():
                thumbnails[f["id"]] = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
        store.audit(_client(), "case.report", after={"case_id": case_id})
        return render_template("report.html", case=case, thumbnails=thumbnails, names=DISPLAY_NAMES,
                               disclaimer=DISCLAIMER, device=service.config.device_name,
                               printed=time.strftime("%Y-%m-%d %H:%M", time.localtime()))

    def export(fields: list[dict[str, Any]], cases: dict[int, dict[str, Any]], kind: str, name: str,
               case: dict[str, Any] | None = None) -> Response:
        """One case (``case``) or a date range of fields as CSV, JSON or (a case only) FHIR;
        the fields are marked exported and the export is audited."""
        store.mark_exported([f["id"] for f in fields], case["id"] if case else None, _client(),
                            kind if case else f"range {kind}")
        if kind == "fhir":
            return _download(fhir_bundle(case, fields, service.config.device_name), "application/fhir+json",
                             f"{name}.fhir")
        rows = case_rows(fields, cases)
        if kind == "csv":
            return _download(csv_text(rows), "text/csv", f"{name}.csv")
        body = {"case": {k: v for k, v in case.items() if k != "fields"}} if case else {}
        return _download(jsonify({**body, "fields": rows, "disclaimer": DISCLAIMER}).get_data(), "application/json",
                         f"{name}.json")

    @bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/<any(export.csv, export.json, fhir):what>")
    @api
    def export_case(case_id: int, what: str):
        case = existing_case(case_id)
        return export(case["fields"], {case_id: case}, what.rsplit(".", 1)[-1],
                      f"blastscope-case-{case['code'].replace('/', '-')}", case)

    @bp.get("/api/export.<any(csv, json):kind>")
    @api
    def export_range(kind: str):
        start = _day("from") or 0.0
        end = (_day("to") or time.time() - 86400) + 86400  # 'to' is inclusive
        fields = store.between(start, end)
        case_ids = {f["case_id"] for f in fields if f.get("case_id") is not None}
        cases = {i: c for i in case_ids if (c := store.get_case(i)) is not None}
        name = f"blastscope-{request.args.get('from') or 'start'}-to-{request.args.get('to') or 'today'}"
        return export(fields, cases, kind, name)

    return bp
