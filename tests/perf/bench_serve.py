#!/usr/bin/env python3
"""Benchmark: a burst of concurrent scrapes against ``db_metrics serve``.

Starts the real ``scripts/db_metrics serve`` on an ephemeral port over a small
database in a temp directory, then, BENCH_ROUNDS times (default 3), opens
BENCH_CLIENTS connections at once (default 150: several Prometheus replicas, a
dashboard refresh and a misconfigured scraper together) and prints, per round,
how many were answered with which status and the median and slowest answer.
Every client waits up to 60 s, so a stalled server shows as a slow answer or
a timeout rather than a hang of the benchmark.

A benchmark, not a test: it prints a table and asserts nothing about time.

    python3 tests/perf/bench_serve.py
    BENCH_CLIENTS=400 python3 tests/perf/bench_serve.py
"""

from __future__ import annotations

import collections
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DB_METRICS = REPO / "scripts" / "db_metrics"


def scrape(url: str, results: list, start: threading.Event) -> None:
    start.wait()
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            status: object = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        status = type(error).__name__
    results.append((status, time.perf_counter() - began))


def burst(url: str, clients: int) -> list:
    results: list = []
    start = threading.Event()
    threads = [threading.Thread(target=scrape, args=(url, results, start))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    clients = int(os.environ.get("BENCH_CLIENTS", "150"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    with tempfile.TemporaryDirectory(prefix="sqlite-ops-bench-serve.") as tmp:
        db = Path(tmp) / "dash.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE devices(id INTEGER PRIMARY KEY, ip TEXT)")
        conn.executemany("INSERT INTO devices(ip) VALUES (?)", [(str(i),) for i in range(1000)])
        conn.commit()
        conn.close()
        env = dict(os.environ, SQLITE_OPS_CONFIG=os.devnull)
        proc = subprocess.Popen([sys.executable, str(DB_METRICS), "serve", "--db", str(db),
                                 "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            print(f"{clients} concurrent GET /metrics per round, db_metrics serve on {url}\n")
            print("| round | answers | median s | slowest s |")
            print("|---|---|---|---|")
            for number in range(1, rounds + 1):
                results = burst(url, clients)
                counts = collections.Counter(status for status, _ in results)
                times = [seconds for _, seconds in results]
                answers = ", ".join(f"{count} x {status}" for status, count in counts.items())
                print(f"| {number} | {answers} | {statistics.median(times):.3f} | "
                      f"{max(times):.3f} |")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
