"""Real-world databases nobody on this team designed, through the whole toolkit.

Every database in the corpus goes backup -> verify -> restore --to -> compare
(schema including views and triggers, row counts per table, content digest).
Every corrupt file is refused by verify (exit 3) and flagged by
``maintain_database.sh check`` (exit 4), and a backup of it publishes nothing.

The corpus lives beside the repository (``../shared/data``, or
``$SQLITE_OPS_CORPUS``); without it these tests are skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from opsenv import CORPUS, content_digest, ops_env, row_counts, run, schema_of

from sqlite_ops.catalog import backup_file_name, sha256_file

HEALTHY = sorted(CORPUS.glob("*.sqlite")) if CORPUS.is_dir() else []
CORRUPT = sorted((CORPUS / "corrupt").glob("*.sqlite")) if CORPUS.is_dir() else []
# Structurally sound, but a child row points at a missing parent.
FOREIGN_KEY_ONLY = {"chef_badforeignkey.sqlite"}

needs_corpus = pytest.mark.skipif(
    not HEALTHY, reason=f"real-world corpus not found at {CORPUS} (set SQLITE_OPS_CORPUS)"
)


def _copy(src: Path, tmp_path: Path, name: str | None = None) -> Path:
    """Work on a copy, in a directory whose name has a space and a quote."""
    work = tmp_path / "it's a dir"
    work.mkdir(exist_ok=True)
    dst = work / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


@needs_corpus
@pytest.mark.parametrize("source", HEALTHY, ids=lambda p: p.name)
def test_backup_verify_restore_compare(source, tmp_path):
    db = _copy(source, tmp_path)
    backups = tmp_path / "backups"
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(backups))

    proc = run("backup_database.sh", env=env)
    assert proc.returncode == 0, proc.stderr
    published = Path(proc.stdout.strip().splitlines()[-1].removeprefix("Backup completed: "))
    assert published.is_file()
    manifest = json.loads(Path(f"{published}.manifest.json").read_text())
    assert manifest["tables"] == row_counts(db)

    proc = run("restore_database.sh", "--verify", str(published), env=env)
    assert proc.returncode == 0, proc.stderr

    restored = tmp_path / "restored.db"
    proc = run("restore_database.sh", "--yes", "--to", str(restored), str(published), env=env)
    assert proc.returncode == 0, proc.stderr
    assert schema_of(restored) == schema_of(db)
    assert row_counts(restored) == row_counts(db)
    assert content_digest(restored) == content_digest(db)


def _as_backup(corrupt: Path, backups: Path, name: str) -> Path:
    """Wrap a corrupt file as an uncompressed backup whose checksum matches,
    so verify has to find the damage inside the database, not in transit."""
    backups.mkdir(mode=0o700, exist_ok=True)
    target = backups / backup_file_name(name, time.time() - 60, "none")
    shutil.copyfile(corrupt, target)
    manifest = {
        "format": 1, "file": target.name, "name": name, "source": str(corrupt),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)),
        "sha256": sha256_file(target), "db_sha256": sha256_file(target),
        "size_bytes": target.stat().st_size, "db_size_bytes": target.stat().st_size,
        "page_size": 4096, "journal_mode": "delete", "sqlite_version": "3.40.1",
        "schema_version": None, "tables": {}, "compression": "none",
        "duration_seconds": 0.1, "verified": True,
    }
    Path(f"{target}.manifest.json").write_text(json.dumps(manifest))
    return target


@needs_corpus
@pytest.mark.parametrize("corrupt", CORRUPT, ids=lambda p: p.name)
def test_corrupt_backup_is_refused_by_verify(corrupt, tmp_path):
    backup = _as_backup(corrupt, tmp_path / "backups", "app")
    env = ops_env(tmp_path, DB_PATH=str(tmp_path / "app.db"),
                  BACKUP_DIR=str(tmp_path / "backups"))
    proc = run("restore_database.sh", "--verify", str(backup), env=env)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    # The error is the last stderr line: one line, naming the script.
    assert proc.stderr.strip().splitlines()[-1].startswith("restore_database.sh: ")


@needs_corpus
@pytest.mark.parametrize("corrupt", CORRUPT, ids=lambda p: p.name)
def test_corrupt_database_is_flagged_by_maintenance_check(corrupt, tmp_path):
    db = _copy(corrupt, tmp_path)
    before = db.read_bytes()
    env = ops_env(tmp_path, DB_PATH=str(db))
    proc = run("maintain_database.sh", "check", env=env)
    # 4: the database failed a check; 2: not an SQLite database at all (bad magic).
    expected = 2 if "badmagic" in corrupt.name else 4
    assert proc.returncode == expected, (proc.returncode, proc.stdout, proc.stderr)
    assert db.read_bytes() == before, "a check must not change the database"


@needs_corpus
@pytest.mark.parametrize("corrupt", CORRUPT, ids=lambda p: p.name)
def test_backup_of_a_corrupt_database_publishes_nothing(corrupt, tmp_path):
    db = _copy(corrupt, tmp_path)
    backups = tmp_path / "backups"
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(backups))
    proc = run("backup_database.sh", env=env)
    if corrupt.name in FOREIGN_KEY_ONLY:
        # quick_check does not look at foreign keys: the backup is a faithful
        # copy of what is there, and verify/maintain report the violation.
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode in (2, 4), (proc.returncode, proc.stderr)
    published = [p for p in backups.iterdir() if not p.name.startswith(".")] \
        if backups.exists() else []
    assert published == []
