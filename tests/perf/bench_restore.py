"""Benchmark: restoring the ~800 MB benchmark database, against `cp` of the same file.

    python3 tests/perf/bench_restore.py            # BENCH_MB=100 for a quick run

The backup is made with the real scripts/backup_database.sh. Every restore
variant runs scripts/restore_database.sh as an operator would; `cp` of the
database file is measured in the same run as the baseline. Prints Markdown
tables; asserts nothing about time.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    REPO,
    SCRIPTS,
    bench_db,
    machine,
    median_time,
    ops_env,
    print_table,
    run_timed,
)

sys.path.insert(0, str(REPO / "lib"))

from sqlite_ops import backup, integrity, restore  # noqa: E402

RESTORE = str(SCRIPTS / "restore_database.sh")
BACKUP = str(SCRIPTS / "backup_database.sh")


def env_for(db: Path, backup_dir: Path, **extra: str) -> dict[str, str]:
    return ops_env(DB_PATH=str(db), BACKUP_DIR=str(backup_dir), **extra)


def fresh_live(source: Path, live: Path) -> None:
    """An untimed copy of the benchmark database to restore over (WAL mode)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, live)


def stages(backup_file: Path, source: Path, work: Path) -> list[list[object]]:
    """Where a restore's time goes: each step of the library, timed in-process."""
    out, live = work / "stage.db", work / "stage-live.db"
    rows: list[list[object]] = []

    def clock(what: str, step) -> object:
        start = time.perf_counter()
        result = step()
        rows.append([what, time.perf_counter() - start])
        return result

    compression = restore.sniff_compression(backup_file)
    clock("decompress + SHA-256 of the file and of the content", lambda: restore.decompress(
        backup_file, compression, out))
    clock("PRAGMA integrity_check alone (mmap; only without a record)",
          lambda: integrity.run_check(str(out)))
    clock("verify checks with a record: FKs (fkcheck), counts",
          lambda: restore.structural_checks(str(out), check_integrity=False))
    found = clock("verify checks without one: integrity_check + (FKs, counts) alongside",
                  lambda: restore.structural_checks(str(out)))
    fresh_live(source, live)
    clock("replace: backup API into the live WAL db + checkpoint",
          lambda: restore.restore_into(str(out), str(live)))
    clock("check after replace: quick_check + row counts",
          lambda: restore.check_restored(str(live), found["tables"]))
    for path in (out, live):
        path.unlink(missing_ok=True)
    return rows


def main() -> int:
    size_mb = int(os.environ.get("BENCH_MB", "800"))
    runs = int(os.environ.get("BENCH_RUNS", "1"))
    source = bench_db(size_mb)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=source.parent))
    try:
        live = work / "live.db"
        backups = work / "backups"
        env = env_for(live, backups)
        fresh_live(source, live)

        backup_s = run_timed([BACKUP, "--quiet"], env)[0]
        backup_file = sorted(backups.glob("live_*.db*[!n]"))[-1]

        copy = work / "copy.db"
        cp_s = median_time(["cp", str(source), str(copy)], env=env,
                           before=lambda: copy.unlink(missing_ok=True), runs=max(3, runs))
        copy.unlink(missing_ok=True)
        # cp does not fsync; a restore must (the file it places is durable).
        cp_sync = ["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp", str(source), str(copy)]
        cp_sync_s = median_time(cp_sync, env=env, before=lambda: copy.unlink(missing_ok=True),
                                runs=max(3, runs))
        copy.unlink(missing_ok=True)

        verify_s = median_time([RESTORE, "--verify", "latest"], env=env, runs=runs)

        target = work / "restored.db"
        to_s = median_time([RESTORE, "--quiet", "--to", str(target), "latest"], env=env,
                           before=lambda: target.unlink(missing_ok=True), runs=runs)
        target.unlink(missing_ok=True)

        # The safety backup on its own: the library call a restore makes
        # (quick_check, no integrity record), in-process on a fresh live copy.
        fresh_live(source, live)
        safety_dir = work / "safety"
        safety_dir.mkdir()
        start = time.monotonic()
        backup.take_backup(str(live), str(safety_dir), compression="zstd", integrity="quick")
        safety_s = time.monotonic() - start

        full_s = median_time([RESTORE, "--yes", "--quiet", "latest"], env=env,
                             before=lambda: fresh_live(source, live), runs=runs)

        metrics = work / "metrics"
        drill_s = median_time([RESTORE, "--drill", "--metrics-dir", str(metrics)],
                             env=env_for(live, backups, TMPDIR=str(work)), runs=runs)
        prom = (metrics / "sqlite_ops_restore_live.prom").read_text()
        match = re.search(r"^sqlite_restore_drill_duration_seconds\{[^}]*\} (\S+)$", prom, re.M)
        drill_metric = float(match.group(1)) if match else float("nan")

        db_mb = source.stat().st_size / 2**20
        backup_mb = backup_file.stat().st_size / 2**20
        print(f"Machine: {machine()}")
        print(f"Database: {db_mb:.0f} MiB (WAL mode), backup {backup_file.name} "
              f"{backup_mb:.0f} MiB; runs per row: {runs} (cp: {max(3, runs)}, median)")

        def row(what: str, seconds: float) -> list[object]:
            return [what, seconds, f"{seconds / cp_s:.1f}x"]

        print_table("Restore vs cp", ["operation", "seconds", "vs cp"], [
            row("cp of the database file (baseline)", cp_s),
            row("cp + fsync of the copy", cp_sync_s),
            row("--verify latest (sha256, decompress, integrity_check, FKs, row counts)",
                verify_s),
            row("--to NEW latest (verify + rename into place + quick_check, counts)", to_s),
            row("--yes latest over the live db, with the safety backup", full_s),
            row("the safety backup alone (take_backup, quick_check; in-process)", safety_s),
            row("backup_database.sh of the live db (full integrity_check)", backup_s),
            row("--drill (wall time of the command)", drill_s),
            row("--drill: sqlite_restore_drill_duration_seconds it recorded", drill_metric),
        ])
        print_table("Where the time goes (library steps, in-process)", ["step", "seconds"],
                    stages(backup_file, source, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
