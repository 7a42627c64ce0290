"""Tests for lib/sqlite_ops/metrics_server.py: GET /metrics, /health and 404, served on
127.0.0.1 from an ephemeral port in a thread the test stops."""

from __future__ import annotations

import json
import socket
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


# --- a burst, a silent client, saturation (issue: backlog 5 dropped a burst) ---------


def serving(srv):
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return thread


@pytest.fixture
def make(db: Path):
    started = []

    def build(**kw):
        srv = make_server(str(db), ("127.0.0.1", 0), Options(), **kw)
        started.append((srv, serving(srv)))
        return srv

    yield build
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def silent_client(srv) -> socket.socket:
    """Connects and sends nothing."""
    return socket.create_connection(srv.server_address[:2], timeout=30)


def test_a_burst_of_150_concurrent_scrapes_is_answered_in_full(server) -> None:
    results: list = []

    def scrape() -> None:
        try:
            results.append(get(server, "/metrics")[0])
        except OSError as exc:  # a timeout (the urlopen's 10 s): the server stalled
            results.append(repr(exc))

    threads = [threading.Thread(target=scrape) for _ in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 150


def test_a_silent_client_does_not_hold_up_a_scrape(make) -> None:
    srv = make(client_timeout=120)  # the silent one stays connected the whole test
    with silent_client(srv), silent_client(srv):
        status, _, body = get(srv, "/metrics")  # 10 s timeout: far below 120
        assert status == 200 and "sqlite_file_size_bytes" in body


def test_a_silent_client_is_dropped_after_the_client_timeout(make) -> None:
    srv = make(client_timeout=0.2)
    with silent_client(srv) as sock:
        assert sock.recv(100) == b""  # the server closed it (30 s socket timeout: a hang)
    assert get(srv, "/metrics")[0] == 200


def test_saturated_server_answers_503_at_once_and_recovers(make) -> None:
    srv = make(max_connections=2, client_timeout=120)
    with silent_client(srv), silent_client(srv):
        status, _, body = get(srv, "/metrics")
        assert status == 503 and "too many connections" in body
    # Both gone: the slots are free again (as soon as their threads see the close).
    for _ in range(400):
        status = get(srv, "/metrics")[0]
        if status == 200:
            break
        threading.Event().wait(0.05)
    assert status == 200


def test_concurrent_scrapes_share_one_collection(make, monkeypatch) -> None:
    from sqlite_ops import metrics_server

    calls = []
    release = threading.Event()
    real = metrics_server.collect

    def slow_collect(*args, **kw):
        calls.append(1)
        release.wait(30)
        return real(*args, **kw)

    monkeypatch.setattr(metrics_server, "collect", slow_collect)
    srv = make()
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(get(srv, "/metrics")[0]))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for _ in range(200):  # until the first collection is under way
        if calls:
            break
        threading.Event().wait(0.05)
    threading.Event().wait(0.5)  # the others arrive and wait for it
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200] * 20
    assert len(calls) < 20
