"""The Makefile front door: where its targets take their settings from, and the
refusals a person typing `make restore` sees.

These run real `make` in the checkout with every path pointed at a temp
directory, so nothing in the checkout's data/ is touched.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from sqlite_ops.common import CONFIG_KEYS, REPO_ROOT


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO_ROOT), *args],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {*CONFIG_KEYS, "MAKEFLAGS", "MFLAGS"}}
    env["HOME"] = str(tmp_path)
    return env


def applied(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        conn.close()


def test_make_migrate_on_a_configured_machine_migrates_the_configured_database(
        tmp_path, base_env):
    """The deploy pitfall: `make migrate` must not quietly migrate a new empty
    database inside the checkout while the config file names the real one."""
    db = tmp_path / "srv dir" / "dash'board.db"
    db.parent.mkdir()
    conf = tmp_path / "sqlite-ops.conf"
    conf.write_text(f"DB_PATH={db}\nBACKUP_DIR={tmp_path / 'backups'}\n")
    env = dict(base_env, SQLITE_OPS_CONFIG=str(conf))
    proc = make("migrate", env=env)
    assert proc.returncode == 0, proc.stderr
    assert applied(db) == [1, 2]
    proc = make("backup", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Backup completed: {tmp_path / 'backups'}/")


def test_a_config_file_named_on_the_make_command_line_counts_too(tmp_path, base_env):
    db = tmp_path / "it's configured.db"
    conf = tmp_path / "o'dd.conf"
    conf.write_text(f"DB_PATH={db}\n")
    proc = make("migrate", f"SQLITE_OPS_CONFIG={conf}", env=base_env)
    assert proc.returncode == 0, proc.stderr
    assert applied(db) == [1, 2]


def test_a_config_file_the_scripts_reject_still_keeps_make_off_the_checkout(tmp_path, base_env):
    """A bad value must stop the run, not send it to data/ in the checkout."""
    db = tmp_path / "real.db"
    conf = tmp_path / "sqlite-ops.conf"
    conf.write_text(f"DB_PATH={db}\nSQLITE_BUSY_TIMEOUT_MS=10s\n")
    env = dict(base_env, SQLITE_OPS_CONFIG=str(conf))
    assert make("migrate", env=env).returncode == 0
    assert applied(db) == [1, 2]
    proc = make("backup", env=env)
    assert proc.returncode != 0
    assert "SQLITE_BUSY_TIMEOUT_MS must be a whole number" in proc.stderr


def test_the_environment_and_the_command_line_beat_the_config_file(tmp_path, base_env):
    conf = tmp_path / "sqlite-ops.conf"
    conf.write_text(f"DB_PATH={tmp_path / 'from-config.db'}\n")
    env = dict(base_env, SQLITE_OPS_CONFIG=str(conf), DB_PATH=str(tmp_path / "from-env.db"))
    assert make("migrate", env=env).returncode == 0
    assert make("migrate", f"DB_PATH={tmp_path / 'from-cli.db'}", env=env).returncode == 0
    assert (tmp_path / "from-env.db").exists()
    assert (tmp_path / "from-cli.db").exists()
    assert not (tmp_path / "from-config.db").exists()


def test_make_restore_without_a_terminal_asks_for_yes_in_make_terms(tmp_path, base_env):
    db = tmp_path / "app.db"
    env = dict(base_env, SQLITE_OPS_CONFIG=os.devnull, DB_PATH=str(db),
               BACKUP_DIR=str(tmp_path / "backups"))
    assert make("migrate", env=env).returncode == 0
    assert make("backup", env=env).returncode == 0
    before = db.read_bytes()
    proc = make("restore", "BACKUP=latest", env=env)
    assert proc.returncode == 2
    assert "add YES=1" in proc.stderr
    assert db.read_bytes() == before
    assert not (tmp_path / "backups" / "pre-restore").exists()
    proc = make("restore", "BACKUP=latest", "YES=1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Restore completed:" in proc.stdout
    assert (tmp_path / "backups" / "pre-restore").is_dir()
