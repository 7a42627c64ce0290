"""Benchmark: every operation at two database sizes, time and peak memory.

    python3 tests/perf/bench_sizes.py              # 100 MB and ~800 MB
    BENCH_SIZES=20,100 python3 tests/perf/bench_sizes.py   # a quick run

For each size: `cp` of the file (the baseline, same run), a backup, a
restore into a new file (`--to`: verify + restore + check), maintenance
(`check analyze`), one metrics scrape and the `migrate up` no-op. For each: wall
time, the ratio to `cp`, and peak resident memory of the command and its
children, which must stay flat as the database grows. Prints Markdown tables;
asserts nothing about time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import SCRIPTS, bench_db, machine, peak_rss_kib, print_table, run_timed  # noqa: E402


def _env(work: Path, db: Path) -> dict[str, str]:
    return {**os.environ, "DB_PATH": str(db), "BACKUP_DIR": str(work / "backups"),
            "SQLITE_OPS_CONFIG": os.devnull, "LOCK_TIMEOUT": "0"}


def measure(size_mb: int) -> list[list[object]]:
    source = bench_db(size_mb)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="sqlite-ops-sizes-") as tmp:
        work = Path(tmp)
        db = work / "bench.db"
        shutil.copyfile(source, db)
        env = _env(work, db)
        # The benchmark schema is not the shipped one: record it at the newest
        # version anyway (--force), so that `up` below is the deploy-time no-op.
        latest = max(int(p.name.split("_")[0]) for p in (SCRIPTS.parent / "migrations").glob(
            "[0-9]*_*"))
        subprocess.run([str(SCRIPTS / "migrate"), "baseline", str(latest), "--force"], env=env,
                       check=True, capture_output=True)
        cp_seconds, _ = run_timed(["cp", str(db), str(work / "copy.db")])
        cp_kib = peak_rss_kib(["cp", str(db), str(work / "copy2.db")])
        rows.append([f"{size_mb} MB", "cp (baseline)", cp_seconds, 1.0, cp_kib / 1024])
        commands = [
            ("backup_database.sh", [str(SCRIPTS / "backup_database.sh"), "--quiet"]),
            ("restore --to (verify + restore + check)",
             [str(SCRIPTS / "restore_database.sh"), "--quiet", "--yes", "--to",
              str(work / "restored.db"), "latest"]),
            ("maintain check analyze",
             [str(SCRIPTS / "maintain_database.sh"), "--quiet", "check", "analyze"]),
            ("db_metrics (one scrape)", [str(SCRIPTS / "db_metrics")]),
            ("migrate up (no-op)", [str(SCRIPTS / "migrate"), "up"]),
        ]
        for label, cmd in commands:
            seconds, _ = run_timed(cmd, env)
            if label.startswith("restore"):
                (work / "restored.db").unlink()
            kib = peak_rss_kib(cmd, env)
            if label.startswith("restore"):
                (work / "restored.db").unlink()
            rows.append([f"{size_mb} MB", label, seconds, seconds / cp_seconds, kib / 1024])
    return rows


def main() -> int:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100,800").split(",")]
    print(f"# Every operation at {', '.join(f'{s} MB' for s in sizes)}\n\n{machine()}")
    rows = []
    for size in sizes:
        rows += measure(size)
    print_table("Time and peak memory by database size (warm cache, one run each)",
                ["database", "operation", "seconds", "vs cp", "peak RSS MiB"], rows)
    print(f"\nCommand: BENCH_SIZES={','.join(map(str, sizes))} python3 tests/perf/bench_sizes.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
