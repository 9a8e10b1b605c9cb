"""An admin sets the device's clock to the phone's (issue 36 item 7; ``edge.device.clock``).

The page sends the phone's time and the device time it last read (the form carries what it was
opened with): when the device's clock moved since, someone else set it or the page is stale, and
the request is refused rather than set on old information. A time before the newest field in
the record is refused unless confirmed: it would file new fields before older ones. Audited."""

from __future__ import annotations

import math
import time
from typing import cast

from flask import Blueprint, current_app, jsonify, request

from edge.device.clock import EARLIEST, MAX_AGE_S, ClockError, set_system_clock
from edge.device.service import Service
from edge.web.common import Refused, client

bp = Blueprint("clock", __name__)

#: Closer than this the clocks agree: nothing is set.
AGREE_S = 5.0


def _number(data: dict, key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Refused(400, f'send JSON {{"now": <the phone\'s time, seconds since 1970>, "device_now": <the device '
                           f'time the page last read>}}: {key} is missing or not a number')
    return float(value)


@bp.post("/api/clock")
def set_clock():
    service = cast(Service, current_app.extensions["blastscope.service"])
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused(400, 'send JSON {"now": <the phone\'s time, seconds since 1970>, "device_now": <the device time '
                           'the page last read>}')
    phone, seen = _number(data, "now"), _number(data, "device_now")
    before = time.time()
    if phone < EARLIEST:
        raise Refused(400, "the phone's own clock is not set (it says "
                           f"{time.strftime('%Y-%m-%d', time.gmtime(max(phone, 0)))}): set the phone's time first")
    if abs(before - seen) > MAX_AGE_S:
        raise Refused(409, "the device's clock changed since this page read it, or the page is stale: reload the page "
                           "and check the time again")
    if abs(phone - before) < AGREE_S:
        return jsonify({"set": False, "device_now": before, "reason": "the device's clock already agrees with the phone"})
    newest = service.store.newest_created()
    if newest is not None and phone < newest and data.get("confirm") is not True:
        raise Refused(409, f"the newest field in the record is dated "
                           f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(newest))}, after the phone's time: fields "
                           "read from now on would be filed before it. Check the phone's time; send confirm: true "
                           "to set it anyway")
    try:
        set_system_clock(phone, service.config.clock)
    except ClockError as exc:
        raise Refused(503, f"the device's clock was not set: {exc}") from None
    after = time.time()
    service.store.audit(client(), "clock.set", before={"device_time": round(before, 1)},
                        after={"device_time": round(after, 1), "phone_time": round(phone, 1)})
    return jsonify({"set": True, "device_now": after, "was": before})
