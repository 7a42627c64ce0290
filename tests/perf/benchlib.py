"""Shared pieces of the benchmarks: test databases, timing, peak memory, tables.

Benchmarks print ratios against baselines measured in the same run (``cp`` of
the same file, the naive ``.backup`` + ``gzip``, bare ``python3`` start-up).
They assert nothing about wall-clock time.

Databases are built once and cached in ``$SQLITE_OPS_BENCH_DIR`` (default: a
folder in the system temp directory), never inside the repository.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(REPO / "lib"))

from sqlite_ops.common import CONFIG_KEYS, LOCK_HELD_ENV  # noqa: E402

BENCH_DIR = Path(
    os.environ.get("SQLITE_OPS_BENCH_DIR", Path(tempfile.gettempdir()) / "sqlite-ops-bench")
)

BENCH_SCHEMA = """
CREATE TABLE devices(id INTEGER PRIMARY KEY, ip TEXT NOT NULL, hostname TEXT,
                     vendor TEXT, notes TEXT, last_seen TEXT NOT NULL);
CREATE INDEX devices_ip ON devices(ip);
CREATE INDEX devices_last_seen ON devices(last_seen DESC);
"""


def ops_env(**settings: str) -> dict[str, str]:
    """This machine's environment with no sqlite-ops setting in it (the code's
    own list of config keys, and the variables that pass state to child runs),
    no config file, then ``settings``."""
    drop = {*CONFIG_KEYS, "QUIET", LOCK_HELD_ENV, "SQLITE_OPS_CONFIG_WARNED"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(SQLITE_OPS_CONFIG=os.devnull, **settings)
    return env


def cached_db(name: str, build) -> Path:
    """BENCH_DIR/``name``, made once by ``build(tmp_path)`` and reused across runs.

    ``build`` writes a new database at ``tmp_path`` (any -wal checkpointed);
    it is renamed into place only when complete, so a killed build is redone.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / name
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".building")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    build(tmp)
    for companion in ("-wal", "-shm", ".sqlite-ops.lock"):
        Path(f"{tmp}{companion}").unlink(missing_ok=True)
    os.replace(tmp, path)
    return path


def bench_db(size_mb: int, journal_mode: str = "wal") -> Path:
    """A database of about ``size_mb`` MiB, built once and reused across runs."""
    return cached_db(f"bench_{size_mb}mb_{journal_mode}.db",
                     lambda tmp: _fill_devices(tmp, size_mb, journal_mode))


def _fill_devices(tmp: Path, size_mb: int, journal_mode: str) -> None:
    rnd = random.Random(size_mb)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.executescript(BENCH_SCHEMA)
    target = size_mb * 1024 * 1024
    next_id = 0
    while tmp.stat().st_size + file_size(f"{tmp}-wal") < target:
        rows = []
        for _ in range(20000):
            next_id += 1
            ip = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
            # Half random text, half repetitive: compresses like real data does.
            notes = "".join(rnd.choice("abcdefghij klmnop") for _ in range(rnd.randrange(40, 160)))
            rows.append((ip, f"host-{next_id}", rnd.choice(["Cisco", "HP", "Dell"]), notes,
                         f"2026-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO devices(ip, hostname, vendor, notes, last_seen) VALUES (?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    if journal_mode == "wal":
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def file_size(path: str) -> int:
    """Bytes, or 0 for a file that is not there (a -wal not yet made)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command; (wall seconds, peak RSS of the children in KiB). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def peak_rss_kib(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Peak RSS of one command and its children, in a fresh process (flat-memory check)."""
    probe = (
        "import resource, subprocess, sys;"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(["python3", "-c", probe, *cmd], env=env, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip())


@dataclass(frozen=True)
class Timing:
    """The wall seconds of the runs of one command."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> str:
        """The fastest and the slowest run, for a table: a ratio that differs
        from its target by less than this spread says little on its own."""
        return f"{min(self.runs):.2f}-{max(self.runs):.2f}"


def timings(cmd: list[str], runs: int = 5, env: dict[str, str] | None = None,
            before=None) -> Timing:
    """The wall time of ``runs`` runs; ``before()`` is called untimed before each."""
    times = []
    for _ in range(runs):
        if before:
            before()
        times.append(run_timed(cmd, env)[0])
    return Timing(tuple(times))


def median_time(cmd: list[str], runs: int = 5, env: dict[str, str] | None = None,
                before=None) -> float:
    """Median wall time of ``runs`` runs; ``before()`` is called untimed before each."""
    return timings(cmd, runs, env, before).median


def machine() -> str:
    """One line describing the machine, for the tables in docs/performance.md."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    sqlite_cli = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True)
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"sqlite3 CLI {sqlite_cli.stdout.split()[0] if sqlite_cli.stdout else '?'}")


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A Markdown table, ready to paste into docs/performance.md."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(c) for c in row) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
