"""Benchmark of scripts/backup_database.sh against `cp` and the naive pipeline.

    python3 tests/perf/bench_backup.py            # the ~800 MB database
    BENCH_MB=100 python3 tests/perf/bench_backup.py   # a quick run

Measured side by side in one run, on the same cached database (warm page cache
for every contender):

* ``cp`` of the database file (the floor: one read, one write);
* the full default backup (snapshot + quick_check + row counts + compress +
  both checksums + manifest + fsync + publish + prune);
* the same with ``--compress gzip`` and ``--compress none``;
* the naive ``sqlite3 .backup`` + ``gzip`` pipeline;
* both again while a writer commits 100 times a second (the naive ``.backup``
  restarts on every commit: it is given a time limit and reported as not
  finishing);
* peak memory at two database sizes (must stay flat);
* compressor levels on the smaller database.

Prints Markdown tables for docs/performance.md; asserts nothing about time.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    SCRIPTS,
    bench_db,
    machine,
    median_time,
    ops_env,
    peak_rss_kib,
    print_table,
    run_timed,
)

BACKUP = str(SCRIPTS / "backup_database.sh")
MB = 1024 * 1024
NAIVE_LIMIT = int(os.environ.get("BENCH_NAIVE_LIMIT", "60"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def env_for(backup_dir: Path) -> dict[str, str]:
    return ops_env(BACKUP_DIR=str(backup_dir))


def clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def backup_cmd(db: Path, out: Path, *extra: str) -> list[str]:
    return [BACKUP, "--quiet", "--db", str(db), "--dir", str(out), *extra]


def published(directory: Path) -> Path:
    files = [p for p in directory.iterdir()
             if not p.name.startswith(".") and not p.name.endswith(".manifest.json")]
    return max(files, key=lambda p: p.stat().st_mtime)


def naive_cmd(db: Path, out: Path) -> list[str]:
    target = out / "naive.db"
    return ["bash", "-c", 'sqlite3 "$1" ".backup \'$2\'" && gzip -f "$2"', "naive", str(db),
            str(target)]


class Writer:
    """A separate process committing one small row about 100 times a second."""

    CODE = r"""
import os, sqlite3, sys, time
db, stop, out = sys.argv[1:4]
c = sqlite3.connect(db, timeout=120, isolation_level=None)
c.execute("CREATE TABLE IF NOT EXISTS bench_writes(id INTEGER PRIMARY KEY, at REAL, v BLOB)")
n, start = 0, time.time()
while not os.path.exists(stop):
    c.execute("INSERT INTO bench_writes(at, v) VALUES (?, randomblob(200))", (time.time(),))
    n += 1
    time.sleep(max(0.0, start + n / 100 - time.time()))
open(out, "w").write(f"{n / (time.time() - start):.0f}")
"""

    def __init__(self, db: Path, work: Path) -> None:
        self.stop = work / "writer.stop"
        self.out = work / "writer.rate"
        self.stop.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(db), str(self.stop),
                                      str(self.out)])
        time.sleep(1.0)

    def finish(self) -> str:
        self.stop.touch()
        self.proc.wait()
        return self.out.read_text() if self.out.exists() else "?"


def timed_with_limit(cmd: list[str], env: dict[str, str], limit: int) -> str:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return f"did not finish in {limit} s"
    took = time.perf_counter() - start
    if proc.returncode != 0:
        return f"failed after {took:.1f} s: {proc.stderr.decode(errors='replace').strip()[-80:]}"
    return f"{took:.2f} s"


def main() -> int:
    size_mb = int(os.environ.get("BENCH_MB", "800"))
    small_mb = min(100, size_mb)
    db = bench_db(size_mb)
    small = bench_db(small_mb)
    db_bytes = db.stat().st_size
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    out = work / "backups"
    env = env_for(out)
    print(f"# backup_database.sh benchmark\n\n{machine()}, load average "
          f"{os.getloadavg()[0]:.1f} at start\n\n"
          f"Database: {db_bytes / MB:.0f} MiB (WAL); cp, cp + fsync and the default backup "
          f"{RUNS} runs each, interleaved, median; others once; warm cache.")

    try:
        # --- side by side -----------------------------------------------------
        # cp, cp + fsync and the default backup interleaved, so a busy
        # machine slows all three alike.
        cp_runs, cp_sync_runs, ours_runs = [], [], []
        for _ in range(RUNS):
            clear(out)
            cp_runs.append(run_timed(["cp", str(db), str(out / "copy.db")])[0])
            clear(out)
            cp_sync_runs.append(run_timed(["bash", "-c", 'cp "$1" "$2" && sync "$2"', "cp",
                                           str(db), str(out / "copy.db")])[0])
            clear(out)
            ours_runs.append(run_timed(backup_cmd(db, out), env)[0])
        cp_time, cp_sync = statistics.median(cp_runs), statistics.median(cp_sync_runs)
        rows = [["cp (floor; not durable)", cp_time, db_bytes / MB / cp_time, "1.00x", "-"],
                ["cp + fsync", cp_sync, db_bytes / MB / cp_sync, f"{cp_sync / cp_time:.2f}x",
                 "-"]]
        ratios = []
        for codec in ("zstd", "gzip", "none"):
            if codec == "zstd":
                seconds = statistics.median(ours_runs)
            else:
                seconds = median_time(backup_cmd(db, out, "--compress", codec), 1, env,
                                      before=lambda: clear(out))
            size = published(out).stat().st_size
            ratios.append([codec, size / MB, db_bytes / size])
            label = "backup_database.sh (default: zstd)" if codec == "zstd" else \
                f"backup_database.sh --compress {codec}"
            rows.append([label, seconds, db_bytes / MB / seconds, f"{seconds / cp_time:.2f}x",
                         f"{size / MB:.1f} MiB"])
        clear(out)
        naive_time, _ = run_timed(naive_cmd(db, out), env)
        rows.append(["naive: sqlite3 .backup + gzip", naive_time, db_bytes / MB / naive_time,
                     f"{naive_time / cp_time:.2f}x",
                     f"{(out / 'naive.db.gz').stat().st_size / MB:.1f} MiB"])
        print_table(f"Backup of a {db_bytes / MB:.0f} MiB database, idle",
                    ["method", "seconds", "MB/s", "vs cp", "output"], rows)
        print_table("Compression ratio per codec (default backup levels)",
                    ["codec", "file MiB", "ratio"], ratios)

        # --- under a writer ---------------------------------------------------
        live = work / "live.db"
        shutil.copyfile(db, live)
        clear(out)
        writer = Writer(live, work)
        try:
            ours = timed_with_limit(backup_cmd(live, out), env, NAIVE_LIMIT)
            naive = timed_with_limit(naive_cmd(live, out), env, NAIVE_LIMIT)
        finally:
            rate = writer.finish()
        check = sqlite3.connect(live)
        commits = check.execute("SELECT count(*) FROM bench_writes").fetchone()[0]
        check.close()
        print_table(f"While a writer commits ~100 times a second (measured {rate}/s, "
                    f"{commits} commits in total)", ["method", "result"],
                    [["backup_database.sh (one-step backup API)", ours],
                     ["naive: sqlite3 .backup + gzip", naive]])

        # --- memory -------------------------------------------------------------
        mem_rows = []
        for path in dict.fromkeys([small, db]):
            clear(out)
            kib = peak_rss_kib(backup_cmd(path, out), env)
            mem_rows.append([f"{path.stat().st_size / MB:.0f} MiB", f"{kib / 1024:.1f} MiB"])
        print_table("Peak memory (largest process of the run)", ["database", "peak RSS"],
                    mem_rows)

        # --- compressor levels ------------------------------------------------
        level_rows = []
        small_bytes = small.stat().st_size
        for cmd in (["zstd", "-1", "-T0"], ["zstd", "-3", "-T0"], ["zstd", "-6", "-T0"],
                    ["gzip", "-1"], ["gzip", "-6"]):
            if shutil.which(cmd[0]) is None:
                continue
            start = time.perf_counter()
            with open(small, "rb") as src:
                proc = subprocess.run([*cmd, "-c"], stdin=src, stdout=subprocess.PIPE,
                                      check=True)
            took = time.perf_counter() - start
            level_rows.append([" ".join(cmd), took, small_bytes / MB / took,
                               small_bytes / len(proc.stdout)])
        print_table(f"Compressor levels on the {small_bytes / MB:.0f} MiB database",
                    ["command", "seconds", "MB/s", "ratio"], level_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nCommand: BENCH_MB={size_mb} python3 tests/perf/bench_backup.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
