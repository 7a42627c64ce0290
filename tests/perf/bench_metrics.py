#!/usr/bin/env python3
"""Benchmark: what one ``db_metrics`` scrape of a large database costs.

Builds (once, then reuses) a dashboard database of about BENCH_MB megabytes
(default 800) with the repository's migrations, under
``${SQLITE_OPS_BENCH_DIR:-/tmp/sqlite-ops-bench}``, outside the checkout. Then
runs, interleaved, a bare ``python3 -c 'import sqlite3'`` and a default
``scripts/db_metrics`` scrape (BENCH_RUNS times each, default 9) and prints the
medians and their ratio, followed by the cost of the opt-in extras
(``--exact-counts``, ``--table-sizes``, ``--time-queries``).

A benchmark, not a test: it prints a table and asserts nothing about time.

    python3 tests/perf/bench_metrics.py              # 800 MB
    BENCH_MB=50 python3 tests/perf/bench_metrics.py  # a quick run
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DB_METRICS = REPO / "scripts" / "db_metrics"
MIGRATE = REPO / "scripts" / "migrate"
BATCH_DEVICES = 5000

FILL_SQL = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO devices(id, ip, mac, vendor, hostname, first_seen, last_seen, status, os_info,
                    services, notes)
SELECT i, '10.' || (i >> 16 & 255) || '.' || (i >> 8 & 255) || '.' || (i & 255) || '/' || i,
       printf('02:00:%02x:%02x:%02x:%02x', i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255),
       'vendor-' || (i % 97), 'host-' || i || '.example.net', '2023-11-14',
       strftime('%Y-%m-%d', 1700000000 + i * 37, 'unixepoch'),
       CASE i % 5 WHEN 0 THEN 'online' WHEN 1 THEN 'recently_seen' WHEN 2 THEN 'inactive'
         WHEN 3 THEN 'offline' ELSE 'unknown' END,
       'Linux 6.' || (i % 9), '22/tcp open ssh' || char(10) || '443/tcp open https',
       hex(randomblob(60))
FROM n;
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last),
     p(port, service) AS (VALUES (22, 'ssh'), (80, 'http'), (443, 'https'), (161, 'snmp'),
                                 (3306, 'mysql'))
INSERT INTO services(device_ip, port, service, version, state)
SELECT '10.' || (i >> 16 & 255) || '.' || (i >> 8 & 255) || '.' || (i & 255) || '/' || i,
       port, service, service || '-' || (i % 13) || ' ' || hex(randomblob(12)), 'open'
FROM n, p;
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last),
     k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < 12)
INSERT INTO network_changes(device_ip, change_type, change_description, old_value, new_value,
                            scan_id, created_at)
SELECT '10.' || (i >> 16 & 255) || '.' || (i >> 8 & 255) || '.' || (i & 255) || '/' || i,
       CASE j % 3 WHEN 0 THEN 'new' WHEN 1 THEN 'modified' ELSE 'disappeared' END,
       'change ' || j || ' of device ' || i || ': ' || hex(randomblob(20)),
       'old-' || hex(randomblob(8)), 'new-' || hex(randomblob(8)), NULL,
       strftime('%Y-%m-%d %H:%M:%S', 1700000000 + i * 37 + j * 3600, 'unixepoch')
FROM n, k;
"""

def bench_db(megabytes: int) -> Path:
    """The cached benchmark database, built when missing."""
    root = Path(os.environ.get("SQLITE_OPS_BENCH_DIR", "/tmp/sqlite-ops-bench"))
    root.mkdir(parents=True, exist_ok=True)
    db = root / f"metrics_v2_{megabytes}mb.db"
    done = root / f"metrics_v2_{megabytes}mb.done"
    if db.exists() and done.exists():
        return db
    for stale in (db, done, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    print(f"building {db} (~{megabytes} MB, once) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, str(MIGRATE), "--db", str(db), "up", "--no-backup"],
                   check=True, stdout=subprocess.DEVNULL)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA synchronous = off")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                 "INSERT INTO scans(scan_type, scan_date, devices_found, scan_file) "
                 "SELECT 'discovery', strftime('%Y-%m-%d %H:%M', 1700000000 + i * 600, "
                 "'unixepoch'), i % 500, 'discovery_' || i || '.md' FROM n")
    first = 1
    target = megabytes * 1024 * 1024
    while db.stat().st_size + _wal_size(db) < target:
        conn.execute("BEGIN")
        for statement in FILL_SQL.split(";\n")[:-1]:
            conn.execute(statement, {"first": first, "last": first + BATCH_DEVICES - 1})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        first += BATCH_DEVICES
    conn.execute("PRAGMA analysis_limit = 1000")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    done.touch()
    print(f"built in {time.monotonic() - started:.0f}s: {db.stat().st_size / 2**20:.0f} MiB, "
          f"{first - 1} devices", file=sys.stderr)
    return db


def _wal_size(db: Path) -> int:
    try:
        return Path(f"{db}-wal").stat().st_size
    except FileNotFoundError:
        return 0


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    megabytes = int(os.environ.get("BENCH_MB", "800"))
    runs = int(os.environ.get("BENCH_RUNS", "9"))
    db = bench_db(megabytes)
    # The same interpreter the db_metrics shebang (/usr/bin/env python3) finds.
    python = shutil.which("python3") or sys.executable
    env_free = str(db.parent / "no-backups-here")
    scrape = [str(DB_METRICS), "--db", str(db), "--dir", env_free]
    bare = [python, "-c", "import sqlite3"]
    timed(scrape)  # warm the page cache and the .pyc files
    bare_times, scrape_times = [], []
    for _ in range(runs):
        bare_times.append(timed(bare))
        scrape_times.append(timed(scrape))
    bare_ms = statistics.median(bare_times) * 1000
    scrape_ms = statistics.median(scrape_times) * 1000

    extras = [("--exact-counts", ["--exact-counts"]), ("--table-sizes (dbstat)", ["--table-sizes"]),
              ("--time-queries", ["--time-queries"])]
    extra_ms = []
    for label, flags in extras:
        times = [timed(scrape + flags) for _ in range(3)]
        extra_ms.append((label, statistics.median(times) * 1000))

    size = db.stat().st_size / 2**20
    print(f"database: {db} ({size:.0f} MiB), SQLite {sqlite3.sqlite_version}, "
          f"medians of {runs} runs (extras: 3 runs)")
    print(f"{'command':<44} {'median ms':>10} {'x bare':>8}")
    print(f"{'python3 -c import sqlite3 (bare start-up)':<44} {bare_ms:>10.1f} {1:>8.2f}")
    print(f"{'db_metrics (default scrape)':<44} {scrape_ms:>10.1f} {scrape_ms / bare_ms:>8.2f}")
    for label, ms in extra_ms:
        print(f"{'db_metrics ' + label:<44} {ms:>10.1f} {ms / bare_ms:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
