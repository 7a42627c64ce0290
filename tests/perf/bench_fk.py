"""What counting foreign-key violations costs a backup: sqlite_ops.fkcheck against the PRAGMA.

Every backup counts the rows ``PRAGMA foreign_key_check`` would report, for
its manifest, with ``sqlite_ops.fkcheck`` (one anti-join per foreign key). The
800 MB benchmark database has no foreign keys, so this builds a dashboard
database from the real migrations with many ``services`` rows (each
referencing a ``devices`` row) and measures, in the same run: the whole
``backup_database.sh``, the fkcheck count (the work the backup adds), the
PRAGMA it replaces, and ``PRAGMA quick_check`` alone (for scale).

    python3 tests/perf/bench_fk.py          # BENCH_FK_DEVICES=1000000, 3 services each
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import SCRIPTS, cached_db, machine, median_time, print_table

DEVICES = int(os.environ.get("BENCH_FK_DEVICES", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def build_dashboard(tmp: Path) -> None:
    """The dashboard schema (migrate up) with DEVICES devices and 3 services each."""
    env = dict(os.environ, SQLITE_OPS_CONFIG=os.devnull)
    subprocess.run([str(SCRIPTS / "migrate"), "--db", str(tmp), "up", "--no-backup"],
                   env=env, check=True, capture_output=True)
    fill = f"""
        PRAGMA journal_mode=WAL;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {DEVICES})
        INSERT INTO devices(id, device_ip, hostname, last_seen)
        SELECT i, '10.' || (i >> 16) || '.' || ((i >> 8) & 255) || '.' || (i & 255),
               'host-' || i, '2026-01-01T00:00:00Z' FROM n;
        INSERT INTO services(device_id, port, protocol) SELECT id, 22, 'tcp' FROM devices;
        INSERT INTO services(device_id, port, protocol) SELECT id, 80, 'tcp' FROM devices;
        INSERT INTO services(device_id, port, protocol) SELECT id, 443, 'tcp' FROM devices;
        PRAGMA wal_checkpoint(TRUNCATE);
    """
    subprocess.run(["sqlite3", "-batch", "-bail", str(tmp)], input=fill, text=True, check=True,
                   capture_output=True)


def main() -> int:
    db = cached_db(f"dashboard_fk_{DEVICES}.db", build_dashboard)
    size_mib = db.stat().st_size / 2**20
    print(f"Machine: {machine()}")
    print(f"Database: {size_mib:.0f} MiB (WAL), {DEVICES} devices, {3 * DEVICES} services "
          f"each referencing a device; median of {RUNS} runs, warm cache")
    with tempfile.TemporaryDirectory(prefix="bench-fk-") as scratch:
        out = Path(scratch) / "backups"
        env = dict(os.environ, SQLITE_OPS_CONFIG=os.devnull)

        def clear() -> None:
            for file in out.glob("*"):
                file.unlink()

        backup_s = median_time([str(SCRIPTS / "backup_database.sh"), "--db", str(db), "--dir",
                                str(out), "--quiet"], runs=RUNS, env=env, before=clear)
        fk_s = median_time(["sqlite3", "-readonly", str(db), "PRAGMA foreign_key_check;"],
                           runs=RUNS, env=env)
        count = ("import sqlite3, sys; from sqlite_ops import fkcheck; "
                 "fkcheck.check(sqlite3.connect(sys.argv[1]))")
        fkcheck_s = median_time([sys.executable, "-c", count, str(db)], runs=RUNS,
                                env=dict(env, PYTHONPATH=str(SCRIPTS.parent / "lib")))
        quick_s = median_time(["sqlite3", "-readonly", str(db), "PRAGMA quick_check;"],
                              runs=RUNS, env=env)
    print_table("Foreign-key count in a backup", ["step", "seconds", "share of the backup"], [
        ["backup_database.sh (all of it)", backup_s, "100%"],
        ["sqlite_ops.fkcheck alone (what the manifest's count adds)", fkcheck_s,
         f"{100 * fkcheck_s / backup_s:.0f}%"],
        ["PRAGMA foreign_key_check alone (what it replaces)", fk_s,
         f"{100 * fk_s / backup_s:.0f}%"],
        ["PRAGMA quick_check alone (for scale)", quick_s, f"{100 * quick_s / backup_s:.0f}%"],
    ])
    print("\nCommand: python3 tests/perf/bench_fk.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
