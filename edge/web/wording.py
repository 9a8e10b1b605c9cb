"""How the page and the report word numbers, times and sources, so that both say the same
thing: a calibrated probability is never shown as certainty (">99%", never "1.00"), times are
the device's local time to the minute, and a field's source is what the person did (camera or
an uploaded file's name), never the device's internal path."""

from __future__ import annotations

import time
from pathlib import PurePath

from flask import Flask


def percent(p: float | None) -> str:
    """The page's ``percent()`` in app.js, for the report."""
    if p is None:
        return "n/a"
    if p >= 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{100 * p:.0f}%"


def local_minute(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "time not recorded"


def source_words(source: str | None) -> str:
    if source and source.startswith("upload:"):
        return f"uploaded file {PurePath(source[len('upload:'):]).name}"
    # a camera's spec may name a replayed folder on the device: the reader needs only "camera"
    return "camera, hands-free scan" if source and source.endswith("(scan)") else "camera"


def register(app: Flask) -> None:
    app.add_template_filter(percent, "percent")
    app.add_template_filter(local_minute, "local_minute")
    app.add_template_filter(source_words, "source_words")
