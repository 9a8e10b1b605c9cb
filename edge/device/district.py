"""Sending signed-out cases to the district's DICOM server over DICOMweb (issue 37).

A clinic's link comes and goes, so the record keeps an outbox (``edge.record.outbox``, filled in
the sign-out's own transaction) and this sender works through it whenever the server answers:
each case's fields as DICOM (``edge.record.dicom``) by STOW-RS (``dicomweb-client``, a well-kept
client of the standard, rather than hand-written multipart). A try that fails is tried again,
backing off to ``retry_max_s``; "wrong credentials" (401/403) is said as a refusal on the case
card. A resend carries the same UIDs, so a case the server already had (a send cut after the
server stored it) stays one case. No ``[district] url``: none of this runs.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import Field

from edge.record.store import Store
from edge.settings import Float, Settings

log = logging.getLogger("blastscope.district")


class DistrictConfig(Settings):
    """``[district]``: the district's DICOMweb server (Orthanc with its DICOMweb plugin)."""

    url: str = ""  # e.g. https://district.example/dicom-web; empty: no district, nothing is sent
    user: str = ""
    password_file: str = ""  # a file holding the password (kept out of the config file)
    poll_seconds: Annotated[Float, Field(gt=0)] = 10.0
    retry_first_seconds: Annotated[Float, Field(gt=0)] = 10.0
    retry_max_seconds: Annotated[Float, Field(gt=0)] = 900.0
    timeout_seconds: Annotated[Float, Field(gt=0)] = 30.0


class DistrictSender:
    def __init__(self, config: DistrictConfig, store: Store, device: str, model_id: str,
                 final_call: Callable[[int], str | None]) -> None:
        self.config, self.store, self.device, self.model_id = config, store, device, model_id
        self.final_call = final_call
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self) -> Any:
        import requests
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session_from_user_pass

        password = Path(self.config.password_file).read_text().strip() if self.config.password_file else ""
        session = create_session_from_user_pass(self.config.user, password) if self.config.user else requests.Session()
        # every request bounded: a link that hangs is a failed try, not a sender stuck for ever
        session.request = functools.partial(session.request, timeout=self.config.timeout_seconds)  # type: ignore[method-assign]
        return DICOMwebClient(url=self.config.url, session=session)

    def run_once(self, now: float | None = None) -> int:
        """Try every parcel due at ``now`` (default: the clock); how many were sent."""
        import time

        import requests  # with dicomweb-client (the district extra): only a device with a district needs them

        from edge.record.dicom import case_instances

        sent = 0
        for parcel in self.store.outbox.due(time.time() if now is None else now):
            backoff = min(self.config.retry_max_seconds, self.config.retry_first_seconds * 2 ** min(parcel.tries, 10))
            case = self.store.get_case(parcel.case_id)
            if case is None:
                self.store.outbox.failed(parcel.case_id, "the case is no longer in the record", True, backoff)
                continue
            try:
                instances = case_instances(case, lambda rid: self.store.file_path(rid, "image"), self.device,
                                           self.model_id, self.final_call(parcel.case_id))
                client = self._client()
                client.store_instances(instances)
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else 0
                refused = code in (401, 403)
                reason = "wrong credentials" if refused else f"the server answered {code}"
                self.store.outbox.failed(parcel.case_id, reason, refused, backoff)
                log.warning("district: case %s not sent: %s", case["code"], reason)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.store.outbox.failed(parcel.case_id, f"server not reachable ({type(exc).__name__})", False, backoff)
            except OSError as exc:
                self.store.outbox.failed(parcel.case_id, f"{type(exc).__name__}: {exc}", False, backoff)
            else:
                self.store.outbox.sent(parcel.case_id, len(instances))
                sent += 1
        return sent

    def start(self) -> "DistrictSender":
        self._thread = threading.Thread(target=self._run, name="district", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the sender lives on; the next round tries again
                log.exception("district: sending failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
