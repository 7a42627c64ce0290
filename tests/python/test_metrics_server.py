"""Tests for lib/sqlite_ops/metrics_server.py: GET /metrics, /health and 404, served on
127.0.0.1 from an ephemeral port in a thread the test stops."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from promparse import prom_samples

from sqlite_ops.metrics import Options
from sqlite_ops.metrics_server import make_server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    conn.close()
    return path



@pytest.fixture
def server(db: Path):
    srv = make_server(str(db), ("127.0.0.1", 0), Options())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def get(srv, path: str) -> tuple[int, str, str]:
    host, port = srv.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_server_metrics_health_and_404(server, db: Path) -> None:
    assert server.server_address[0] == "127.0.0.1"
    status, kind, body = get(server, "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    assert prom_samples(body)["sqlite_file_size_bytes"][0][1] == db.stat().st_size
    status, kind, body = get(server, "/health")
    assert status == 200 and kind == "application/json"
    assert json.loads(body)["status"] == "ok"
    status, _, body = get(server, "/health?quick_check=1")
    assert status == 200 and json.loads(body)["quick_check"] == ["ok"]
    assert get(server, "/elsewhere")[0] == 404


def test_server_reports_503_when_the_database_is_gone(server, db: Path) -> None:
    db.unlink()
    status, _, body = get(server, "/health")
    assert status == 503 and json.loads(body)["status"] == "error"
    status, _, body = get(server, "/metrics")
    assert status == 503 and "database not found" in body
