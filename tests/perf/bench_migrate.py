"""Benchmark scripts/migrate: the deploy-time no-op, and applying many migrations.

    python3 tests/perf/bench_migrate.py [--runs N] [--python PATH] [--no-yoyo]

Rows (medians of N runs, measured side by side in one run, alternating):

* ``up`` with 200 migrations already applied (what every deploy pays) against
  bare ``python -c 'import sqlite3'`` start-up. Target: within 1.5x.
* ``up`` applying 200 small migrations to a fresh database against
  yoyo-migrations on the same files. yoyo is not a project dependency: it is
  installed into a temporary venv for this run; the row is skipped, saying why,
  when that fails (no network, no pip).

Both interpreters get a byte-code cache in a temp directory (as an installed
toolkit would have), so the figures do not include compiling the toolkit.
Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
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
from benchlib import machine, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MIGRATE = REPO / "scripts" / "migrate"
COUNT = 200


def write_migrations(directory: Path, count: int = COUNT) -> None:
    """Small plain-SQL migrations (no section markers), valid for both tools."""
    directory.mkdir(parents=True)
    for version in range(1, count + 1):
        (directory / f"{version:04d}_table_{version}.sql").write_text(
            f"CREATE TABLE table_{version} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            f"created_at TEXT);\n"
            f"CREATE INDEX table_{version}_name ON table_{version} (name);\n"
            f"INSERT INTO table_{version} (name) VALUES ('first'), ('second');\n")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... exited {proc.returncode}: "
                           f"{proc.stderr.decode()[-400:]}")
    return elapsed


def side_by_side(a: list[str], b: list[str], runs: int, env: dict[str, str],
                 before=None) -> tuple[float, float]:
    """Median seconds of a and of b, alternating runs so drift hits both alike."""
    times_a, times_b = [], []
    for _ in range(runs):
        if before:
            before()
        times_a.append(timed(a, env))
        if before:
            before()
        times_b.append(timed(b, env))
    return statistics.median(times_a), statistics.median(times_b)


def tables(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                            "AND name LIKE 'table_%'").fetchone()[0]
    finally:
        conn.close()


def install_yoyo(python: str, venv: Path) -> tuple[str | None, str]:
    """(path of the yoyo command, "") or (None, why not)."""
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True,
                       timeout=120)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                              "--disable-pip-version-check", "yoyo-migrations"],
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create a venv: {exc}"
    if pip.returncode != 0:
        last = (pip.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"pip install yoyo-migrations failed: {last}"
    return str(venv / "bin" / "yoyo"), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per measurement (median)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    parser.add_argument("--no-yoyo", action="store_true", help="skip the yoyo comparison")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(work / "pycache"), SQLITE_OPS_CONFIG=os.devnull,
               LOCK_TIMEOUT="0")
    rows: list[list[object]] = []
    try:
        migrations = work / "migrations"
        write_migrations(migrations)
        db = work / "noop.db"
        base = [args.python, "-c", "import sqlite3"]
        up = [args.python, str(MIGRATE), "--db", str(db), "--migrations", str(migrations), "up",
              "--no-backup"]
        timed(up, env)  # apply all 200 (and warm the byte-code cache)
        timed(base, env)
        t_base, t_noop = side_by_side(base, up, args.runs, env)
        rows.append([f"up, {COUNT} applied (no-op)", f"{t_noop * 1000:.1f} ms",
                     "python -c 'import sqlite3'", f"{t_base * 1000:.1f} ms",
                     f"{t_noop / t_base:.2f}x", "<= 1.5x"])

        fresh = work / "fresh.db"

        def reset() -> None:
            for suffix in ("", "-wal", "-shm", "-journal", ".sqlite-ops.lock"):
                Path(f"{fresh}{suffix}").unlink(missing_ok=True)

        apply = [args.python, str(MIGRATE), "--db", str(fresh), "--migrations",
                 str(migrations), "up", "--no-backup"]
        yoyo, why = (None, "--no-yoyo given") if args.no_yoyo else install_yoyo(
            args.python, work / "yoyo-venv")
        runs = max(3, args.runs // 4)
        if yoyo:
            yoyo_cmd = [yoyo, "apply", "--batch", "--no-config-file", "--database",
                        f"sqlite:///{fresh}", str(migrations)]
            t_ours, t_yoyo = side_by_side(apply, yoyo_cmd, runs, env, before=reset)
            # Both really applied everything (a fast no-op would prove nothing).
            for cmd in (apply, yoyo_cmd):
                reset()
                timed(cmd, env)
                if tables(fresh) < COUNT:
                    raise RuntimeError(f"{cmd[0]} left {tables(fresh)} of {COUNT} tables")
            rows.append([f"up, apply {COUNT} migrations", f"{t_ours * 1000:.0f} ms",
                         "yoyo apply, same files", f"{t_yoyo * 1000:.0f} ms",
                         f"{t_ours / t_yoyo:.2f}x", "< 1x"])
        else:
            times = []
            for _ in range(runs):
                reset()
                times.append(timed(apply, env))
            median = statistics.median(times)
            rows.append([f"up, apply {COUNT} migrations", f"{median * 1000:.0f} ms",
                         "yoyo apply (skipped)", why, "-", "< 1x"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"# {machine()}; measured interpreter: {args.python}; median of {args.runs} runs "
          f"(apply rows: {max(3, args.runs // 4)})")
    print_table("migrate", ["command", "time", "baseline", "baseline time", "ratio", "target"],
                rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
