"""Analyses through one bounded queue served by one worker thread.

Twenty phones uploading at once filled every request thread with analyses, so `/healthz`
timed out and the page's case poll waited 10-30 s (issue 35). The device has one model and
two cores: analyses run one at a time here whatever asks (a phone, the hands-free scan, the
button), at most ``depth`` wait, and a request that finds the queue full is answered at once
with 503, ``Retry-After`` and words, instead of holding a request thread. So at most
``depth + 1`` request threads are ever held by analyses, and the status, health and poll
routes always find a thread.

Stopping: ``close`` refuses new work, lets the job under way finish (it is storing a field a
phone is waiting for), fails the waiting ones with ``ShuttingDown`` (their phones get 503 and
send again after the restart: nothing acknowledged is lost), and joins the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Annotated, Any, Callable

from pydantic import Field

from edge.settings import Float, Int, Settings

log = logging.getLogger("blastscope.queue")


class QueueConfig(Settings):
    # analyses that may wait behind the one under way; more get 503 with Retry-After
    depth: Annotated[Int, Field(ge=1, le=64)] = 2
    # what a refused phone is told to wait before sending again (about one analysis)
    retry_after_seconds: Annotated[Int, Field(ge=1, le=120)] = 2
    # longest a request waits for its analysis before giving up with 503 (the analysis still
    # runs and is stored: the phone finds it in the case)
    wait_seconds: Annotated[Float, Field(gt=0, le=600)] = 60.0


class QueueFull(RuntimeError):
    """The queue holds ``depth`` analyses already: try again in ``retry_after`` seconds."""

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"the device is busy analysing {depth + 1} fields: nothing was stored from this one; "
                         f"send it again in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(RuntimeError):
    def __init__(self) -> None:
        super().__init__("the device is restarting: nothing was stored from this field; send it again in a few seconds")


_STOP = object()
#: The routes that ask for an analysis (``/api/classify``, ``/api/cases/<id>/classify``, the
#: same with ``capture``).
ANALYSIS_PATHS = ("/classify", "/capture")


class AnalysisQueue:
    def __init__(self, config: QueueConfig = QueueConfig()) -> None:
        self.config = config
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=config.depth)
        self._closed = threading.Event()
        self.done = 0
        self.refused = 0
        self._worker = threading.Thread(target=self._serve, name="analysis-worker", daemon=True)
        self._worker.start()

    def submit(self, fn: Callable[[], Any], wait: bool = False) -> Future:
        """Queue ``fn``; ``QueueFull`` at once when full (``wait``: block for a place instead,
        for the scan and the button, which have no one to send a 503 to)."""
        if self._closed.is_set():
            raise ShuttingDown()
        future: Future = Future()
        try:
            self._jobs.put((fn, future), block=wait, timeout=self.config.wait_seconds if wait else None)
        except queue.Full:
            self.refused += 1
            raise QueueFull(self.config.depth, self.config.retry_after_seconds) from None
        return future

    def run(self, fn: Callable[[], Any], wait: bool = False) -> Any:
        """``fn`` through the queue; its result or its exception."""
        return self.submit(fn, wait).result(timeout=self.config.wait_seconds)

    def waiting(self) -> int:
        return self._jobs.qsize()

    def busy_for(self, method: str, path: str) -> int | None:
        """For the server's request-line gate: seconds to wait when ``path`` asks for an
        analysis and the queue is full, else None (the route checks again as it submits)."""
        if method == "POST" and path.endswith(ANALYSIS_PATHS) and self._jobs.full():
            self.refused += 1
            return self.config.retry_after_seconds
        return None

    def _serve(self) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
            self.done += 1

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new work, fail what waits, finish what runs; True when the worker ended."""
        self._closed.set()
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                item[1].set_exception(ShuttingDown())
        self._jobs.put(_STOP)
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("the analysis under way did not finish within %.0f s of the stop", timeout)
        return not self._worker.is_alive()
