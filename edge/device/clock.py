"""Setting the device's clock from a phone (issue 36 item 7).

A Pi has no real-time clock and a clinic LAN no time server: a Pi that boots without the time
dates cases in the past. The phone in the technician's hand has the right time, so an admin sets
the device's clock to it from the page. The daemon cannot set the clock itself (its unit has
``ProtectClock=true`` and no capabilities); it asks systemd-timedated over D-Bus through
``timedatectl set-time``, which polkit allows for the ``blastscope`` user alone
(``deploy/50-blastscope-clock.rules``, installed by ``deploy/install.sh``). The command is a
setting so a test can stand in for the system clock, which a test must never change.
"""

from __future__ import annotations

import subprocess
import time
from typing import Annotated

from pydantic import Field

from edge.settings import Settings

#: Times before this are not a phone's clock (a phone that lost its own time says 1970 or 2000).
EARLIEST = time.mktime((2025, 1, 1, 0, 0, 0, 0, 0, -1))
#: A time set from the page must be within this of the phone's request arriving: a form left open
#: for an hour must not set the clock an hour back.
MAX_AGE_S = 120.0


class ClockConfig(Settings):
    # the command that sets the system clock; the time is appended as "@<seconds since the epoch>"
    set_command: tuple[str, ...] = ("timedatectl", "set-time")
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class ClockError(RuntimeError):
    """The system refused to set the time; the message says what it said."""


def set_system_clock(epoch_s: float, cfg: ClockConfig) -> None:
    """Set the system clock to ``epoch_s`` through ``cfg.set_command``; raises ``ClockError``
    with the command's own words when it fails (polkit refused, NTP on, no timedated)."""
    command = [*cfg.set_command, f"@{int(round(epoch_s))}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=cfg.timeout_seconds, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClockError(f"{command[0]} could not be run: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise ClockError(f"{command[0]} refused (exit {done.returncode}): {said[-1] if said else 'no message'}")
