"""Soak: the toolkit under a production-like load for a while.

    make soak DURATION=600        (or: python3 tests/perf/soak.py --duration 600)

An application writes 100 commits per second for the whole run while the real
scripts run as cron would: a backup every few seconds, a restore drill every
minute, maintenance every half minute, a metrics scrape every two seconds.
At the end every backup must verify, the database must pass its checks, and
every row the writer committed must be there. Prints a summary table and
exits 1 if any of that fails.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from benchlib import machine, print_table  # noqa: E402
from opsenv import Writer, integrity_ok, make_dashboard, ops_env, run  # noqa: E402

from sqlite_ops.catalog import list_backups  # noqa: E402

SCHEDULE = [
    # (name, every seconds, first run after seconds, script, args): as cron would,
    # the first drill comes once there is a backup to drill with.
    ("backup", 5.0, 0.0, "backup_database.sh", ["--quiet"]),
    ("restore drill", 60.0, 10.0, "restore_database.sh", ["--drill", "--quiet"]),
    ("maintenance", 30.0, 2.0, "maintain_database.sh",
     ["--quiet", "check", "checkpoint", "analyze"]),
    ("metrics", 2.0, 0.0, "db_metrics", []),
]


def soak(duration: float, work: Path) -> bool:
    db = work / "dashboard.db"
    env = ops_env(work, DB_PATH=str(db), BACKUP_DIR=str(work / "backups"),
                  METRICS_DIR=str(work / "metrics"), KEEP_MIN="5", LOCK_TIMEOUT="20")
    make_dashboard(db, devices=5000, env=env)
    results: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
    failures: list[str] = []
    stop = threading.Event()

    def every(name: str, period: float, first: float, script: str, args: list[str]) -> None:
        next_at = time.monotonic() + first
        if stop.wait(first):
            return
        while not stop.is_set():
            start = time.monotonic()
            proc = run(script, *args, env=env, timeout=300)
            results[name].append((proc.returncode, time.monotonic() - start))
            if proc.returncode not in (0, 75):
                failures.append(f"{name} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))

    started = time.monotonic()
    with Writer(db, rate=100) as writer:
        threads = [threading.Thread(target=every, args=job, daemon=True) for job in SCHEDULE]
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join(timeout=600)
    elapsed = time.monotonic() - started

    missing = writer.missing()
    backups = list_backups(work / "backups", "dashboard")
    unverified = []
    for backup in backups:
        proc = run("restore_database.sh", "--verify", str(backup.path), env=env, timeout=300)
        if proc.returncode != 0:
            unverified.append(f"{backup.path.name}: {proc.stderr.strip()}")
    healthy = integrity_ok(db)

    print(f"\nSoak of {elapsed:.0f} s on {machine()}\n")
    rows = []
    for name, *_ in SCHEDULE:
        runs = results[name]
        codes = collections.Counter(code for code, _ in runs)
        times = [t for code, t in runs if code == 0] or [0.0]
        rows.append([name, len(runs), codes.get(0, 0), codes.get(75, 0),
                     sum(n for c, n in codes.items() if c not in (0, 75)),
                     statistics.median(times), max(times)])
    print_table("Scheduled runs", ["job", "runs", "exit 0", "exit 75 (busy)", "failed",
                                   "median s", "max s"], rows)
    print_table("Outcome", ["check", "result"], [
        ["writer commits acknowledged", len(writer.committed)],
        ["writer commits missing at the end", len(missing)],
        ["writer busy retries", len(writer.errors)],
        ["backups kept at the end (after pruning)", len(backups)],
        ["backups that failed --verify", len(unverified)],
        ["database integrity_check", "ok" if healthy else "FAILED"],
    ])
    for line in failures[:10] + unverified[:10]:
        print(f"FAILURE: {line}")
    return not (missing or unverified or failures or not healthy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqlite-ops-soak-") as work:
        ok = soak(args.duration, Path(work))
    print("\nsoak: PASSED" if ok else "\nsoak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
