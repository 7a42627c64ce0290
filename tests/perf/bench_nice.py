"""Benchmark: the drill-mode backup with the compressor niced, against the same
backup with the compressor at the backup's own priority, in alternation.

snapshot.COMPRESSOR_NICENESS is 10: on a machine with fewer cores than busy
threads, the check beside the compressor (one thread, the longest chain on a
database with foreign keys) should go first. This measures whether it pays,
for both database shapes of bench_targets.py, one run of each setting after
the other (the machine's speed drifts within a run: alternation keeps that
out of the ratio). The backup is the whole run (python3 -m sqlite_ops.backup,
what backup_database.sh hands over to) with INTEGRITY_CHECK=drill, into a
fresh directory each time. Nothing here asserts on time.

    python3 tests/perf/bench_nice.py        # BENCH_MB=800 BENCH_PAIRS=8 by default
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_targets import SIZE_MB, build_app  # noqa: E402
from benchlib import (  # noqa: E402
    REPO,
    Timing,
    bench_db,
    cached_db,
    machine,
    print_table,
    run_timed,
)

from sqlite_ops.snapshot import COMPRESSOR_NICENESS as NICENESS  # noqa: E402 (on the path now)

PAIRS = int(os.environ.get("BENCH_PAIRS", "8"))

# The backup run, with the compressor's niceness given as the first argument.
RUN = """
import sys
from sqlite_ops import backup, snapshot
snapshot.COMPRESSOR_NICENESS = int(sys.argv[1])
sys.exit(backup.main(sys.argv[2:]))
"""


def backup_seconds(db: Path, work: Path, niceness: int) -> float:
    dest = work / "backups"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(mode=0o700)
    cmd = [sys.executable, "-c", RUN, str(niceness), "--db", str(db), "--dir", str(dest),
           "--retention-days", "30", "--keep", "7", "--compress", "zstd",
           "--integrity-check", "drill", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "TMPDIR": str(work)}
    return run_timed(cmd, env)[0]  # (raises when the backup fails)


def measure(shape: str, source: Path, work: Path) -> list[object]:
    live = work / f"{shape}.db"
    shutil.copyfile(source, live)
    equal, niced = [], []
    for _ in range(PAIRS):
        equal.append(backup_seconds(live, work, 0))
        niced.append(backup_seconds(live, work, NICENESS))
    live.unlink()
    at_0, at_n = Timing(tuple(equal)), Timing(tuple(niced))
    return [shape, f"{at_0.median:.2f}", at_0.spread, f"{at_n.median:.2f}", at_n.spread,
            f"{at_n.median / at_0.median:.2f}x"]


def main() -> int:
    big = bench_db(SIZE_MB)
    app = cached_db(f"bench_app_{SIZE_MB}mb.db", build_app)
    print(machine())
    print(f"BENCH_MB={SIZE_MB}, {PAIRS} pairs in alternation, warm page cache")
    with tempfile.TemporaryDirectory(prefix="bench-nice-") as tmp:
        rows = [measure("big", big, Path(tmp)), measure("app", app, Path(tmp))]
    print_table("Drill-mode backup: compressor at niceness 0 against niceness "
                f"{NICENESS} (s)",
                ["db", "niceness 0, median", "runs", f"niceness {NICENESS}, median", "runs",
                 "niced / equal"], rows)
    print(f"\nCommand: BENCH_MB={SIZE_MB} BENCH_PAIRS={PAIRS} python3 tests/perf/bench_nice.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
