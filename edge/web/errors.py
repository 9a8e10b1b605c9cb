"""What the API answers when something goes wrong: every error a JSON body with the reason and
the status a client can act on (409 changed or locked, 503 busy or damaged with Retry-After
where waiting helps, 507 storage full), never a bare 500 or a traceback."""

from __future__ import annotations

import sqlite3

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from edge.analysis.imagefile import ImageRejected
from edge.device.analysis_queue import QueueFull, ShuttingDown
from edge.device.capture import CameraError
from edge.record.store import Locked, RecordDamaged, RecordError, Stale, StoreFull, is_full
from edge.web.common import Refused, json_error as _error


def register(app: Flask, max_upload_mb: float) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/") or request.path == "/healthz":
            reason = (exc.description or exc.name) if exc.code != 413 else (
                f"upload too large: the limit is {max_upload_mb:g} MB")
            return _error(exc.code or 500, reason)
        return exc

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull):
        return _error(507, str(exc))

    @app.errorhandler(RecordDamaged)
    def record_damaged(exc: RecordDamaged):
        response, status = _error(503, str(exc))
        return response, status

    @app.errorhandler(RecordError)
    def record_error(exc: RecordError):
        app.logger.error("record: %s", exc)
        return _error(500, str(exc))

    @app.errorhandler(sqlite3.Error)
    @app.errorhandler(OSError)
    def storage_error(exc: Exception):
        """A review, a sign-out, a login... that could not be written: 507 with words when the
        storage is full (only ENOSPC, EDQUOT, SQLITE_FULL), else 500 naming what failed."""
        if is_full(exc):
            return _error(507, "storage full: nothing was changed. Free space on the device (or export and "
                               "archive results) to continue")
        app.logger.exception("storage error")
        return _error(500, f"the record could not be read or written: {type(exc).__name__}: {exc}")

    @app.errorhandler(Stale)
    @app.errorhandler(Locked)
    def conflict(exc: Stale | Locked):
        return _error(409, str(exc))

    @app.errorhandler(Refused)
    @app.errorhandler(ImageRejected)
    def refused(exc: Refused | ImageRejected):
        return _error(exc.status, exc.reason)

    @app.errorhandler(QueueFull)
    @app.errorhandler(ShuttingDown)
    def busy(exc: QueueFull | ShuttingDown):
        response, status = _error(503, str(exc))
        response.headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
        return response, status

    @app.errorhandler(CameraError)
    def camera_unavailable(exc: CameraError):
        return _error(503, f"camera unavailable: {exc}")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}")
