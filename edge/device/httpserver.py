"""Serving the web app with waitress, and stopping it within a bound.

waitress's own ``run`` only ends when every socket in its map is gone, so after SIGTERM it
kept serving keep-alive connections until they timed out (27.5 s measured, past systemd's
20 s stop timeout), and it left request threads running while the daemon closed the store
underneath them. Here a stop closes the listening socket at once, drops idle and half-sent
connections, lets requests already received finish (the app answers any new one on an open
connection with 503 and ``Connection: close``), waits at most ``drain_seconds`` for them,
then joins the request threads so nothing touches the store after it is closed.

Request bodies: waitress reads a whole body, spooling it to a temporary file, before the
application sees the request, and by default accepts up to 1 GB; four clients that never
logged in took a device's free space from 950 to 111 MB. Here a body is refused from its
headers, before a byte of it is read: above ``max_upload_mb`` (plus room for the form's own
parts) with 413, and above ``PREAUTH_BODY_BYTES`` (a login form is a few hundred bytes) with
401 unless the headers carry the API token or a live session (``body_gate``, given by the web
layer). A client that has not logged in can then make the device hold at most that much per
connection, for at most ``connection_limit`` connections.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Callable

from pydantic import Field
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server
from waitress.utilities import Error

from edge.settings import Float, Int, Settings


class ServerConfig(Settings):
    host: str = "0.0.0.0"
    port: Annotated[Int, Field(ge=0, le=65535)] = 8080  # 0: any free port
    device_name: str = ""  # shown on reports and exports; empty: the host name
    # 6-12 digits: 4 digits fall to the device-wide login limit in about 7 days (docs/security.md)
    pin: Annotated[str, Field(pattern=r"^([0-9]{6,12})?$")] = ""  # empty: generated at first start, stored
    token: Annotated[str, Field(pattern=r"^(.{16,})?$")] = ""  # empty: generated at first start, stored
    max_upload_mb: Annotated[Float, Field(gt=0)] = 16.0
    # per upload, from the header; decoding is bounded (edge/analysis/imagefile.py)
    max_pixels: Annotated[Int, Field(gt=0)] = 24_000_000
    lockout_attempts: Annotated[Int, Field(ge=1)] = 5  # per client: wrong PINs before it waits lockout_seconds
    lockout_seconds: Annotated[Float, Field(gt=0)] = 300.0
    # Device-wide, whatever the client address: wrong PINs in 24 h before attempts are spaced
    # 1, 2, 4 ... seconds apart, up to login_max_delay_seconds (edge/web/auth.py, docs/security.md).
    login_free_failures: Annotated[Int, Field(ge=1)] = 10
    login_max_delay_seconds: Annotated[Float, Field(ge=1, le=3600)] = 120.0
    # a login lasts one shift at most; logout ends it at once
    session_hours: Annotated[Float, Field(gt=0, le=24 * 31)] = 12.0
    # request threads: each live-view stream holds one (live.max_streams), the rest serve the API
    threads: Annotated[Int, Field(ge=1)] = 6
    # waitress keeps a connection per client; a half-sent request costs a socket and a buffer,
    # not a thread. Room for many, and idle ones are dropped after channel_timeout seconds.
    connection_limit: Annotated[Int, Field(ge=10)] = 400
    channel_timeout: Annotated[Float, Field(gt=0)] = 15.0
    # After SIGTERM: requests already received get this long to finish (systemd stops at 20 s).
    drain_seconds: Annotated[Float, Field(gt=0, le=60)] = 10.0



log = logging.getLogger("blastscope")

#: The largest body a request may send before it has shown who it is (a login form, a review
#: note and the page's other JSON are far smaller).
PREAUTH_BODY_BYTES = 64 * 1024
#: Room above ``max_upload_mb`` for a multipart form's boundaries and part headers.
FORM_OVERHEAD_BYTES = 64 * 1024

#: ``(headers) -> bool``: whether a request's headers (waitress's: upper case, ``-`` as ``_``)
#: carry the API token or a live session, so its body may be read.
BodyGate = Callable[[dict[str, str]], bool]
#: ``(method, path) -> seconds | None``: how long a request must wait before it is worth
#: sending again (the analysis queue is full and it asks for an analysis), else None. Answered
#: from the request line, before the body is read or a request thread taken, so twenty phones
#: uploading cannot fill the threads that /healthz and the page's polls need (issue 35).
BusyGate = Callable[[str, str], "int | None"]


class _Refused(Error):
    """An answer the server gives from the headers alone, in the API's JSON error form."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason

    retry_after: int | None = None

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json.dumps({"error": self.body, "status": self.code}).encode()
        headers = [("Content-Type", "application/json")]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return f"{self.code} {self.reason}", headers, body


def _gated_channel(gate: BodyGate | None, max_body: int, limit_text: str,
                   busy: BusyGate | None = None) -> type[HTTPChannel]:
    """A waitress channel whose parser refuses, before reading it, a body above ``max_body``
    and, when ``gate`` says the request has not shown who it is, one above ``PREAUTH_BODY_BYTES``;
    and an analysis while ``busy`` says the queue is full (503 with Retry-After)."""

    class GatedParser(HTTPRequestParser):
        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            wait = busy(self.command, self.path) if busy is not None else None
            if wait is not None:
                refused = _Refused(503, "Service Unavailable", f"the device is busy analysing other fields: nothing "
                                                               f"was stored from this one; send it again in {wait} s")
                refused.retry_after = wait
                self._refuse(refused)
            elif self.content_length > max_body:
                self._refuse(_Refused(413, "Request Entity Too Large", f"upload too large: the limit is {limit_text}"))
            elif (self.chunked or self.content_length > PREAUTH_BODY_BYTES) and gate is not None and not gate(self.headers):
                self._refuse(_Refused(401, "Unauthorized", "log in first: a request body over 64 KB needs a "
                                                           "logged-in session or 'Authorization: Bearer <token>'"))

        def _refuse(self, error: Error) -> None:
            self.error = error
            self.body_rcv, self.content_length = None, 0  # nothing of the body is read (nor checked again)
            self.completed = True  # the answer goes out and the connection closes

    class GatedChannel(HTTPChannel):
        parser_class = GatedParser

    return GatedChannel


@dataclass(frozen=True)
class Drained:
    seconds: float  # from the stop request to the last request thread joined
    unfinished: int  # requests still running when the bound passed (0: a clean drain)


class HttpServer:
    def __init__(self, app, cfg: ServerConfig, body_gate: BodyGate | None = None,
                 busy_gate: BusyGate | None = None) -> None:
        self.cfg = cfg
        self.max_body = int(cfg.max_upload_mb * 1024 * 1024) + FORM_OVERHEAD_BYTES
        self.server = create_server(app, host=cfg.host, port=cfg.port, threads=cfg.threads, ident="BlastScope",
                                    connection_limit=cfg.connection_limit, channel_timeout=cfg.channel_timeout,
                                    cleanup_interval=max(1.0, cfg.channel_timeout / 3),
                                    # the bound for chunked bodies, counted as they arrive
                                    max_request_body_size=self.max_body + 1)
        self.server.channel_class = _gated_channel(body_gate, self.max_body, f"{cfg.max_upload_mb:g} MB", busy_gate)
        self._stop_requested: float | None = None
        self._listening = True

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def stop(self) -> None:
        """Ask the loop to stop; safe from a signal handler. The handler interrupts the loop's
        poll, which Python then retries with the same descriptors: closing a socket here made
        that retry fail with EBADF and the process abort (the 1-in-8 exit 134), so the loop
        closes the listening socket itself after it wakes."""
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
            self.server.pull_trigger()

    def _channels(self) -> list:
        return list(self.server.active_channels.values())

    def _drop_idle(self) -> None:
        for channel in self._channels():
            if not channel.requests:  # idle keep-alive or a request still being sent: nothing owed
                channel.will_close = True

    def _in_flight(self) -> int:
        return sum(len(c.requests) + (1 if c.total_outbufs_len else 0) for c in self._channels())

    def run(self) -> Drained:
        """Serve until ``stop`` and the drain; returns how the drain went."""
        adj = self.server.adj
        while True:
            wasyncore.loop(timeout=adj.asyncore_loop_timeout if self._stop_requested is None else 0.05,
                           map=self.server._map, use_poll=adj.asyncore_use_poll, count=1)
            if self._stop_requested is None:
                continue
            if self._listening:
                self._listening = False
                wasyncore.dispatcher.close(self.server)  # the listening socket only; the wake-up pipe stays
            self._drop_idle()
            if not self._in_flight() or time.monotonic() - self._stop_requested > self.cfg.drain_seconds:
                break
        unfinished = self._in_flight()
        wasyncore.close_all(self.server._map)
        dispatcher = self.server.task_dispatcher
        remaining = self.cfg.drain_seconds - (time.monotonic() - self._stop_requested)
        dispatcher.shutdown(cancel_pending=True, timeout=max(1.0, remaining))
        seconds = time.monotonic() - self._stop_requested
        if unfinished or dispatcher.threads:
            log.warning("%d request(s) did not finish within %.0f s of the stop; %d thread(s) left running",
                        unfinished, self.cfg.drain_seconds, len(dispatcher.threads))
        return Drained(round(seconds, 3), unfinished + len(dispatcher.threads))
