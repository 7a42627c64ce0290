"""What counting foreign-key violations costs a backup: sqlite_ops.fkcheck against the PRAGMA.

Every backup counts the rows ``PRAGMA foreign_key_check`` would report, for
its manifest, with ``sqlite_ops.fkcheck`` (one anti-join per foreign key). The
800 MB benchmark database has no foreign keys, so this builds two dashboard
databases from the real migrations, each with DEVICES ``devices`` and three
``services`` rows per device (each referencing its device by ``ip``, a TEXT
UNIQUE parent key). They differ in one thing, the order of the child rows:

* ``parent order``: the services of device 1, then of device 2, ... (rows
  written device by device);
* ``random order``: the same rows shuffled (services found scan after scan,
  in no order of their device).

For each it measures, in the same run: the fkcheck count (the work a backup
adds), the PRAGMA it replaces, both with a warm page cache and with a cold
one (the kernel's page cache dropped before each run: root only, else those
rows say so), ``PRAGMA quick_check`` for scale, and the whole
``backup_database.sh``.

    python3 tests/perf/bench_fk.py          # BENCH_FK_DEVICES=1000000, 3 services each
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import SCRIPTS, cached_db, machine, median_time, ops_env, print_table

DEVICES = int(os.environ.get("BENCH_FK_DEVICES", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
COUNT = ("import sqlite3, sys; from sqlite_ops import fkcheck; "
         "fkcheck.check(sqlite3.connect(sys.argv[1]))")


def build_dashboard(tmp: Path, order: str) -> None:
    """The dashboard schema (migrate up) with DEVICES devices and 3 services
    each, the services written in ``order`` ("ip": device by device, or
    "random()")."""
    subprocess.run([str(SCRIPTS / "migrate"), "--db", str(tmp), "up", "--no-backup"],
                   env=ops_env(), check=True, capture_output=True)
    fill = f"""
        PRAGMA journal_mode=WAL;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {DEVICES})
        INSERT INTO devices(id, ip, hostname, last_seen)
        SELECT i, '10.' || (i >> 16) || '.' || ((i >> 8) & 255) || '.' || (i & 255),
               'host-' || i, '2026-01-01' FROM n;
        INSERT INTO services(device_ip, port, protocol)
        SELECT ip, port, 'tcp' FROM devices, (SELECT 22 AS port UNION ALL SELECT 80
                                              UNION ALL SELECT 443)
        ORDER BY {order};
        PRAGMA wal_checkpoint(TRUNCATE);
    """
    subprocess.run(["sqlite3", "-batch", "-bail", str(tmp)], input=fill, text=True, check=True,
                   capture_output=True)


def can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    """Empty the kernel's page cache, so the next run reads the file from the disk."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def measure(db: Path, scratch: Path) -> dict[str, float | None]:
    """Seconds (median of RUNS) of each step on ``db``; None: not measurable here."""
    env = ops_env()
    out = scratch / "backups"

    def clear() -> None:
        for file in out.glob("*"):
            file.unlink()

    fkcheck = [sys.executable, "-c", COUNT, str(db)]
    fk_env = dict(env, PYTHONPATH=str(SCRIPTS.parent / "lib"))
    pragma = ["sqlite3", "-readonly", str(db), "PRAGMA foreign_key_check;"]
    cold = can_drop_caches()
    return {
        "backup": median_time([str(SCRIPTS / "backup_database.sh"), "--db", str(db), "--dir",
                               str(out), "--quiet"], runs=RUNS, env=env, before=clear),
        "quick_check": median_time(["sqlite3", "-readonly", str(db), "PRAGMA quick_check;"],
                                   runs=RUNS, env=env),
        "fkcheck warm": median_time(fkcheck, runs=RUNS, env=fk_env),
        "pragma warm": median_time(pragma, runs=RUNS, env=env),
        "fkcheck cold": median_time(fkcheck, runs=RUNS, env=fk_env, before=drop_caches)
        if cold else None,
        "pragma cold": median_time(pragma, runs=RUNS, env=env, before=drop_caches)
        if cold else None,
    }


def ratio(pragma: float | None, fkcheck: float | None) -> str:
    return f"{pragma / fkcheck:.1f}x" if pragma and fkcheck else ""


def seconds(value: float | None) -> float | str:
    return "not measured (dropping the page cache needs root)" if value is None else value


def main() -> int:
    shapes = {"parent order": cached_db(f"dashboard_fk_v2_{DEVICES}.db",
                                        lambda tmp: build_dashboard(tmp, "ip")),
              "random order": cached_db(f"dashboard_fk_random_v1_{DEVICES}.db",
                                        lambda tmp: build_dashboard(tmp, "random()"))}
    print(f"Machine: {machine()}")
    print(f"Databases: {DEVICES} devices, {3 * DEVICES} services each referencing a device by "
          f"ip; median of {RUNS} runs")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-fk-") as scratch:
        for shape, db in shapes.items():
            results[shape] = measure(db, Path(scratch))
    rows = []
    for shape, got in results.items():
        for cache in ("warm", "cold"):
            fk, pragma = got[f"fkcheck {cache}"], got[f"pragma {cache}"]
            rows.append([shape, cache, seconds(fk), seconds(pragma), ratio(pragma, fk)])
    print_table("Foreign-key count: sqlite_ops.fkcheck against PRAGMA foreign_key_check",
                ["services written in", "page cache", "fkcheck s", "PRAGMA s",
                 "PRAGMA / fkcheck"], rows)
    rows = []
    for shape, got in results.items():
        backup = got["backup"]
        size = shapes[shape].stat().st_size / 2**20
        rows.append([f"{shape} ({size:.0f} MiB)", backup,
                     f"{got['fkcheck warm']:.2f} ({100 * got['fkcheck warm'] / backup:.0f}%)",
                     f"{got['pragma warm']:.2f} ({100 * got['pragma warm'] / backup:.0f}%)",
                     f"{got['quick_check']:.2f} ({100 * got['quick_check'] / backup:.0f}%)"])
    print_table("The count's share of a backup (warm cache)",
                ["database", "backup_database.sh s", "fkcheck s (share)",
                 "PRAGMA would be s (share)", "quick_check s (share)"], rows)
    print("\nCommand: python3 tests/perf/bench_fk.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
