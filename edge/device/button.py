"""An optional push button on the Pi's GPIO (gpiozero): a press analyses the current field,
so a technician with both hands on the microscope need not touch the phone.

A button has no phone, and a phone's request names its case: a field must never land in a
case nobody chose for it. So the button analyses into the case a phone *armed* it for (the
page's "Use the Pi's button for this case"), and into nothing when none is armed; arming
another case, signing the armed case out or disarming ends it, and the page and the status
say which case the button feeds and who armed it. A press while the previous one is still
being analysed is counted and dropped, never queued (a queued press would take a field the
technician is no longer looking at).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import Field

from edge.settings import Float, Int, Settings

log = logging.getLogger("blastscope.button")


class ButtonConfig(Settings):
    #: BCM number of the GPIO pin a push button connects to ground (internal pull-up);
    #: empty: no button.
    gpio: Annotated[Int, Field(ge=0, le=27)] | None = None
    bounce_seconds: Annotated[Float, Field(ge=0, le=1)] = 0.05


@dataclass(frozen=True)
class Armed:
    case_id: int
    by: str  # the user and address that armed it


class ShutterButton:
    """The GPIO button, through gpiozero (imported only when a pin is set: it is on Raspberry
    Pi OS, not on every machine). ``pin_factory`` is for tests (gpiozero's MockFactory
    stands in for the Pi's pins, which do not exist here)."""

    def __init__(self, config: ButtonConfig, press: Callable[[], None], pin_factory: Any = None) -> None:
        from gpiozero import Button

        assert config.gpio is not None
        self.gpio = config.gpio
        self._button = Button(config.gpio, pull_up=True, bounce_time=config.bounce_seconds or None,
                              pin_factory=pin_factory)
        self._button.when_pressed = press

    def close(self) -> None:
        self._button.close()


class ButtonTarget:
    """Which case the button feeds, and what its presses came to (for the status page)."""

    def __init__(self, analyse: Callable[[Armed], str]) -> None:
        self._analyse = analyse
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self.armed: Armed | None = None
        self.presses = 0
        self.dropped = 0
        self.last: str | None = None  # what the last press did, in words

    def arm(self, case_id: int, by: str) -> Armed:
        with self._lock:
            self.armed = Armed(case_id, by)
            return self.armed

    def disarm(self, case_id: int | None = None) -> None:
        """Disarm (only if it feeds ``case_id``, when given)."""
        with self._lock:
            if self.armed is not None and (case_id is None or self.armed.case_id == case_id):
                self.armed = None

    def press(self) -> None:
        """A press: analyse into the armed case, unless none is armed or one is under way."""
        with self._lock:
            self.presses += 1
            armed = self.armed
            if armed is None:
                self.last = "pressed with no case armed: nothing analysed (arm the button from a phone's case)"
                log.info("button pressed with no case armed")
                return
            if not self._busy.acquire(blocking=False):
                self.dropped += 1
                self.last = "pressed while the previous field was being analysed: ignored"
                return
        try:
            self.last = self._analyse(armed)
        except Exception as exc:  # noqa: BLE001 - a press must never kill gpiozero's thread
            self.last = f"pressed: not analysed: {exc}"
            log.warning("button press: %s", exc)
        finally:
            self._busy.release()

    def status(self) -> dict[str, object]:
        armed = self.armed
        return {"armed_case_id": armed.case_id if armed else None, "armed_by": armed.by if armed else None,
                "presses": self.presses, "dropped": self.dropped, "last": self.last}
