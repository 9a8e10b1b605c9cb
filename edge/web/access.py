"""Who may use each route: one table, read by one check before every request.

The roles were decorators scattered over the routes, so a route that lost its decorator (the
exclude route once did: a technician could exclude fields and change a case's call) lost its
rule silently. Here every endpoint has one row; the app's ``before_request`` hook reads it
for every request, and an endpoint with no row is refused (fail closed), so a new route
cannot be reachable before someone decides who may use it. ``tests/web/test_access_matrix.py``
walks the URL map against this table for each role.

Levels: ``public`` (no login: the health probe, the login form, static files), ``user``
(any logged-in user or the API token), then the roles of ``edge.web.users.ROLES``, which nest.
The page (``index``) and logout are public because they answer an anonymous visitor
themselves (a redirect to the login form; a logout without a session is a no-op).
"""

from __future__ import annotations

from typing import Final

PUBLIC: Final = "public"
USER: Final = "user"

ACCESS: dict[str, str] = {
    # the app (edge/web/__init__.py)
    "healthz": PUBLIC, "login_page": PUBLIC, "login": PUBLIC, "logout": PUBLIC, "index": PUBLIC, "static": PUBLIC,
    "status": USER, "metrics": USER, "me": USER, "results": USER, "result": USER, "result_file": USER,
    "preview": USER, "live": USER,
    "classify": "technician", "capture": "technician",
    "audit_log": "reviewer",
    # users (edge/web/user_routes.py)
    "users.list_users": "admin", "users.add_user": "admin", "users.change_user": "admin",
    # the device's clock (edge/web/clock_routes.py)
    "clock.set_clock": "admin",
    # cases (edge/web/cases.py)
    "cases.list_cases": USER, "cases.get_case": USER, "cases.case_cells": USER, "cases.cell_image": USER,
    "cases.scan_status": USER,
    "cases.create_case": "technician", "cases.activate": "technician", "cases.classify_into": "technician",
    "cases.capture_into": "technician", "cases.scan_case": "technician", "cases.button_case": "technician",
    # a technician may count a field stored as a repeat; the route itself keeps a reviewer's
    # exclusion for a reviewer to undo
    "cases.include_result": "technician",
    "cases.review_result": "reviewer", "cases.exclude_result": "reviewer", "cases.review_case": "reviewer",
    "cases.review_cell": "reviewer", "cases.sign_case": "reviewer", "cases.amend_case": "reviewer",
    "cases.second_read": "reviewer",
    # reports and exports (edge/web/reports.py)
    "reports.report": USER, "reports.report_pages": USER, "reports.export_case": USER, "reports.export_range": USER,
    # site verification (edge/web/verification.py)
    "verification.list_verifications": USER, "verification.get_verification": USER, "verification.report": USER,
    "verification.export": USER,
    "verification.add_slide": "technician", "verification.slide_done": "technician",
    "verification.start_verification": "admin", "verification.finish": "admin", "verification.abandon": "admin",
    "verification.list_references": USER, "verification.propose_reference": "admin",
    "verification.accept_reference": "admin",
}


def required(endpoint: str | None) -> str | None:
    """The level an endpoint needs; None for an endpoint with no row (to be refused)."""
    return ACCESS.get(endpoint or "")
