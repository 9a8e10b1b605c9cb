"""Sending signed-out cases to the district's DICOM server over DICOMweb (issue 37).

A clinic's link comes and goes, so the record keeps an outbox (``edge.record.outbox``, filled in
the sign-out's own transaction) and this sender works through it whenever the server answers:
each case's fields as DICOM (``edge.record.dicom``) by STOW-RS (``dicomweb-client``, a well-kept
client of the standard, rather than hand-written multipart). A try that fails is tried again,
backing off to ``retry_max_s``; "wrong credentials" (401/403) is said as a refusal on the case
card. A resend carries the same UIDs, so a case the server already had (a send cut after the
server stored it) stays one case. No ``[district] url``: none of this runs.

The district's second reads come back over the same link: for each case the server has had in
the last ``reads_days``, every ``reads_poll_seconds`` the sender asks (QIDO-RS) for structured
reports in the case's study and adds the new ones to the case (``edge.record.second_reads``).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
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
    reads_poll_seconds: Annotated[Float, Field(gt=0)] = 300.0  # how often second reads are looked for
    reads_days: Annotated[Float, Field(gt=0)] = 30.0  # cases sent this recently are looked at


def dicomweb_client(url: str, user: str, password_file: str | None, timeout_s: float | None = None) -> Any:
    """A DICOMweb client of ``url`` as ``user`` with the password in ``password_file`` (read at
    each call, so a fixed password is picked up); every request bounded by ``timeout_s``: a link
    that hangs is a failed try, not a sender stuck for ever."""
    import requests
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    password = Path(password_file).read_text().strip() if password_file else ""
    session = create_session_from_user_pass(user, password) if user else requests.Session()
    if timeout_s is not None:
        session.request = functools.partial(session.request, timeout=timeout_s)  # type: ignore[method-assign]
    return DICOMwebClient(url=url, session=session)


class DistrictSender:
    def __init__(self, config: DistrictConfig, store: Store, device: str, model_id: str,
                 final_call: Callable[[int], str | None]) -> None:
        self.config, self.store, self.device, self.model_id = config, store, device, model_id
        self.final_call = final_call
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reads_looked = 0.0
        #: the STOW-RS time of each case sent lately (ms): what a district's load costs a send
        self.send_ms: collections.deque[float] = collections.deque(maxlen=1000)

    def _client(self) -> Any:
        return dicomweb_client(self.config.url, self.config.user, self.config.password_file, self.config.timeout_seconds)

    def run_once(self, now: float | None = None) -> int:
        """Try every parcel due at ``now`` (default: the clock); how many were sent."""
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
                t = time.perf_counter()
                client.store_instances(instances)
                self.send_ms.append((time.perf_counter() - t) * 1000.0)
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

    def fetch_reads(self, now: float | None = None) -> int:
        """Add the second reads the server holds for recently sent cases; how many were new.
        A link that fails leaves it for the next round (nothing is lost: the reads stay there)."""
        from pydicom.dataset import Dataset

        from edge.record.dicom import case_study_uid, parse_second_read

        now = time.time() if now is None else now
        added = 0
        client = self._client()
        for case_id in self.store.outbox.sent_since(now - self.config.reads_days * 86400):
            study = case_study_uid(self.device, case_id)
            found = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "SR"})
            known = self.store.second_reads.known(case_id)
            for meta in found:
                attrs = Dataset.from_json(meta)
                uid = str(attrs.get("SOPInstanceUID", ""))
                if not uid or uid in known:
                    continue
                instance = client.retrieve_instance(study, str(attrs.SeriesInstanceUID), uid)
                try:
                    read = parse_second_read(instance)
                except ValueError as exc:  # another kind of report in the study: not a read
                    log.info("district: %s in case %d is not a second read: %s", uid, case_id, exc)
                    continue
                if self.store.second_reads.add(case_id, read):
                    added += 1
                    log.warning("district: case %d has a second read by %s: %s", case_id, read.reader, read.call)
        self._reads_looked = now
        return added

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
            if time.time() - self._reads_looked >= self.config.reads_poll_seconds:
                try:
                    self.fetch_reads()
                except Exception as exc:  # noqa: BLE001 - a link down: the reads wait on the server
                    self._reads_looked = time.time()
                    log.info("district: second reads not fetched: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
