"""The case's report and the record's exports (CSV, JSON, FHIR), per case and per date range.

A module-level blueprint (Flask's tutorial): the service comes from ``current_app``. Every
export is marked and audited once it was built, never before (a failed one must not make its
fields first in line for retention).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterator, cast

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from edge.analysis.labels import CELL_NAMES, DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.device.service import Service
from edge.record.export import case_rows, csv_lines, csv_text, fhir_bundle
from edge.web.common import MAX_ID, Refused, client as _client, open_case
from edge.web.wording import local_minute

bp = Blueprint("reports", __name__)


def _service() -> Service:
    return cast(Service, current_app.extensions["blastscope.service"])


def _case(case_id: int) -> dict[str, Any]:
    case = _service().case(case_id)
    if case is None:
        raise Refused(404, f"no case {case_id}")
    case["active"] = case_id == open_case()
    return case


def _download(body: str | bytes, mimetype: str, filename: str) -> Response:
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _day(name: str) -> float | None:
    """A ``YYYY-MM-DD`` query parameter as the UTC start of that day, or None when absent."""
    from datetime import datetime, timezone

    text = request.args.get(name)
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise Refused(400, f"{name} must be a date like 2026-11-23") from None


def slide_map(fields: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report's slide map: a square per field a hands-free scan took, where the tracked
    stage was (centres, in frame pixels), numbered as the fields are listed, so a reviewer
    sees the fields came from different areas of the smear. None when no field has one."""
    placed = [(n, f["stage_position"]) for n, f in enumerate(fields, start=1) if f.get("stage_position")]
    if not placed:
        return None
    side = max(p[2] for _, p in placed)
    x0 = min(p[0] for _, p in placed) - side / 2
    y0 = min(p[1] for _, p in placed) - side / 2
    width = max(p[0] for _, p in placed) + side / 2 - x0
    height = max(p[1] for _, p in placed) + side / 2 - y0
    return {"view_box": f"{x0:.1f} {y0:.1f} {width:.1f} {height:.1f}", "stroke": round(max(width, height) / 150, 2),
            "font": round(side / 3, 1), "squares": [
                {"n": n, "x": round(p[0] - p[2] / 2, 1), "y": round(p[1] - p[2] / 2, 1), "side": round(p[2], 1),
                 "cx": round(p[0], 1), "cy": round(p[1], 1)} for n, p in placed]}

@bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/report")
def report(case_id: int):
    case = _case(case_id)
    thumbnails = {}
    for f in case["fields"]:
        path = _service().store.file_path(f["id"], "overlay")
        if path is not None and path.exists():
            thumbnails[f["id"]] = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
    _service().store.audit(_client(), "case.report", after={"case_id": case_id})
    return render_template("report.html", case=case, thumbnails=thumbnails, names=DISPLAY_NAMES, cell_names=CELL_NAMES,
                           slide_map=slide_map(case["fields"]),
                           disclaimer=DISCLAIMER, device=_service().config.device_name,
                           printed=local_minute(time.time()), audit_head=_service().store.audit_head())

@bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/report-pages.css")
def report_pages(case_id: int):
    """The case code on every printed page of the report: a page-margin box can only hold a
    stylesheet's string, and the page's CSP forbids inline style, so the string comes from
    here (the code is letters, digits and . _ / - by the create rule; quotes and
    backslashes are escaped all the same)."""
    code = _case(case_id)["code"].replace("\\", "\\\\").replace('"', '\\"')
    css = (f'@page {{ @top-left {{ content: "BlastScope case {code} \\00B7  screening aid, not a diagnosis"; '
           'font: 9pt system-ui, sans-serif; color: #333; } }\n')
    return Response(css, mimetype="text/css")

def export(fields: list[dict[str, Any]], cases: dict[int, dict[str, Any]], kind: str, name: str,
           case: dict[str, Any] | None = None) -> Response:
    """One case (``case``) or a date range of fields as CSV, JSON or (a case only) FHIR.
    The body is built first; only an export that was built is marked and audited (a failed
    one must not make its fields first in line for retention)."""
    if kind == "fhir":
        if case is None:
            raise Refused(400, "FHIR exports one case: export a case, not a date range, as FHIR")
        body: str | bytes = fhir_bundle(case, fields, _service().config.device_name)
        mimetype, suffix = "application/fhir+json", "fhir"
    else:
        rows = case_rows(fields, cases)
        if kind == "csv":
            body, mimetype, suffix = csv_text(rows), "text/csv", "csv"
        else:
            head = {"case": {k: v for k, v in case.items() if k != "fields"}} if case else {}
            body = jsonify({**head, "fields": rows, "disclaimer": DISCLAIMER}).get_data()
            mimetype, suffix = "application/json", "json"
    _service().store.mark_exported([f["id"] for f in fields], case["id"] if case else None, _client(),
                        kind if case else f"range {kind}")
    return _download(body, mimetype, f"{name}.{suffix}")

@bp.get(f"/api/cases/<int(max={MAX_ID}):case_id>/<any(export.csv, export.json, fhir):what>")
def export_case(case_id: int, what: str):
    case = _case(case_id)
    return export(case["fields"], {case_id: case}, what.rsplit(".", 1)[-1],
                  f"blastscope-case-{case['code'].replace('/', '-')}", case)

@bp.get("/api/export.<any(csv, json):kind>")
def export_range(kind: str):
    start = _day("from") or 0.0
    end = (_day("to") or time.time() - 86400) + 86400  # 'to' is inclusive
    if end <= start:
        raise Refused(400, "'to' is before 'from': give the first day first")
    name = f"blastscope-{request.args.get('from') or 'start'}-to-{request.args.get('to') or 'today'}"
    client = _client()  # the generator runs after the request context is gone
    store = _service().store
    cases: dict[int, dict[str, Any]] = {}

    def rows() -> Iterator[dict[str, Any]]:
        for f in store.iter_between(start, end):
            cid = f.get("case_id")
            if cid is not None and cid not in cases:
                cases[cid] = store.case_summary(cid) or {}
            exported.append(f["id"])
            yield case_rows([f], cases)[0]

    exported: list[int] = []

    def body() -> Iterator[str]:
        """Streamed a batch of records at a time (parallel range exports of a full device built
        whole held hundreds of MB: ``python -m tools.hardening`` measures it); marked and
        audited only once the last byte was produced, so an export
        that broke off (the phone left) does not make its fields first in line for retention."""
        if kind == "csv":
            yield from csv_lines(rows())
        else:
            yield '{"fields": ['
            for n, row in enumerate(rows()):
                yield ("," if n else "") + json.dumps(row)
            yield f'], "disclaimer": {json.dumps(DISCLAIMER)}}}'
        store.mark_exported(exported, None, client, f"range {kind}")

    mimetype = "text/csv" if kind == "csv" else "application/json"
    return Response(body(), mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{kind}"'})

