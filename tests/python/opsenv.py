"""Helpers for the whole-toolkit proof suites: run the real scripts, build
databases, run an application-like writer, compare databases by content.

The proof suites (corpus, concurrency, fault injection, soak) drive the
scripts exactly as cron, a deploy or an operator would: as subprocesses, with
settings in the environment.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
CORPUS = Path(os.environ.get("SQLITE_OPS_CORPUS", REPO.parent / "shared" / "data"))
# nMapping+'s own SQL: the CREATE statements its code and its installer run,
# and the statements it issues on every scan import and page view.
NMAPPING = Path(os.environ.get("SQLITE_OPS_CLIENTS", REPO.parent / "shared" / "clients")
                ) / "nmapping-plus"

CONTRACT_EXIT_CODES = {0, 1, 2, 3, 4, 75}


def ops_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the scripts: nothing leaks in from the machine."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "TZ": "UTC",
        "SQLITE_OPS_CONFIG": "/dev/null",
        "MIGRATIONS_DIR": str(REPO / "migrations"),
    }
    env.update(extra)
    return env


def run(script: str, *args: str, env: dict[str, str], timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/ and return the finished process (never raises on exit code)."""
    return subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, input=input)


def make_db(path: Path, rows: int = 50, mode: str = "wal", page_size: int = 4096) -> Path:
    """The pytest layer's one small database: ``rows`` devices, one service each
    (``services.device_id`` references ``devices``), in journal mode ``mode``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.execute("CREATE TABLE devices(id INTEGER PRIMARY KEY, ip TEXT NOT NULL)")
    conn.execute("CREATE TABLE services(id INTEGER PRIMARY KEY, "
                 "device_id INTEGER NOT NULL REFERENCES devices(id), port INTEGER)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO devices(ip) VALUES (?)", [(f"10.0.0.{i}",) for i in range(rows)])
    conn.execute("INSERT INTO services(device_id, port) SELECT id, 22 FROM devices")
    conn.execute("COMMIT")
    conn.close()
    return path


def blob_db(path: Path, rows: int = 2000, mode: str = "delete") -> Path:
    """A database of ``rows`` random 500-byte blobs in ``t(id, v)``, in journal
    mode ``mode``: large enough that a transaction over it spills into the
    file (:func:`kill_writer_mid_transaction`)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO t(v) SELECT randomblob(500) FROM n", (rows,))
    conn.close()
    return path


def slow_sqlite(monkeypatch) -> None:
    """Every SQLite connection opened from now on runs its statements slowly
    (a progress handler that sleeps), so a check is still running when its
    caller gives up: what the caller does then can be seen."""
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.set_progress_handler(lambda: time.sleep(0.001), 100)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


HOT_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=10")  # spill to the file: the journal must be hot
conn.execute("BEGIN")
conn.execute("UPDATE t SET v = randomblob(500)")
conn.execute("INSERT INTO t(v) SELECT randomblob(500) FROM t")
print("ready", flush=True)
time.sleep(600)
"""


def in_a_pid_namespace_of_its_own(argv: list[str], env: dict[str, str],
                                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new PID namespace with its own /proc, as a sidecar
    container runs beside the application: it sees none of this namespace's
    processes, in /proc/*/fd or in /proc/locks. Skipped, saying why, where the
    kernel or the user may not make one (unprivileged, and no user namespaces)."""
    import pytest

    why = ""
    for unshare in (["unshare", "--pid", "--fork", "--mount-proc"],
                    ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]):
        try:
            probe = subprocess.run([*unshare, "true"], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("no unshare (util-linux): cannot make a PID namespace")
        if probe.returncode == 0:
            return subprocess.run([*unshare, *argv], env=env, capture_output=True, text=True,
                                  timeout=timeout)
        why = probe.stderr.strip()
    pytest.skip(f"cannot make a PID namespace here: {why}")


def seen_as_from_a_pid_namespace_of_its_own(monkeypatch, *modules) -> None:
    """What a process in a PID namespace of its own sees, without making one
    (a container may forbid it): /proc/locks lists only this process's own
    locks, and the /proc/*/fd scan (``holders``, as each of ``modules``
    imported it) finds nobody. The kernel's F_GETLK answers are real."""
    from sqlite_ops import common

    real = common._listed_locks

    def own_only(inode: int):
        listed = real(inode)
        return None if listed is None else [lock for lock in listed
                                            if lock[0] == common._self_pid()]

    monkeypatch.setattr(common, "_listed_locks", own_only)
    for module in modules:
        monkeypatch.setattr(module, "holders", lambda paths, include_self=False: ([], True))


def kill_writer_mid_transaction(db: Path | str) -> None:
    """A real writer of the rollback-journal database ``db`` (rows in a table
    ``t(id INTEGER PRIMARY KEY, v BLOB)``), killed with SIGKILL with half its
    transaction in the file: a hot journal, which a read-only open refuses."""
    proc = subprocess.Popen([sys.executable, "-c", HOT_WRITER, str(db)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    journal = Path(f"{db}-journal")
    assert journal.exists() and journal.stat().st_size > 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        try:
            conn.execute("SELECT count(*) FROM t").fetchone()
        except sqlite3.OperationalError as exc:
            assert "readonly" in str(exc)
        else:
            raise AssertionError("a read-only open read a database with a hot journal")
    finally:
        conn.close()


def index_out_of_step(db: Path) -> Path:
    """A database whose index disagrees with its table (a row the index
    lacks): PRAGMA quick_check passes, the full integrity_check fails."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v);"
                       "INSERT INTO t(v) VALUES ('a'), ('b');")
    entry = conn.execute("SELECT * FROM sqlite_schema WHERE name = 't_v'").fetchone()
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("DELETE FROM sqlite_schema WHERE name = 't_v'")
    conn.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO t(v) VALUES ('c')")
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("INSERT INTO sqlite_schema VALUES (?, ?, ?, ?, ?)", entry)
    conn.close()
    return db


def make_dashboard(db: Path, devices: int = 50, env: dict[str, str] | None = None) -> None:
    """A dashboard database built by the shipped migrations, with some rows."""
    env = env or ops_env(db.parent)
    proc = run("migrate", "--db", str(db), "up", "--no-backup", env=env)
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executemany(
            "INSERT INTO devices(ip, hostname, last_seen) VALUES (?, ?, ?)",
            [(f"10.1.{i // 256}.{i % 256}", f"host-{i}", "2026-01-01T00:00:00Z")
             for i in range(devices)],
        )
        conn.execute(
            "INSERT INTO services(device_ip, port, protocol) SELECT ip, 22, 'tcp' FROM devices"
        )
    conn.close()


def content_digest(db: Path) -> str:
    """SHA3 of the database's content (schema and rows), ignoring header bookkeeping."""
    proc = subprocess.run(["sqlite3", "-init", "/dev/null", "-readonly", str(db), ".sha3sum"],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def data_digest(db: Path, exclude: tuple[str, ...] = ("schema_migrations",)) -> str:
    """SHA-256 over the schema and every row of every table but ``exclude``.

    For comparing states across a migration, whose bookkeeping table records
    run-dependent values (applied_at, execution_ms).
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    digest = hashlib.sha256()
    try:
        objects = conn.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_schema "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        for kind, name, sql in objects:
            if name in exclude:
                continue
            digest.update(repr((kind, name, sql)).encode())
            if kind == "table":
                quoted = '"' + name.replace('"', '""') + '"'
                for row in conn.execute(f"SELECT * FROM {quoted} ORDER BY rowid"):
                    digest.update(repr(row).encode())
    finally:
        conn.close()
    return digest.hexdigest()


def applied_versions(db: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        conn.close()


def schema_of(db: Path) -> list[tuple[str, str, str]]:
    """Every schema object (tables, indexes, views, triggers) with its SQL."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def row_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]
        return {n: conn.execute(f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"')
                .fetchone()[0] for n in names}
    finally:
        conn.close()


def integrity_ok(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


@dataclass
class Writer:
    """An application writing ``rate`` commits per second into table ``app_log``.

    Every committed sequence number is remembered, so a test can prove that no
    acknowledged write was lost. Writes that hit SQLITE_BUSY are retried, as a
    real application with a busy timeout would.
    """

    db: Path
    rate: float = 100.0
    committed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        conn = sqlite3.connect(self.db, timeout=30)
        conn.execute("CREATE TABLE IF NOT EXISTS app_log(seq INTEGER PRIMARY KEY, at REAL)")
        conn.commit()
        conn.close()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        seq = 0
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                seq += 1
                while not self._stop.is_set():
                    try:
                        conn.execute("INSERT INTO app_log(seq, at) VALUES (?, ?)",
                                     (seq, time.time()))
                        self.committed.append(seq)
                        break
                    except sqlite3.OperationalError as exc:  # busy beyond the timeout
                        self.errors.append(str(exc))
                        time.sleep(0.01)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            conn.close()

    def missing(self) -> list[int]:
        """Committed sequence numbers not in the database now."""
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            present = {r[0] for r in conn.execute("SELECT seq FROM app_log")}
        finally:
            conn.close()
        return [s for s in self.committed if s not in present]


def wait_for_group_end(pgid: int) -> None:
    """Wait until no process of the group ``pgid`` (a run started with
    start_new_session) is left: the tools it started end too."""
    for _ in range(3000):  # polling for an event, not timing one
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def default_signals() -> None:
    """preexec_fn for a run a test interrupts: SIGINT and SIGQUIT back to their
    default. A shell without job control starts background commands with them
    ignored, and an ignored signal cannot be trapped by the scripts, so a trial
    started from such a shell would test nothing."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def python_starts(cmd: list[str], env: dict[str, str]) -> int:
    """How many times ``cmd`` (run with ``env``) starts python3: a ``python3``
    shim first on PATH logs each start, then runs the real one. Asserts that
    the run succeeded (the count of a failed run says nothing)."""
    real = shutil.which("python3", path=env.get("PATH"))
    assert real, "python3 is not on PATH"
    with tempfile.TemporaryDirectory(prefix="python-shim.") as shim_dir:
        log = Path(shim_dir) / "starts.log"
        log.write_text("")
        shim = Path(shim_dir) / "python3"
        shim.write_text(f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(log))}\n"
                        f"exec {shlex.quote(real)} \"$@\"\n")
        shim.chmod(0o755)
        shimmed = {**env, "PATH": f"{shim_dir}{os.pathsep}{env.get('PATH', '')}"}
        proc = subprocess.run(cmd, env=shimmed, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return len(log.read_text().splitlines())


def run_on_a_pty(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal; (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out, seen.decode(errors="replace")
