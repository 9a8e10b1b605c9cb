"""The running device: camera, pipeline and store wired together, plus the figures that
tell an operator what is wrong (``/api/status``)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

import cv2
import numpy as np

import edge
from edge.model.bundle import Bundle
from edge.device.capture import CameraError, CameraWorker
from edge.device.analysis_queue import AnalysisQueue
from edge.device.button import Armed, ButtonTarget, ShutterButton
from edge.device.live import LiveView, ScanLook
from edge.device.scan import ScanSession, Scanner
from edge.device.district import DistrictSender
from edge.device.verification import SiteState, SiteVerification
from edge.analysis.case import CaseCall, case_call, final_call
from edge.analysis.verification import NOT_VERIFIED
from edge.device.config import Config
from edge.pipeline import Pipeline
from edge.analysis.result import Result
from edge.model.signing import key_id
from edge.record.store import Store


class Stats:
    """Running means per stage and a one-minute window of analysed fields."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stage_totals: dict[str, list[float]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[float] = collections.deque(maxlen=1000)

    def record(self, result: Result, store_ms: float) -> None:
        with self._lock:
            for stage, ms in {**result.timings_ms, "store": store_ms}.items():
                total = self.stage_totals.setdefault(stage, [0, 0.0])
                total[0] += 1
                total[1] += ms
            self.counts[result.status] += 1
            for reason in result.reasons:  # the reason's name, before its figures and advice
                self.reasons[reason.split(":")[0].strip()] += 1
            self.recent.append(time.monotonic())

    def totals(self) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[int, float]]]:
        """Counts by status, rejections by reason, and (count, total ms) per stage, for /metrics."""
        with self._lock:
            return (dict(self.counts), dict(self.reasons),
                    {k: (int(v[0]), float(v[1])) for k, v in self.stage_totals.items()})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            last_minute = sum(1 for t in self.recent if now - t <= 60)
            return {
                "fields": sum(self.counts.values()),
                "classified": self.counts["classified"],
                "rejected": self.counts["rejected"],
                "fields_per_minute": last_minute,
                "mean_latency_ms": {k: round(v[1] / v[0], 3) for k, v in self.stage_totals.items() if v[0]},
            }



def _case_site_text(fields: list[dict[str, Any]], now: Callable[[], str]) -> str:
    """What a case's report and exports say of site verification: the text stored with its
    fields when they were read (any field read unverified makes the case unverified), or the
    device's state now for a case with no field yet."""
    texts = {f.get("site_verification") or NOT_VERIFIED for f in fields}
    if not texts:
        return now()
    return NOT_VERIFIED if NOT_VERIFIED in texts else sorted(texts)[-1]


class ScanBusy(RuntimeError):
    """The camera is already scanning another case."""

class Service:
    def __init__(self, config: Config, bundle: Bundle, pipeline: Pipeline, store: Store,
                 camera: CameraWorker | None, model_notes: list[str] | None = None) -> None:
        self.config, self.bundle, self.pipeline, self.store, self.camera = config, bundle, pipeline, store, camera
        #: Why the daemon runs a model other than the installed ``current`` (``startup_bundle``).
        self.model_notes = list(model_notes or [])
        self.stats = Stats()
        self.started = time.time()
        self.stopping = threading.Event()  # set at SIGTERM: new requests are refused while others finish
        #: Every analysis, whoever asks, runs through this one bounded queue (issue 35).
        self.analyses = AnalysisQueue(config.queue)
        self._health: tuple[float, dict[str, Any]] | None = None
        self._health_lock = threading.Lock()
        self.scan: ScanSession | None = None  # the hands-free scan under way (one camera: one at a time)
        self._scan_lock = threading.Lock()
        self.site = SiteVerification(store, bundle.model_id, config.camera)
        self.apply_site_reference()
        #: the district's DICOM server (issue 37): None when [district] url is not set
        self.district = (DistrictSender(config.district, store, config.device_name, bundle.model_id,
                                        lambda case_id: (self.case(case_id) or {}).get("final_call"))
                         if config.district.url else None)
        self.button_target = ButtonTarget(self._button_field)
        self.button: ShutterButton | None = None  # the GPIO button, when one is set and gpiozero is there
        self.button_error: str | None = None  # why a configured button is not working
        self.live = (LiveView(camera, config.live, look=self._scan_look, stopping=self.stopping.is_set)
                     if camera is not None else None)

    def start_button(self, pin_factory: Any = None) -> None:
        """Watch the GPIO button when ``button.gpio`` is set (``edge.device.button``); a missing
        gpiozero or pin is a degraded reason, never a failed start."""
        if self.config.button.gpio is None:
            return
        try:
            self.button = ShutterButton(self.config.button, self.button_target.press, pin_factory)
        except Exception as exc:  # noqa: BLE001 - ImportError, or whatever gpiozero raises for the pin
            self.button_error = (f"the GPIO button on pin {self.config.button.gpio} is not working: "
                                 f"{type(exc).__name__}: {exc} (apt install python3-gpiozero)")

    def _button_field(self, armed: Armed) -> str:
        """One press: a field into the case a phone armed the button for, if it still takes fields."""
        case = self.store.get_case(armed.case_id)
        if case is None or case["signed"]:
            self.button_target.disarm(armed.case_id)
            return f"pressed: case #{armed.case_id} {'is signed out' if case else 'is gone'}; the button is disarmed"
        result = self.capture(armed.case_id, client=f"GPIO button (armed by {armed.by})", wait=True)
        what = result.screening.label if result.screening is not None and result.classified else "not classified"
        return f"field #{result.id} analysed into case {case['code']} ({what})"

    def _scan_look(self) -> ScanLook | None:
        """The running scan's state for the live view (None when nothing is scanned)."""
        scan = self.scan
        if scan is None or not scan.running or scan.last is None:
            return None
        return ScanLook(scan.last.state, scan.last.reason)

    def analyze(self, frame: np.ndarray, source: str, case_id: int | None = None, client: str = "device",
                stage_position: tuple[float, float, float] | None = None) -> Result:
        """Run the pipeline on a frame and store the result (classified or rejected) in
        ``case_id``, or in no case when it is None. There is no device-wide "active case" to
        fall back on: several phones share one device, and a field must land only in the case
        the request names. Raises ``StoreFull`` before any work when the record has no room left."""
        self.store.ensure_space()
        result = self.pipeline.process(frame, source=source)
        result.site_verification = self.site.state().text
        result.stage_position = stage_position
        start = time.perf_counter()
        self.store.save(result, case_id, client)
        store_ms = (time.perf_counter() - start) * 1000.0
        result.timings_ms["store"] = store_ms
        self.stats.record(result, store_ms)
        if case_id is not None:
            self.refresh_case_call(case_id)
        return result

    def capture(self, case_id: int | None = None, client: str = "device", wait: bool = False) -> Result:
        if self.camera is None:
            raise CameraError("no camera source is configured")
        frame = self.camera.latest()
        return self.queued(frame, source=self.camera.spec, case_id=case_id, client=client, wait=wait)

    def queued(self, frame: np.ndarray, source: str, case_id: int | None = None, client: str = "device",
               stage_position: tuple[float, float, float] | None = None, wait: bool = False) -> Result:
        """``analyze`` through the bounded queue: ``QueueFull`` at once when it is full (a
        request's 503), or with ``wait`` a wait for a place (the scan and the button)."""
        return self.analyses.run(lambda: self.analyze(frame, source, case_id, client, stage_position), wait=wait)

    # -- hands-free scanning ----------------------------------------------------------------

    def start_scan(self, case_id: int, client: str) -> ScanSession:
        """Scan ``case_id`` hands-free until its case rule has the fields it needs. Raises
        ``CameraError`` without a camera and ``ScanBusy`` while another case is being scanned."""
        if self.camera is None:
            raise CameraError("no camera source is configured")
        camera = self.camera
        with self._scan_lock:
            if self.scan is not None and self.scan.running:
                if self.scan.case_id == case_id:
                    return self.scan
                raise ScanBusy(f"case #{self.scan.case_id} is being scanned (started by {self.scan.client}): "
                               "stop that scan first; the device has one camera")

            def done() -> str | None:
                case = self.case(case_id)
                call = (case or {}).get("case_call") or {}
                if call and call.get("fields_needed") == 0 and call.get("call") != "pending":
                    return f"enough fields: case called {call['call']}"
                return None

            self.scan = ScanSession(
                case_id, client, Scanner(self.config.scan, self.pipeline.limits, self.pipeline.field_side), camera,
                analyze=lambda frame, where: self.queued(frame, source=f"{camera.spec} (scan)", case_id=case_id,
                                                         client=client, stage_position=where, wait=True),
                done=done).start()
            return self.scan

    def stop_scan(self, case_id: int) -> ScanSession | None:
        session = self.scan
        if session is None or session.case_id != case_id:
            return None
        session.stop()
        return session

    # -- cases ----------------------------------------------------------------------------

    def case_call(self, fields: list[dict[str, Any]]) -> CaseCall | None:
        rule = self.bundle.case_rule
        return None if rule is None else case_call(fields, rule, self.config.cases.min_fields)

    def refresh_case_call(self, case_id: int) -> None:
        case = self.store.get_case(case_id)
        if case is not None and (call := self.case_call(case["fields"])) is not None:
            self.store.set_case_call(case_id, call.call)

    def create_case(self, code: str, note: str, client: str) -> dict[str, Any]:
        """A new case (the phone that made it opens it; see ``edge.web``)."""
        case_id = self.store.create_case(code, note, client)
        case = self.case(case_id)
        assert case is not None  # made under this call; retention never removes a case not signed out
        return case

    def case(self, case_id: int) -> dict[str, Any] | None:
        """A case with its fields, counts, the model's call, the review and the final call."""
        case = self.store.get_case(case_id)
        if case is None:
            return None
        call = self.case_call(case["fields"])
        case["case_call"] = call.to_dict() if call else None
        # a sign-out's call stands above a review's, which stands above the model's
        case["final_call"] = final_call(case["signed"] or case["review"], call.call if call else case["call"])
        case["model_id"] = self.bundle.model_id
        parcel = self.store.outbox.get(case_id)
        case["district"] = None if parcel is None else parcel.to_dict()
        # the district's second reads: an addendum by a named remote reader, beside the sign-out
        reads = case["second_reads"] = self.store.second_reads.for_case(case_id)
        case["second_read_differs"] = bool(reads) and reads[-1]["call"] != case["final_call"]
        case["site_verification"] = _case_site_text([f for f in case["fields"] if not f.get("excluded")],
                                                    lambda: self.site.state().text)
        armed = self.button_target.armed
        case["button"] = {"armed_by": armed.by} if armed is not None and armed.case_id == case_id else None
        slide = self.site.record.slide_of_case(case_id)
        # a known slide of a verification: its truth stays hidden until the slide is done
        case["verification_slide"] = None if slide is None else {
            "verification_id": slide[0], "done": slide[1].done, "call": slide[1].call,
            "truth": slide[1].truth if slide[1].done else None, "kind": slide[1].kind if slide[1].done else None,
            "agrees": slide[1].agrees}
        return case

    def preview_jpeg(self, max_side: int = 640) -> bytes:
        if self.camera is None:
            raise CameraError("no camera source is configured")
        frame = self.camera.latest()
        scale = max_side / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
        return data.tobytes()

    #: An inference running longer than this is hung (an Edge TPU invoke takes milliseconds).
    INFERENCE_STALL_S = 30.0

    def apply_site_reference(self) -> None:
        """Read fields with the site reference in force (``SiteVerification.active_reference``), or
        none: the pipeline is rebuilt on the same backends."""
        active = self.site.active_reference()
        self.pipeline = Pipeline(self.bundle, self.pipeline.backends, self.config.quality,
                                 None if active is None else active.reference, views=self.config.inference.views)

    #: How far the clock may lag the newest field before it is called wrong (a field read a
    #: moment ago on another thread's clock is not a wrong clock).
    CLOCK_SLACK_S = 300.0

    def clock_behind(self) -> str | None:
        """Why the device clock is wrong, or None: it is behind the newest field in the record, so
        it was set back or started without the time (a Pi has no real-time clock and a clinic LAN
        no time server). New fields would be dated before older ones and missed by a "today"
        export (issue 36)."""
        newest = self.store.newest_created()
        now = time.time()
        if newest is None or newest <= now + self.CLOCK_SLACK_S:
            return None
        now_text, newest_text = (time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (now, newest))
        return (f"the device clock says {now_text}, before the newest field in the record ({newest_text}): "
                "the clock was set back or lost its time; an admin sets it (sudo date -s 'YYYY-MM-DD HH:MM', or "
                "timedatectl set-time) before more fields are read, so cases keep their dates and order")

    def stalled(self) -> str | None:
        """Why the pipeline is not making progress, or None. Only then does the watchdog stop
        pinging, so systemd restarts a daemon that hangs, not one that is merely degraded."""
        busy = self.pipeline.backends.busy_since
        if busy is not None and time.monotonic() - busy > self.INFERENCE_STALL_S:
            return f"an inference has not finished for {time.monotonic() - busy:.0f} s"
        if self.camera is not None and not self.camera.alive():
            return "the camera thread has stopped"
        return None

    def degraded_reasons(self, site: SiteState | None = None) -> list[str]:
        """Why the device is degraded (empty: it is not). ``site``: the verification state when
        the caller has it already (status() reports it too; it costs a few queries)."""
        reasons = []
        if backend := self.pipeline.backends.degraded:
            reasons.append(backend)
        if self.camera is not None and not self.camera.state.connected:
            reasons.append(f"camera {self.camera.spec} not delivering frames: {self.camera.state.error or 'starting'}")
        cam = self.config.camera
        if self.camera is not None and cam.source == "picamera2" and (cam.exposure_time_us is None or cam.colour_gains is None):
            reasons.append("the camera's exposure and white balance are automatic and change from field to field: "
                           "put a blank area of a slide under the objective and run "
                           "sudo blastscope-edge camera calibrate --write")
        free, floor = self.store.free_mb(), self.config.store.min_free_mb
        if free < floor:
            reasons.append(f"storage full: {free:.0f} MB free, below the {floor:.0f} MB floor; new fields are refused "
                           "and every stored result is kept")
        elif free < 2 * floor:
            reasons.append(f"disk space low: {free:.0f} MB free; new fields will be refused below {floor:.0f} MB")
        reasons.extend(self.model_notes)
        if (clock := self.clock_behind()) is not None:
            reasons.append(clock)
        chain = self.store.audit_check()
        if not chain.intact:
            reasons.append(f"the audit log was altered outside BlastScope: {chain.problem} "
                           "(blastscope-edge audit verify; keep the database file for an investigation)")
        if unsealed := self.site.record.unsealed():
            reasons.append(f"verification #{', #'.join(map(str, unsealed))} is marked passed in the database but was "
                           "never passed in BlastScope (no audit row): it does not count; keep the database file "
                           "for an investigation")
        if self.bundle.signer is None:
            reasons.append("the model bundle is not signed; it runs only because inference.allow_unsigned is set")
        reasons.extend(self.store.recovered)
        if self.store.read_only:
            reasons.append(self.store.read_only)
        if self.button_error:
            reasons.append(self.button_error)
        # a device not yet verified at its site is new, not broken: that is ``verified: false``
        # beside the status (issue 33), so a monitor can tell the two apart
        site = site or self.site.state()
        reasons.extend(f"drift since site verification: {d}" for d in site.drift)
        return reasons

    def health(self, max_age_s: float = 2.0) -> dict[str, Any]:
        """What /healthz answers: the status and the backend, from a full ``status`` at most
        ``max_age_s`` old. While one is being computed (it reads the record, which saves may
        hold) other probes get the last one instead of waiting: a monitor must never queue."""
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        if not self._health_lock.acquire(blocking=cached is None):
            assert cached is not None
            return cached[1]
        try:
            status = self.status()
            answer = {"status": status["status"], "backend": status["backend"]["active"],
                      "verified": status["site_verification"]["verified"]}
            self._health = (time.monotonic(), answer)
            return answer
        finally:
            self._health_lock.release()

    def status(self) -> dict[str, Any]:
        site = self.site.state()
        reasons = self.degraded_reasons(site)
        camera = None
        if self.camera is not None:
            s = self.camera.state
            camera = {"source": s.source, "connected": s.connected, "error": s.error, "frames": s.frames,
                      "reconnects": s.reconnects, "fps": round(s.fps, 2), **self.config.camera.settings_text()}
        test = self.bundle.manifest.get("metrics", {}).get("int8_test", {})
        return {
            "status": "degraded" if reasons else "ok",
            "degraded_reasons": reasons,
            "version": edge.__version__,
            "uptime_s": round(time.time() - self.started, 1),
            "clock": {"now": time.time(), "newest_field": self.store.newest_created()},
            "backend": self.pipeline.backends.status(),
            "model": {"id": self.bundle.model_id, "path": str(self.bundle.root),
                      "created": self.bundle.manifest.get("created"),
                      "test_accuracy": test.get("accuracy"),
                      "edgetpu_model": self.bundle.edgetpu_model is not None,
                      "signed_by": key_id(self.bundle.signer) if self.bundle.signer else None,
                      "calibration": self.bundle.calibration.to_dict(),
                      "case_rule": self.bundle.case_rule.to_dict() if self.bundle.case_rule else None},
            "quality_limits": {**self.pipeline.limits.to_dict(),
                               "overridden": sorted(k for k, v in self.config.quality.model_dump().items() if v is not None)},
            "device_name": self.config.device_name,
            "site_verification": site.to_dict(),
            "site_reference": None if (ref := self.site.active_reference()) is None else ref.to_dict(),
            "camera": camera,
            "button": {"gpio": self.config.button.gpio, "working": self.button is not None,
                       **self.button_target.status()},
            "live_view": None if self.live is None else {
                "streams": self.live.streams, "max_streams": self.config.live.max_streams,
                "fps": min(self.config.live.fps, self.config.camera.fps), "max_side": self.config.live.max_side,
                "max_kbps": self.config.live.max_kbps},
            "analysis": self.stats.snapshot(),
            "audit": self.store.audit_check().to_dict(),
            "disk": {"state_dir": str(self.store.root), "free_mb": round(self.store.free_mb(), 1),
                     "min_free_mb": self.config.store.min_free_mb, "results": self.store.count(),
                     "quarantined_files": self.store.quarantined},
        }
