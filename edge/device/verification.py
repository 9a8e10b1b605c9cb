"""Whether this device has been verified on this clinic's own slides, for the model and
camera settings in force, and whether what it sees has drifted since.

Until a verification passes for the installed model and the camera settings, every result,
report and export says "not verified at this site" (and ``/healthz`` says ``verified: false``;
a new device is not a faulty one, so it is not degraded). A model
install or a changed camera setting leaves the earlier verification standing in the record
but no longer covering what runs, so the device asks for a new one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from edge.analysis.verification import NOT_VERIFIED, Criteria, FieldFigures, drift, evaluate
from edge.device.capture import CameraConfig
from edge.analysis.imagefile import read_rgb
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.model.site_reference import SlideCells, fit_reference
from edge.pipeline import Pipeline
from edge.record.store import Store
from edge.record.site_references import SiteReferences, StoredReference
from edge.record.verification import Verification, VerificationError, Verifications

#: How far back the drift figures look, and how often they are recounted.
DRIFT_DAYS = 7
DRIFT_RECOUNT_S = 300.0


def camera_settings(camera: CameraConfig) -> dict[str, Any]:
    """The camera settings a verification covers: the source and the locked exposure and
    white balance (automatic ones change from field to field, so they are recorded as such)."""
    return {"source": camera.source, "exposure_time_us": camera.exposure_time_us,
            "analogue_gain": camera.analogue_gain,
            "colour_gains": list(camera.colour_gains) if camera.colour_gains is not None else None}


@dataclass(frozen=True)
class SiteState:
    """What the page, the status and every record say about verification at this site."""

    verified: bool
    text: str  # "verified at this site (#3, 2026-12-02)" or "not verified at this site"
    why: str  # what to do, for the status page ("" when verified)
    verification_id: int | None  # the one covering what runs
    under_way: dict[str, Any] | None  # the open verification's progress, if any
    drift: list[str] = field(default_factory=list)
    short: str = ""  # why not, in a few words, for the page's one-line banner

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SiteVerification:
    """The device's side of site verification: it knows the model and camera in force."""

    def __init__(self, store: Store, model_id: str, camera: CameraConfig) -> None:
        self.record = Verifications(store)
        self.references = SiteReferences(store)
        self.store = store
        self.model_id = model_id
        self.camera = camera_settings(camera)
        self._lock = threading.Lock()
        self._drift: tuple[float, int | None, list[str]] | None = None

    def state(self) -> SiteState:
        passed = self.record.last_passed()
        current = self.record.current()
        under_way = None
        if current is not None:
            outcome = evaluate(current.slides, current.criteria)
            under_way = {"id": current.id, "slides": len(current.slides), "done": len(current.slides) - outcome.pending,
                         "positive_done": outcome.positive_done, "negative_done": outcome.negative_done,
                         "criteria": current.criteria.model_dump()}
        active = self.references.active()
        reference = None if active is None else active.id
        if passed is not None and passed.model_id == self.model_id and passed.camera == self.camera \
                and passed.site_reference == reference:
            day = time.strftime("%Y-%m-%d", time.localtime(passed.finished or passed.started))
            text = f"verified at this site (verification #{passed.id}, {day})"
            if passed.confirmed_by:  # lowered criteria are printed wherever the verification is named
                slides = sum(1 for s in passed.slides if s.done)
                text = (f"verified at this site on {slides} slides, below the default criteria "
                        f"({passed.criteria.text()}; confirmed by {passed.confirmed_by}; verification #{passed.id}, "
                        f"{day})")
            return SiteState(True, text, "", passed.id, under_way, self._drift_warnings(passed))
        if passed is None:
            short = "no verification has passed yet"
            why = ("no verification has passed on this clinic's own slides: an admin starts one under "
                   "Site verification, and known positive and negative slides are analysed")
        elif passed.site_reference != reference:
            short = f"the site reference changed since verification #{passed.id}"
            why = (f"verification #{passed.id} was run with site reference {_reference_text(passed.site_reference)}; "
                   f"{_reference_text(reference)} is in force now: a new reference needs a new verification")
        elif passed.model_id != self.model_id:
            short = f"the model changed since verification #{passed.id}"
            why = (f"verification #{passed.id} passed for model {passed.model_id}; model {self.model_id} runs now: "
                   "start a new verification")
        else:
            short = f"the camera settings changed since verification #{passed.id}"
            why = (f"verification #{passed.id} passed with other camera settings ({_settings_text(passed.camera)}); "
                   f"now {_settings_text(self.camera)}: start a new verification")
        if current is not None:
            why += f" (verification #{current.id} is under way: {under_way['done'] if under_way else 0} slides done)"
        return SiteState(False, NOT_VERIFIED, why, None, under_way, short=short)

    def _drift_warnings(self, passed: Verification) -> list[str]:
        """This week's field figures against the verification's, recounted every few minutes."""
        if not passed.baseline:
            return []
        now = time.monotonic()
        with self._lock:
            if self._drift is not None and self._drift[1] == passed.id and now - self._drift[0] < DRIFT_RECOUNT_S:
                return self._drift[2]
        week = FieldFigures.of(self.store.iter_between(time.time() - DRIFT_DAYS * 86400, time.time() + 1),
                               OUT_OF_DISTRIBUTION)
        warnings = drift(FieldFigures.from_dict(passed.baseline), week)
        with self._lock:
            self._drift = (now, passed.id, warnings)
        return warnings

    def start(self, criteria: Criteria, client: str, note: str = "", confirmed_by: str | None = None) -> Verification:
        active = self.references.active()
        vid = self.record.start(criteria, self.model_id, self.camera, client, note, confirmed_by,
                                None if active is None else active.id)
        verification = self.record.get(vid)
        assert verification is not None
        return verification

    def finish(self, verification_id: int, client: str) -> Verification:
        """Close the verification: passed when every criterion holds, else failed; the covered
        model and camera must still be in force. It cannot finish while a slide entered is not
        done (issue 33: a known positive slide the device called negative was left undone and
        the verification passed without it): read it, or abandon the verification."""
        verification = self.record.get(verification_id)
        if verification is None:
            raise LookupError(f"no verification {verification_id}")
        if verification.model_id != self.model_id or verification.camera != self.camera:
            raise VerificationError(f"verification #{verification_id} was started for model {verification.model_id} "
                                    f"with camera {_settings_text(verification.camera)}; what runs now differs: "
                                    "abandon it and start a new one")
        outcome = evaluate(verification.slides, verification.criteria)
        if open_slides := [s.code for s in verification.slides if not s.done]:
            raise VerificationError(f"{len(open_slides)} slide(s) entered are not done ({', '.join(open_slides)}): "
                                    "analyse each and mark it done, or abandon the verification; a slide is "
                                    "never left out of the figures")
        fields = [f for s in verification.slides if s.done
                  for f in (self.store.get_case(s.case_id) or {}).get("fields", []) if not f.get("excluded")]
        baseline = FieldFigures.of(fields, OUT_OF_DISTRIBUTION).to_dict()
        self.record.close(verification_id, "passed" if outcome.passed else "failed", outcome.to_dict(), baseline,
                          client)
        done = self.record.get(verification_id)
        assert done is not None
        return done

    def abandon(self, verification_id: int, reason: str, client: str) -> Verification:
        if self.record.get(verification_id) is None:
            raise LookupError(f"no verification {verification_id}")
        self.record.close(verification_id, "abandoned", None, None, client, note=reason)
        done = self.record.get(verification_id)
        assert done is not None
        return done


    def propose_reference(self, pipeline: Pipeline, case_ids: list[int], client: str) -> StoredReference:
        """A site reference measured on the cases of known-negative slides (``case_ids``), each
        read from the device's camera, proposed for an admin to accept. The stored field images
        are read again through ``pipeline`` (``Pipeline.measure_cells``)."""
        if len(set(case_ids)) != len(case_ids):
            raise VerificationError("a slide is named twice: each case is one known-negative slide")
        slides = []
        for case_id in case_ids:
            case = self.store.get_case(case_id)
            if case is None:
                raise LookupError(f"no case {case_id}")
            if self.record.slide_of_case(case_id) is not None:
                raise VerificationError(f"case {case['code']} is a verification slide: a reference is measured on "
                                        "other known-negative slides")
            fields = [f for f in case["fields"] if not f.get("excluded")]
            if uploads := [f"#{f['id']}" for f in fields if str(f.get("source", "")).startswith("upload")]:
                raise VerificationError(f"case {case['code']} holds uploaded pictures ({', '.join(uploads)}): a site "
                                        "reference is measured on the device's own camera only")
            rows, embeddings = [], []
            for f in fields:
                path = self.store.file_path(int(f["id"]), "image")
                measured = None if path is None else pipeline.measure_cells(read_rgb(path))
                if measured is not None:
                    rows.append(measured[0])
                    embeddings.append(measured[1])
            slides.append(SlideCells(case["code"], rows, embeddings))
        try:
            reference = fit_reference(slides, self.model_id, self.camera)
        except ValueError as exc:
            raise VerificationError(str(exc)) from None
        stored = self.references.get(self.references.propose(reference, list(case_ids), client))
        assert stored is not None
        return stored

    def accept_reference(self, reference_id: int, client: str) -> StoredReference:
        """The proposed reference is the device's from now on; a verification passed before it
        no longer covers the device (``state``)."""
        try:
            self.references.accept(reference_id, client)
        except ValueError as exc:
            raise VerificationError(str(exc)) from None
        stored = self.references.get(reference_id)
        assert stored is not None
        return stored

    def active_reference(self) -> StoredReference | None:
        """The site reference in force, when it was measured with the model and camera in force."""
        active = self.references.active()
        if active is None or active.reference.model_id != self.model_id or active.reference.camera != self.camera:
            return None
        return active


def _reference_text(reference_id: int | None) -> str:
    return "none" if reference_id is None else f"#{reference_id}"


def _settings_text(camera: dict[str, Any]) -> str:
    exposure = f"{camera['exposure_time_us']} us" if camera.get("exposure_time_us") is not None else "automatic exposure"
    gains = camera.get("colour_gains")
    balance = f"gains {gains[0]:g}/{gains[1]:g}" if gains else "automatic white balance"
    return f"{camera.get('source')}, {exposure}, {balance}"
