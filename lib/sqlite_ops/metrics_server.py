"""The HTTP side of ``db_metrics serve``: ``GET /metrics``, ``GET /health``, 404 elsewhere.

Standard library ``http.server``; one request at a time per database (a scrape
probes SQLite's lock bytes with descriptors of its own, and closing those while
another thread of this process held a SQLite lock on the same file would drop
that lock), each request on a fresh read-only connection.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .common import OpsError
from .metrics import Options, collect, health, render_prometheus

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], db_path: str, options: Options) -> None:
        super().__init__(address, MetricsHandler)
        self.db_path = db_path
        self.options = options
        self.db_lock = threading.Lock()


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "sqlite-ops-db_metrics"

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
            with self.server.db_lock:
                report = collect(self.server.db_path, self.server.options)
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


def make_server(db_path: str, address: tuple[str, int], options: Options) -> MetricsServer:
    """A bound server; call ``serve_forever()`` (or ``handle_request()``) on it."""
    return MetricsServer(address, db_path, options)
