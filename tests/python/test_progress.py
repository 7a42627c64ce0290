"""sqlite_ops.progress: a line redrawn in place on a terminal, nothing anywhere else."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess

from opsenv import make_db, run_on_a_pty

from sqlite_ops import progress
from sqlite_ops.common import REPO_ROOT
from sqlite_ops.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_off_a_terminal():
    stream = io.StringIO()
    with Progress("compressing", 100, stream=stream) as bar:
        bar.advance(50)
    assert stream.getvalue() == ""


def test_quiet_silences_it_on_a_terminal():
    stream = FakeTerminal()
    with Progress("compressing", 100, stream=stream, quiet=True) as bar:
        bar.advance(50)
    assert stream.getvalue() == ""


def test_on_a_terminal_the_line_is_redrawn_in_place_then_cleared():
    stream = FakeTerminal()
    with Progress("compressing", 4 << 20, stream=stream, prog="backup_database.sh") as bar:
        bar.advance(2 << 20)
    text = stream.getvalue()
    assert text.startswith("\r\x1b[Kbackup_database.sh: compressing: 0 B of 4.0 MiB (0%)")
    assert "2.0 MiB of 4.0 MiB (50%)" in text
    assert text.endswith("\r\x1b[K")  # room for the log line that follows
    assert "\n" not in text


def test_the_line_says_rate_and_time_left_or_the_time_taken(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = Progress("hashing", 1000 << 20, stream=FakeTerminal())
    now[0] = 110.0
    bar.advance(250 << 20)
    assert bar.line() == ("sqlite-ops: hashing: 250.0 MiB of 1000.0 MiB (25%), "
                          "25.0 MiB/s, 30 s left")
    unknown = Progress("integrity_check", stream=FakeTerminal())
    assert unknown.line() == "sqlite-ops: integrity_check: 0 s"


def test_a_probe_reports_what_a_silent_step_has_done(tmp_path):
    grow = tmp_path / "copy"
    bar = Progress("snapshot", 1 << 20, stream=FakeTerminal(), probe=progress.file_size_probe(grow))
    assert bar.line().endswith("0 B of 1.0 MiB (0%)")
    grow.write_bytes(b"x" * (512 << 10))
    assert "512.0 KiB of 1.0 MiB (50%)" in bar.line()


def test_a_probe_cleared_by_complete_mid_redraw_does_not_break_the_line():
    # complete() runs on the step's thread while the redraw thread draws: the
    # probe it clears may be there when checked and gone when called.
    class Racing(Progress):
        reads = 0

        @property
        def probe(self):
            self.reads += 1
            return (lambda: 7) if self.reads == 1 else None

        @probe.setter
        def probe(self, value):
            pass

    bar = Racing("copying", 10, stream=FakeTerminal())
    assert "7 B of 10 B" in bar.line()


def test_backup_and_restore_draw_progress_on_a_terminal_only(tmp_path):
    db = make_db(tmp_path / "app.db")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SQLITE_OPS_CONFIG": os.devnull,
           "DB_PATH": str(db), "BACKUP_DIR": str(tmp_path / "backups")}
    backup = str(REPO_ROOT / "scripts" / "backup_database.sh")
    restore = str(REPO_ROOT / "scripts" / "restore_database.sh")

    # A rollback-journal database is copied first (a "snapshot" step), a WAL
    # one streamed straight into the compressor; the last one is kept below.
    for mode, steps in (("delete", ("snapshot: ", "compressing (zstd): ")),
                        ("wal", ("compressing (zstd): ",))):
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute(f"PRAGMA journal_mode={mode}").fetchall()
        conn.close()
        code, out, err = run_on_a_pty([backup], env)
        assert code == 0, err
        for step in steps:
            assert f"\r\x1b[Kbackup_database.sh: {step}" in err, err
        assert re.search(r"compressing \(zstd\): [^\r]*\(100%\)", err), err  # the last state
        assert "Backup completed:" in out

    code, _, err = run_on_a_pty([restore, "--verify", "latest"], env)
    assert code == 0, err
    assert "\r\x1b[Krestore_database.sh: decompressing (" in err

    app = sqlite3.connect(db)  # an application has it open: written through SQLite
    try:
        code, _, err = run_on_a_pty([restore, "--yes", "latest"], env)
    finally:
        app.close()
    assert code == 0, err
    assert "\r\x1b[Krestore_database.sh: writing into the database: " in err

    code, _, err = run_on_a_pty([backup, "--quiet"], env)
    assert code == 0 and "\r" not in err, err

    off = subprocess.run([backup], env=env, capture_output=True, text=True)
    assert off.returncode == 0 and "\r" not in off.stderr and "\x1b" not in off.stderr


def test_vacuum_draws_progress_on_a_terminal(tmp_path):
    db = make_db(tmp_path / "app.db")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SQLITE_OPS_CONFIG": os.devnull,
           "DB_PATH": str(db)}
    maintain = str(REPO_ROOT / "scripts" / "maintain_database.sh")
    code, out, err = run_on_a_pty([maintain, "--force", "vacuum"], env)
    assert code == 0, err
    assert "\r\x1b[Kmaintain_database.sh: VACUUM: " in err and "vacuum: ok" in out
    code, _, err = run_on_a_pty([maintain, "--quiet", "--force", "vacuum"], env)
    assert code == 0 and "\r" not in err, err
