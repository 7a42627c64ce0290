"""The HTTP side of ``db_metrics serve``: ``GET /metrics``, ``GET /health``, 404 elsewhere.

Standard library ``http.server``, one thread per connection, built to take a
burst (every Prometheus replica, a dashboard refresh, a misconfigured scraper)
without dropping or stalling anyone:

* a listen backlog of ``BACKLOG`` (the standard library's default is 5: a
  burst overflowed it and clients waited out SYN retries, 30 s and more);
* at most ``max_connections`` connections are handled at once; one more is
  answered ``503`` at once (with ``Retry-After``) instead of queueing without
  bound;
* every connection has a socket timeout (``client_timeout``): a client that
  connects and sends nothing, or reads nothing, is dropped after it, and holds
  up nobody meanwhile (it only occupies its own thread);
* concurrent ``/metrics`` requests share one collection: a request that arrives
  while one runs waits for it and answers with its result, so a burst of N
  scrapes costs about two collections, not N one after the other.

SQLite is read by one thread at a time (a collection probes SQLite's lock
bytes with descriptors of its own, and closing those while another thread of
this process held a SQLite lock on the same file would drop that lock), each
time on a fresh read-only connection.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .common import EX_FAIL, OpsError
from .metrics import Options, Report, collect, health, render_prometheus

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
MAX_CONNECTIONS = 256  # handled at once; beyond: 503
CLIENT_TIMEOUT = 10.0  # seconds a connection may stay silent
SCRAPE_WAIT = 60.0  # seconds a request waits for a collection before a 503

_BUSY_BODY = b"db_metrics: too many connections at once; retry shortly\n"
_BUSY_REPLY = (b"HTTP/1.0 503 Service Unavailable\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
               b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
               % (len(_BUSY_BODY), _BUSY_BODY))


class _Collection:
    """One collection in flight; requests that arrive meanwhile share its result."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.report: Report | None = None
        self.error: OpsError | None = None


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], db_path: str, options: Options, *,
                 max_connections: int = MAX_CONNECTIONS,
                 client_timeout: float = CLIENT_TIMEOUT) -> None:
        super().__init__(address, MetricsHandler)
        self.db_path = db_path
        self.options = options
        self.client_timeout = client_timeout
        self.db_lock = threading.Lock()  # one reader of SQLite at a time
        self.slots = threading.BoundedSemaphore(max_connections)
        self._flight_lock = threading.Lock()
        self._flight: _Collection | None = None

    # -- connections ---------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection when a slot is free, else a 503 at once."""
        if not self.slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 without a thread and without ever blocking the accept loop."""
        try:
            request.setblocking(False)
            try:
                request.recv(65536)  # what has arrived, so closing sends no reset
            except OSError:
                pass
            request.send(_BUSY_REPLY)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not news; anything else keeps the default report."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    # -- the shared collection ---------------------------------------------------

    def shared_collect(self) -> Report:
        """A fresh collection, or, when one is already running, its result (at
        most one collection's time older than this request)."""
        with self._flight_lock:
            flight, leader = self._flight, False
            if flight is None:
                flight, leader = _Collection(), True
                self._flight = flight
        if leader:
            try:
                with self.db_lock:
                    flight.report = collect(self.db_path, self.options)
            except OpsError as exc:
                flight.error = exc
            finally:
                with self._flight_lock:
                    self._flight = None
                flight.done.set()
        elif not flight.done.wait(SCRAPE_WAIT):
            raise OpsError(EX_FAIL, f"a collection has taken more than {SCRAPE_WAIT:.0f} s")
        if flight.error is not None:
            raise flight.error
        if flight.report is None:  # the leader failed unexpectedly
            raise OpsError(EX_FAIL, "the collection failed; see the server's log")
        return flight.report


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "sqlite-ops-db_metrics"

    def setup(self) -> None:
        self.timeout = self.server.client_timeout  # read and write, per connection
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self.metrics()
        elif url.path == "/health":
            quick = parse_qs(url.query).get("quick_check", ["0"])[0] in ("1", "true", "yes")
            self.health(quick)
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found: try /metrics or /health\n")

    def metrics(self) -> None:
        try:
            report = self.server.shared_collect()
        except OpsError as exc:
            self.reply(503, "text/plain; charset=utf-8", f"db_metrics: {exc.message}\n")
            return
        self.reply(200, PROMETHEUS_TYPE, render_prometheus(report))

    def health(self, quick: bool) -> None:
        with self.server.db_lock:
            ok, info = health(self.server.db_path, quick_check=quick,
                              busy_timeout=self.server.options.busy_timeout)
        self.reply(200 if ok else 503, "application/json", json.dumps(info) + "\n")

    def reply(self, status: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a scrape every few seconds is not news; errors are answered as 503


def make_server(db_path: str, address: tuple[str, int], options: Options, *,
                max_connections: int = MAX_CONNECTIONS,
                client_timeout: float = CLIENT_TIMEOUT) -> MetricsServer:
    """A bound server; call ``serve_forever()`` (or ``handle_request()``) on it."""
    return MetricsServer(address, db_path, options, max_connections=max_connections,
                         client_timeout=client_timeout)
