"""Fixtures shared by the pytest suites. Each test builds its own world in tmp_path."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sqlite_ops.common import CONFIG_KEYS, EX_FAIL, LOCK_HELD_ENV, REPO_ROOT, OpsError

SHIPPED_MIGRATIONS = REPO_ROOT / "migrations"


# Every setting a sqlite-ops command reads from the environment: the code's own
# list of config keys, plus the variables that pass state to child runs.
SETTINGS = (*CONFIG_KEYS, "QUIET", LOCK_HELD_ENV,
            "SQLITE_OPS_CONFIG", "SQLITE_OPS_CONFIG_WARNED")


@pytest.fixture(autouse=True)
def _no_leaked_settings(monkeypatch, tmp_path):
    """Every test starts with no sqlite-ops setting from the machine or from `make`
    (which exports DB_PATH and friends), and never the production BACKUP_DIR."""
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SQLITE_OPS_CONFIG", os.devnull)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))


@pytest.fixture(autouse=True)
def _signals_as_they_were():
    """A test that runs an entry point in this process leaves its handlers
    (an ended restore ignores INT, TERM and HUP); the next test's child
    processes would inherit an ignored signal, which the toolkit leaves
    ignored (nohup's HUP): every test starts with the suite's own. Also the
    record of what was ignored at the start (sqlite_ops.start) starts over."""
    from sqlite_ops import start

    kept = {sig: signal.getsignal(sig) for sig in start.SIGNALS}
    yield
    for sig, handler in kept.items():
        signal.signal(sig, handler)
    start._ignored_at_start = None


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


class BackupCalls:
    """The real pre-migration backup (sqlite_ops.backup), each call logged:
    (the backup directory, SQLITE_OPS_LOCK_HELD at that moment: the caller's lock)."""

    def __init__(self, tmp_path: Path, monkeypatch, fail: bool = False) -> None:
        from sqlite_ops import backup

        self.dir = tmp_path / "backups"
        self.calls: list[tuple[str, str]] = []
        real = backup.backup_with_lock_held

        def logged(settings, log):
            self.calls.append((settings.dest_dir, os.environ.get(LOCK_HELD_ENV, "")))
            if fail:
                raise OpsError(EX_FAIL, "cannot write backups: disk full")
            return real(settings, log)

        monkeypatch.setattr(backup, "backup_with_lock_held", logged)

    def backups(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir()
                      if p.name.endswith((".db", ".db.gz", ".db.zst")))


@pytest.fixture
def stub_backup(tmp_path, monkeypatch) -> BackupCalls:
    """Pre-migration backups taken for real (uncompressed, into tmp_path/backups),
    each call logged."""
    monkeypatch.setenv("COMPRESS", "none")  # plain SQLite files a test can open
    return BackupCalls(tmp_path, monkeypatch)


@pytest.fixture
def failing_backup(tmp_path, monkeypatch) -> BackupCalls:
    """A pre-migration backup that fails (as a full disk would)."""
    return BackupCalls(tmp_path, monkeypatch, fail=True)
