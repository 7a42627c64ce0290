"""Fixtures shared by the pytest suites. Each test builds its own world in tmp_path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sqlite_ops.common import CONFIG_KEYS, LOCK_HELD_ENV, REPO_ROOT

SHIPPED_MIGRATIONS = REPO_ROOT / "migrations"


# Every setting a sqlite-ops command reads from the environment: the code's own
# list of config keys, plus the variables that pass state to child runs.
SETTINGS = (*CONFIG_KEYS, "QUIET", LOCK_HELD_ENV, "SQLITE_OPS_BACKUP_SCRIPT",
            "SQLITE_OPS_CONFIG", "SQLITE_OPS_CONFIG_WARNED")


@pytest.fixture(autouse=True)
def _no_leaked_settings(monkeypatch, tmp_path):
    """Every test starts with no sqlite-ops setting from the machine or from `make`
    (which exports DB_PATH and friends), and never the production BACKUP_DIR."""
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SQLITE_OPS_CONFIG", os.devnull)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))


@pytest.fixture
def isolated_ops_env(monkeypatch, tmp_path):
    """No sqlite-ops setting leaks in from the machine running the suite; BACKUP_DIR is
    inside tmp_path, never the production default. Use with
    ``pytestmark = pytest.mark.usefixtures("isolated_ops_env")``."""
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SQLITE_OPS_CONFIG", os.devnull)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))


@pytest.fixture
def make_migrations(tmp_path):
    """``make_migrations({filename: text})`` writes a migrations directory and returns it."""

    def make(files: dict[str, str], directory: Path | None = None) -> Path:
        directory = directory or tmp_path / "migrations"
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        return directory

    return make


class StubBackup:
    """A stand-in for scripts/backup_database.sh that copies the database and logs its call."""

    def __init__(self, tmp_path: Path, fail: bool = False) -> None:
        self.dir = tmp_path / "backups"
        self.log = tmp_path / "backup-calls.log"
        self.script = tmp_path / "backup_stub.sh"
        self.script.write_text(f"""#!/bin/bash
set -eu
db= dir={self.dir} args="$*"
while [ $# -gt 0 ]; do
  case $1 in --db) db=$2; shift 2 ;; --dir) dir=$2; shift 2 ;; *) shift ;; esac
done
printf '%s|%s\\n' "$args" "${{{LOCK_HELD_ENV}:-}}" >> {self.log}
{"echo 'backup_database.sh: disk full' >&2; exit 1" if fail else ""}
mkdir -p "$dir"
out="$dir/backup_$(date +%s%N).db"
sqlite3 "$db" ".backup '$out'"
echo "some progress line"
echo "Backup completed: $out"
""")
        self.script.chmod(self.script.stat().st_mode | stat.S_IXUSR)

    @property
    def calls(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.split("|", 1)) for line in self.log.read_text().splitlines()]

    def backups(self) -> list[Path]:
        return sorted(self.dir.glob("*.db")) if self.dir.exists() else []


@pytest.fixture
def stub_backup(tmp_path, monkeypatch) -> StubBackup:
    """SQLITE_OPS_BACKUP_SCRIPT pointing at a working stub backup script."""
    stub = StubBackup(tmp_path)
    monkeypatch.setenv("SQLITE_OPS_BACKUP_SCRIPT", str(stub.script))
    return stub


@pytest.fixture
def failing_backup(tmp_path, monkeypatch) -> StubBackup:
    """SQLITE_OPS_BACKUP_SCRIPT pointing at a backup script that fails."""
    stub = StubBackup(tmp_path, fail=True)
    monkeypatch.setenv("SQLITE_OPS_BACKUP_SCRIPT", str(stub.script))
    return stub
