"""Exports of the record: one row per field (CSV, JSON) and a FHIR Bundle per case.

The FHIR Bundle (type ``collection``) holds one ``DiagnosticReport`` for the case and one
``Observation`` per field, built and validated with ``fhir.resources`` (its R4B models,
FHIR 4.3, which for these three resources are wire-compatible with R4) rather than written
by hand. A field's observation carries the label the page showed, the malignant probability,
the source and, when reviewed, the clinician's call; the model's output is never replaced.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any, Iterable, Iterator

from edge.analysis.case import differential, final_call
from edge.analysis.labels import CELL_NAMES, DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.analysis.verification import NOT_VERIFIED

COLUMNS = ["case_code", "case_call", "case_review_call", "case_final_call", "case_signed_by", "case_signed_at_utc",
           "case_signed_reason", "case_version", "case_amended_by", "case_amended_at_utc", "case_amendment_reason",
           "result_id", "created_utc", "source", "status", "label",
           "label_name", "call", "call_reason", "malignant_probability", "reasons", "excluded_reason", "review_call", "review_reason",
           "reviewer", "model_id", "white_cells", "blasts", "blast_share", "differential", "unfamiliar_cells",
           "site_verification"]


def _iso(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _case_columns(case: dict[str, Any]) -> dict[str, Any]:
    """The case's standing in every row of its fields: the model's call, the review's, the call
    that stands (sign-out over review over model, as on the page), who signed it out, when and
    why, its version and its latest amendment. A case the model called positive and a reviewer
    signed out negative must say negative somewhere in a CSV, not only in the JSON and FHIR."""
    review, signed = case.get("review") or {}, case.get("signed") or {}
    amendment = (case.get("amendments") or [{}])[-1]
    return {
        "case_code": case.get("code", ""), "case_call": case.get("call", ""),
        "case_review_call": review.get("call", ""),
        "case_final_call": (final_call(signed or review or None, case.get("call")) or "") if case else "",
        "case_signed_by": signed.get("reviewer", ""), "case_signed_at_utc": _iso(signed.get("at")),
        "case_signed_reason": signed.get("reason", ""), "case_version": case.get("version", ""),
        "case_amended_by": amendment.get("by", ""), "case_amended_at_utc": _iso(amendment.get("at")),
        "case_amendment_reason": amendment.get("reason", ""),
    }


def case_rows(fields: list[dict[str, Any]], cases: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per field, with its case's code, calls, sign-out and amendment."""
    rows = []
    for f in fields:
        case = cases.get(f["case_id"]) if f.get("case_id") is not None else None
        case = case or {}
        review, excluded = f.get("review") or {}, f.get("excluded") or {}
        rows.append({
            **_case_columns(case),
            "result_id": f["id"], "created_utc": _iso(f.get("created")), "source": f.get("source", ""),
            "status": f.get("status", ""), "label": f.get("label") or "",
            "label_name": DISPLAY_NAMES.get(f.get("label") or "", f.get("label") or ""), "call": f.get("call") or "",
            "call_reason": f.get("call_reason") or "",  # why a field was held back (too few white cells)
            "malignant_probability": "" if f.get("malignant_probability") is None else round(f["malignant_probability"], 4),
            "reasons": "; ".join(f.get("reasons") or []), "excluded_reason": excluded.get("reason", ""),
            "review_call": review.get("call", ""), "review_reason": review.get("reason", ""),
            "reviewer": review.get("reviewer", ""), "model_id": f.get("model_id", ""),
            # a cell bundle's count per field; empty for a field bundle or a rejected field
            "white_cells": f.get("white_cells", ""), "blasts": f.get("blasts", ""),
            "blast_share": round(f["blasts"] / f["white_cells"], 4) if f.get("white_cells") else "",
            # the field's white cells by class ("pre_b 3; neutrophil 1"), the reviewers' classes in place
            "differential": "; ".join(f"{k} {v}" for k, v in differential([f], reviewed=True).items()),
            "unfamiliar_cells": f.get("unfamiliar_cells", ""),
            # as stored with the field when it was read (fields from before 0.4 carry none)
            "site_verification": f.get("site_verification") or NOT_VERIFIED,
        })
    return rows


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV header, then one line per row, as they come (a range export streams them)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    yield out.getvalue()
    for row in rows:  # a cell starting with = + - @ is text, never a spreadsheet formula
        out.seek(0)
        out.truncate()
        writer.writerow({k: ("'" + v if isinstance(v, str) and v and v[0] in "=+-@" else v) for k, v in row.items()})
        yield out.getvalue()


def csv_text(rows: list[dict[str, Any]]) -> str:
    return "".join(csv_lines(rows))


def _observation(f: dict[str, Any], device: str, status: str) -> dict[str, Any]:
    review = f.get("review") or {}
    shown = DISPLAY_NAMES.get(f.get("label") or "", "Not classified" if f.get("status") != "classified" else "Uncertain")
    notes = [f"Source: {f.get('source', '')}. Model {f.get('model_id', '')} on {device}, "
             f"{f.get('site_verification') or NOT_VERIFIED}."]
    if f.get("reasons"):
        notes.append("Not classified: " + "; ".join(f["reasons"]))
    if f.get("call_reason"):
        notes.append(f"Uncertain: {f['call_reason']}")
    if f.get("excluded"):
        notes.append(f"Excluded from the case: {f['excluded'].get('reason', '')}")
    if review:
        notes.append(f"Reviewed by {review.get('reviewer')}: {review.get('call')} ({review.get('reason')})")
    if counts := differential([f], reviewed=True):
        notes.append("White cells by class: " + ", ".join(f"{CELL_NAMES.get(k, k)} {v}" for k, v in counts.items()))
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "code": {"text": "Peripheral blood smear field, B-ALL screening (BlastScope)"},
        "effectiveDateTime": _iso(f.get("created")),
        "valueCodeableConcept": {"text": shown},
        "interpretation": [{"text": f"screening call: {f.get('call') or 'none'}"}],
        "note": [{"text": n} for n in notes],
    }
    components = []
    if f.get("malignant_probability") is not None:
        components.append({"code": {"text": "malignant probability (calibrated)"},
                           "valueQuantity": {"value": round(float(f["malignant_probability"]), 4), "unit": "1"}})
    for key, text in (("white_cells", "white cells recognised"), ("blasts", "blasts among them (model)"),
                      ("unfamiliar_cells", "cells not recognised (out of distribution)")):
        if f.get(key) is not None:
            components.append({"code": {"text": text}, "valueQuantity": {"value": int(f[key]), "unit": "{cells}"}})
    if components:
        obs["component"] = components
    return obs


def fhir_bundle(case: dict[str, Any], fields: list[dict[str, Any]], device: str) -> str:
    """A validated FHIR Bundle (JSON text) with the case's DiagnosticReport and field Observations."""
    from fhir.resources.R4B.bundle import Bundle

    urls = {f["id"]: f"urn:uuid:{uuid.uuid4()}" for f in fields}
    review = case.get("review") or {}
    call = case.get("case_call") or {}
    cells = f"White cells: {call['cells']['text']}. " if call.get("cells") else ""
    if (call.get("cells") or {}).get("differential"):
        cells += "Differential (model): " + ", ".join(f"{CELL_NAMES.get(k, k)} {v}"
                                                       for k, v in call["cells"]["differential"].items()) + ". "
    if (call.get("cells") or {}).get("reviewed_text"):
        cells += f"{call['cells']['reviewed_text'].capitalize()}. "
    signed = case.get("signed") or {}
    # final only once a reviewer signed the case out (a review alone may still change);
    # "amended" when the sign-out is a later version than the first
    status = ("amended" if case.get("amendments") else "final") if signed else "preliminary"
    conclusion = (f"Case call {call.get('call', case.get('call'))}: {call.get('next_step', '')} " + cells
                  + (f"Reviewed by {review.get('reviewer')}: {review.get('call')} ({review.get('reason')}). "
                     if review else "Not reviewed yet. ")
                  + (f"Signed out by {signed.get('reviewer')}: {signed.get('call')} ({signed.get('reason')}). "
                     if signed else "Not signed out: this report may change. ")
                  + f"Device {case.get('site_verification') or NOT_VERIFIED}. " + DISCLAIMER)
    report = {
        "resourceType": "DiagnosticReport",
        "status": status,
        "code": {"text": "B-ALL peripheral blood smear screening (BlastScope screening aid)"},
        "identifier": [{"system": "urn:blastscope:case-code", "value": case["code"]}],
        "effectiveDateTime": _iso(case.get("created")),
        "issued": _iso(time.time()).replace("Z", "+00:00"),
        "result": [{"reference": urls[f["id"]]} for f in fields],
        "conclusion": conclusion.strip(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _iso(time.time()).replace("Z", "+00:00"),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": report}]
        + [{"fullUrl": urls[f["id"]], "resource": _observation(f, device, "final" if signed else "preliminary")} for f in fields],
    }
    return Bundle.model_validate(bundle).model_dump_json(indent=2)
