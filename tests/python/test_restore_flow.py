"""Tests for lib/sqlite_ops/restore_flow.py: one restore as one process, its
state in memory; the safety backup a library call under the restore's lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from opsenv import SCRIPTS, content_digest, make_db, ops_env, python_starts

from sqlite_ops import backup, restore, restore_flow
from sqlite_ops.common import EX_FAIL, EX_INTEGRITY, EX_USAGE, OpsError

RESTORE = str(SCRIPTS / "restore_database.sh")


@pytest.fixture
def world(tmp_path):
    """A database (50 devices), a verified backup of it, then 7 rows more."""
    db = make_db(tmp_path / "app.db")
    backups = tmp_path / "backups"
    backups.mkdir()
    taken = backup.take_backup(str(db), str(backups), compression="zstd")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executemany("INSERT INTO devices(ip) VALUES (?)", [("later",)] * 7)
    conn.close()
    return db, Path(taken.path), tmp_path


def options(db: Path, tmp_path: Path, **extra) -> restore_flow.Options:
    values = dict(action="restore", spec="latest", db=str(db),
                  backup_dir=str(tmp_path / "backups"), yes=True, quiet=True, script=RESTORE)
    values.update(extra)
    return restore_flow.Options(**values)


def devices(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM devices").fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# One process per operation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--yes", "latest"], ["--verify", "latest"], ["--list"], ["--drill"],
    ["--yes", "--to", "{to}", "latest"],
], ids=["restore", "verify", "list", "drill", "to"])
def test_each_action_starts_python_at_most_twice(world, args):
    db, _, tmp_path = world
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  METRICS_DIR=str(tmp_path / "metrics"))
    argv = [a.replace("{to}", str(tmp_path / "copy.db")) for a in args]
    starts = python_starts([RESTORE, *argv], env)
    assert starts <= 2, f"{args}: {starts} python3 starts"


def test_a_restore_runs_in_memory_no_report_file_and_its_undo_works(world, capsys):
    db, taken, tmp_path = world
    before = content_digest(db)
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    out = capsys.readouterr().out
    assert devices(db) == 50
    safety = next(line.split(": ", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("  safety backup:"))
    assert Path(safety).parent == tmp_path / "backups" / "pre-restore"
    # Nothing was left beside the database: no work dir, no report between steps.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    undo = next(line.split(": ", 1)[1].strip() for line in out.splitlines()
                if line.startswith("  undo with:"))
    env = ops_env(tmp_path)
    proc = subprocess.run(["bash", "-c", undo], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert content_digest(db) == before


# ---------------------------------------------------------------------------
# The safety backup: a library call; only damage means a raw copy
# ---------------------------------------------------------------------------


def _safety_fails(monkeypatch, code, message):
    def failing(*args, **kwargs):
        raise OpsError(code, message)
    monkeypatch.setattr(restore_flow, "take_backup", failing)


@pytest.mark.parametrize(("code", "message", "said"), [
    (EX_FAIL, "cannot write: No space left on device; nothing was published",
     "the safety backup of {db} failed (cannot write: No space left on device); nothing was "
     "changed"),
    (EX_USAGE, "unknown compression 'xz' (zstd, gzip or none)",
     "the safety backup of {db} was refused (unknown compression 'xz' (zstd, gzip or none)); "
     "nothing was changed"),
])
def test_a_safety_backup_failing_for_any_reason_but_damage_stops_with_nothing_changed(
        world, monkeypatch, capsys, code, message, said):
    db, _, tmp_path = world
    before = content_digest(db)
    _safety_fails(monkeypatch, code, message)
    assert restore_flow.run_action(options(db, tmp_path)) == EX_FAIL
    err = capsys.readouterr().err
    assert f"restore_database.sh: {said.format(db=db)}\n" in err
    assert content_digest(db) == before
    assert list((tmp_path / "backups" / "pre-restore").iterdir()) == []  # no raw copy


def test_damage_found_by_the_safety_backup_means_a_raw_copy_then_the_restore(
        world, monkeypatch, capsys):
    db, _, tmp_path = world
    damaged = db.read_bytes()
    _safety_fails(monkeypatch, EX_INTEGRITY, f"{db} failed PRAGMA quick_check (page 3); "
                                             "nothing was published; run maintain_database.sh")
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    out, err = capsys.readouterr()
    assert f"is too damaged for a verified backup ({db} failed PRAGMA quick_check (page 3)): " \
           "its files were copied as they are into" in err
    (raw,) = (tmp_path / "backups" / "pre-restore").glob("app_*.raw")
    assert (raw / "app.db").read_bytes() == damaged
    assert "  raw copy:        " in out and devices(db) == 50


def test_the_safety_backup_is_quick_checked_under_the_restores_lock(world, monkeypatch):
    db, _, tmp_path = world
    seen = {}
    real = restore_flow.take_backup

    def watching(*args, **kwargs):
        seen.update(kwargs)
        seen["lock"] = os.environ.get("SQLITE_OPS_LOCK_HELD")
        return real(*args, **kwargs)
    monkeypatch.setattr(restore_flow, "take_backup", watching)
    assert restore_flow.run_action(options(db, tmp_path, compression="gzip")) == 0
    assert seen["integrity"] == "quick" and seen["compression"] == "gzip"
    assert seen["lock"] == f"{os.path.realpath(db)}.sqlite-ops.lock"
    (safety,) = (tmp_path / "backups" / "pre-restore").glob("app_*.db.gz")
    # No integrity record: restoring the safety backup runs integrity_check then.
    report = restore.verify_backup(safety, tmp_path / "work.db")
    assert report.integrity.startswith("checked now (integrity_check ok; ")


# ---------------------------------------------------------------------------
# Signals: what each step says
# ---------------------------------------------------------------------------


def _signal_in(monkeypatch, module, name, sig):
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, signalled)


def test_a_signal_during_the_safety_backup_says_the_database_was_not_touched(
        world, monkeypatch, capsys):
    db, _, tmp_path = world
    before = content_digest(db)
    _signal_in(monkeypatch, restore_flow, "take_backup", signal.SIGTERM)
    assert restore_flow.run_action(options(db, tmp_path)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert (f"restore_database.sh: interrupted during the safety backup of {db}: the database "
            "was not touched and nothing was restored\n") in err
    assert content_digest(db) == before
    assert list((tmp_path / "backups" / "pre-restore").iterdir()) == []


def test_a_signal_once_the_restore_was_checked_waits_for_the_receipt(world, monkeypatch, capsys):
    db, taken, tmp_path = world
    _signal_in(monkeypatch, restore, "settle_ownership", signal.SIGTERM)
    assert restore_flow.run_action(options(db, tmp_path)) == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert f"Restore completed: {db}" in out and devices(db) == 50
    assert err.endswith("restore_database.sh: SIGTERM arrived while the restore was being "
                        "written; it was finished and checked first (receipt above)\n")


def test_a_signal_during_the_write_says_what_it_left(world, monkeypatch, capsys):
    db, taken, tmp_path = world
    _signal_in(monkeypatch, restore, "_check_own_copy", signal.SIGINT)
    assert restore_flow.run_action(options(db, tmp_path)) == 130
    err = capsys.readouterr().err
    assert f"interrupted after the copy was committed: {db} holds the backup's content" in err
    assert "the safety backup taken before this attempt is kept:" in err
    assert devices(db) == 50


# ---------------------------------------------------------------------------
# The undo command
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["plain", "it's a \"dir\"", "new\nline", "tab\there", "é-ü"])
def test_shell_quote_stays_on_one_line_and_means_the_word(word):
    quoted = restore_flow.shell_quote(word)
    assert "\n" not in quoted
    proc = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, text=True)
    assert proc.stdout == word
