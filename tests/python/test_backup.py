"""Tests for sqlite_ops.backup: the backup as one library call, and the run."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from opsenv import SCRIPTS, index_out_of_step, make_db, ops_env, python_starts

from sqlite_ops import backup, catalog, snapshot
from sqlite_ops.common import EX_FAIL, EX_INTEGRITY, EX_USAGE, OpsError


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("codec", ["gzip", "none"])
def test_take_backup_publishes_the_pair_and_nothing_else(tmp_path, codec):
    db = make_db(tmp_path / "app.db", 300)
    dest = tmp_path / "backups"
    dest.mkdir()
    result = backup.take_backup(str(db), str(dest), compression=codec, host="h1")
    path = Path(result.path)
    assert path.parent == dest and path.is_absolute()
    assert _files(dest) == sorted([path.name, path.name + catalog.MANIFEST_SUFFIX])
    manifest, why = catalog.read_manifest(str(path) + catalog.MANIFEST_SUFFIX)
    assert why is None and manifest == result.manifest
    assert manifest["tables"] == {"devices": 300, "services": 300}
    assert manifest["host"] == "h1" and manifest["source"] == str(db)
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["integrity_check"]["db_sha256"] == manifest["db_sha256"]
    assert result.warnings == [] and result.infos == []
    [listed] = catalog.list_backups(dest, "app", str(db))
    assert listed.usable(listed.created_at)


def test_quick_integrity_writes_no_record(tmp_path):
    db = make_db(tmp_path / "app.db", 50)
    result = backup.take_backup(str(db), str(tmp_path), compression="none", integrity="quick")
    assert "integrity_check" not in result.manifest
    content = Path(result.path).read_bytes()
    assert result.manifest["db_sha256"] == hashlib.sha256(content).hexdigest()


def test_full_check_refuses_what_quick_check_lets_through(tmp_path):
    db = tmp_path / "live.db"
    index_out_of_step(db)
    dest = tmp_path / "backups"
    dest.mkdir()
    with pytest.raises(OpsError) as info:
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert info.value.code == EX_INTEGRITY
    assert "failed PRAGMA integrity_check" in info.value.message
    assert "nothing was published" in info.value.message
    assert _files(dest) == []
    quick = backup.take_backup(str(db), str(dest), compression="gzip", integrity="quick")
    assert "integrity_check" not in quick.manifest


@pytest.mark.parametrize("content, code", [(None, EX_USAGE), (b"not sqlite at all" * 10, EX_USAGE),
                                           (b"SQLite format 3\x00" + os.urandom(8192),
                                            EX_INTEGRITY)])
def test_refused_databases_publish_nothing(tmp_path, content, code):
    db = tmp_path / "app.db"
    if content is not None:
        db.write_bytes(content)
    dest = tmp_path / "backups"
    dest.mkdir()
    with pytest.raises(OpsError) as info:
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert info.value.code == code
    assert _files(dest) == []


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OpsError(EX_FAIL, "disk gone"),
                                     OSError(5, "Input/output error", "x.db")])
def test_temps_are_removed_on_every_path(tmp_path, monkeypatch, failure):
    db = make_db(tmp_path / "app.db", 50)
    dest = tmp_path / "backups"
    dest.mkdir()

    def broken_manifest(*args, **kwargs):
        assert len(_files(dest)) == 3  # snapshot, packed file, manifest temps exist now
        raise failure

    monkeypatch.setattr(snapshot, "build_manifest", broken_manifest)
    expected = failure if isinstance(failure, type) else OpsError
    with pytest.raises(expected) as raised:
        backup.take_backup(str(db), str(dest), compression="gzip")
    if isinstance(failure, OSError):  # unforeseen: one line, exit 1
        assert raised.value.code == EX_FAIL
        assert raised.value.message == "x.db: Input/output error; nothing was published"
    assert _files(dest) == []


def test_a_temps_sqlite_companions_go_with_it(tmp_path, monkeypatch):
    db = make_db(tmp_path / "app.db", 50)
    dest = tmp_path / "backups"
    dest.mkdir()

    def killed_child_left_companions(*args, **kwargs):
        for temp in _files(dest):
            for suffix in ("-journal", "-wal", "-shm"):
                (dest / (temp + suffix)).touch()
        raise OpsError(EX_FAIL, "killed")

    monkeypatch.setattr(snapshot, "build_manifest", killed_child_left_companions)
    with pytest.raises(OpsError):
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert _files(dest) == []


def test_publish_never_links_into_a_directory_a_symlink_at_dest_points_to(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "final").symlink_to(elsewhere)
    temp = tmp_path / "temp"
    temp.write_text("new\n")
    with pytest.raises(OpsError) as info:
        backup.publish(str(temp), str(tmp_path / "final"))
    assert info.value.code == EX_FAIL
    assert info.value.message == f"refusing to overwrite existing {tmp_path / 'final'}"
    assert _files(elsewhere) == []


def test_a_failing_data_publish_withdraws_its_manifest(tmp_path, monkeypatch):
    db = make_db(tmp_path / "app.db", 50)
    dest = tmp_path / "backups"
    dest.mkdir()
    real = backup.publish
    calls = []

    def second_fails(temp, final):
        calls.append(final)
        if len(calls) == 2:
            raise OpsError(EX_FAIL, f"cannot publish {final}")
        real(temp, final)

    monkeypatch.setattr(backup, "publish", second_fails)
    with pytest.raises(OpsError):
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert calls[0].endswith(catalog.MANIFEST_SUFFIX)
    assert _files(dest) == []


def test_a_signal_during_publication_waits_for_the_pair(tmp_path, monkeypatch):
    db = make_db(tmp_path / "app.db", 50)
    dest = tmp_path / "backups"
    dest.mkdir()
    real = backup.publish

    def signalled(temp, final):
        if final.endswith(catalog.MANIFEST_SUFFIX):
            os.kill(os.getpid(), backup.signal.SIGTERM)  # held until both are out
        real(temp, final)

    monkeypatch.setattr(backup, "publish", signalled)
    with pytest.raises(backup.Interrupted) as info:
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert info.value.signum == backup.signal.SIGTERM
    published = Path(info.value.published)
    assert _files(dest) == sorted([published.name, published.name + catalog.MANIFEST_SUFFIX])


def test_foreign_key_violations_are_warned_or_accepted(tmp_path):
    db = make_db(tmp_path / "app.db", 5)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO services(device_id, port) VALUES (999, 80)")
    conn.close()
    warned = backup.take_backup(str(db), str(tmp_path), compression="none")
    assert len(warned.warnings) == 1 and "1 row with a missing parent row" in warned.warnings[0]
    accepted = backup.take_backup(str(db), str(tmp_path), compression="none",
                                  fk_accept="services")
    assert accepted.warnings == []
    assert accepted.infos == [f"{db} has 1 orphaned rows in tables FK_ACCEPT lists; "
                              "recorded as accepted"]


def test_two_backups_in_one_second_never_collide(tmp_path):
    db = make_db(tmp_path / "app.db", 5)
    first = backup.take_backup(str(db), str(tmp_path), compression="none")
    second = backup.take_backup(str(db), str(tmp_path), compression="none")
    assert first.path != second.path
    assert Path(first.path).exists() and Path(second.path).exists()


@pytest.mark.parametrize("args", [[], ["--dry-run"]])
def test_a_backup_starts_python_at_most_twice(tmp_path, args):
    """One process per operation: backup_database.sh settles the settings and
    hands the whole run to one python3 (the budget is two)."""
    db = make_db(tmp_path / "app.db", 20)
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  METRICS_DIR=str(tmp_path / "metrics"), OFFSITE_REMOTES="")
    starts = python_starts([str(SCRIPTS / "backup_database.sh"), "--compress", "gzip", *args],
                           env)
    assert 1 <= starts <= 2, starts  # at least the run itself: the shim counts
    if not args:
        assert len(catalog.list_backups(tmp_path / "backups", "app", str(db))) == 1
        assert (tmp_path / "metrics" / "sqlite_ops_backup_app.prom").exists()


def test_migrate_up_with_its_backup_starts_python_at_most_twice(tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_a.sql").write_text("CREATE TABLE a (x);\n")
    db = tmp_path / "app.db"
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  MIGRATIONS_DIR=str(migrations), COMPRESS="gzip")
    first = subprocess.run([str(SCRIPTS / "migrate"), "up"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    (migrations / "002_b.sql").write_text("CREATE TABLE b (x);\n")
    starts = python_starts([str(SCRIPTS / "migrate"), "up"], env)
    assert 1 <= starts <= 2, starts
    [taken] = catalog.list_backups(tmp_path / "backups", "app", str(db))
    assert taken.manifest is not None and "b" not in taken.manifest["tables"]


def _backup_cli(db: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS.parent / "lib"))
    return subprocess.run([sys.executable, "-m", "sqlite_ops.backup", "--db", str(db), "--dir",
                           str(dest), "--retention-days", "30", "--keep", "7", "--compress",
                           "gzip", "--quiet"], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_errors_are_one_line_with_the_contract_code(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    proc = _backup_cli(bad, tmp_path / "backups")
    assert proc.returncode == EX_INTEGRITY
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("backup_database.sh: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _files(tmp_path / "backups") == []


def test_cli_prints_the_published_backup_last(tmp_path):
    db = make_db(tmp_path / "live.db", 3)
    proc = _backup_cli(db, tmp_path / "backups")
    assert proc.returncode == 0, proc.stderr
    [backup_file] = catalog.list_backups(tmp_path / "backups", "live", str(db))
    assert proc.stdout.splitlines()[-1] == f"Backup completed: {backup_file.path}"


# ---------------------------------------------------------------------------
# INTEGRITY_CHECK: where the full integrity_check runs
# ---------------------------------------------------------------------------


def _script_backup(tmp_path: Path, db: Path, *args: str,
                   **env: str) -> subprocess.CompletedProcess[str]:
    full_env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                       COMPRESS="gzip", **env)
    return subprocess.run([str(SCRIPTS / "backup_database.sh"), "--quiet", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


def _published_manifest(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().rsplit("Backup completed: ", 1)[1]
    manifest, why = catalog.read_manifest(path + catalog.MANIFEST_SUFFIX)
    assert why is None
    return manifest


def test_drill_mode_publishes_what_only_the_full_check_would_refuse(tmp_path):
    """INTEGRITY_CHECK=drill: quick_check at backup time, so index damage that
    only integrity_check sees is published, marked as not fully checked (the
    drill right after refuses it: test_restore_flow); the default refuses it."""
    db = index_out_of_step(tmp_path / "live.db")
    refused = _script_backup(tmp_path, db)
    assert refused.returncode == EX_INTEGRITY, refused.stderr
    assert "failed PRAGMA integrity_check" in refused.stderr
    manifest = _published_manifest(_script_backup(tmp_path, db, "--integrity-check", "drill"))
    assert manifest["integrity_check_deferred"] is True and manifest["verified"] is True
    assert "integrity_check" not in manifest


def test_drill_mode_still_refuses_what_quick_check_finds(tmp_path):
    db = tmp_path / "bad.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    proc = _script_backup(tmp_path, db, "--integrity-check", "drill")
    assert proc.returncode == EX_INTEGRITY
    assert not (tmp_path / "backups").exists() or _files(tmp_path / "backups") == []


@pytest.mark.parametrize("conf, env, flag, deferred", [
    ("", "", "", False),                       # default: the check in the backup
    ("drill", "", "", True),                   # config file
    ("drill", "backup", "", False),            # environment over config
    ("backup", "backup", "drill", True),       # flag over both
], ids=["default", "config", "env-over-config", "flag-over-env"])
def test_integrity_check_setting_precedence(tmp_path, conf, env, flag, deferred):
    db = make_db(tmp_path / "app.db", 10)
    conf_file = tmp_path / "ops.conf"
    conf_file.write_text(f"INTEGRITY_CHECK={conf}\n" if conf else "")
    extra = {"SQLITE_OPS_CONFIG": str(conf_file)}
    if env:
        extra["INTEGRITY_CHECK"] = env
    manifest = _published_manifest(_script_backup(
        tmp_path, db, *(["--integrity-check", flag] if flag else []), **extra))
    assert manifest.get("integrity_check_deferred", False) is deferred
    assert ("integrity_check" in manifest) is not deferred


@pytest.mark.parametrize("args, env", [(["--integrity-check", "full"], {}),
                                       ([], {"INTEGRITY_CHECK": "restore"}),
                                       (["--integrity-check"], {})])
def test_an_unknown_integrity_check_place_is_a_usage_error(tmp_path, args, env):
    db = make_db(tmp_path / "app.db", 10)
    proc = _script_backup(tmp_path, db, *args, **env)
    assert proc.returncode == EX_USAGE
    assert proc.stderr.count("\n") == 1
    assert "INTEGRITY_CHECK must be backup or drill" in proc.stderr or (
        "--integrity-check needs a value" in proc.stderr)
    assert not (tmp_path / "backups").exists()


def test_migrates_backup_settings_read_integrity_check_too(tmp_path, monkeypatch):
    from sqlite_ops.common import Settings

    monkeypatch.setenv("INTEGRITY_CHECK", "drill")
    assert backup.settings_from(Settings({}), "/x/app.db", prog="migrate").integrity_check == \
        "drill"
    monkeypatch.setenv("INTEGRITY_CHECK", "later")
    with pytest.raises(OpsError) as info:
        backup.settings_from(Settings({}), "/x/app.db", prog="migrate")
    assert info.value.code == EX_USAGE and "INTEGRITY_CHECK" in info.value.message


def test_only_a_quick_backup_defers_the_full_check(tmp_path):
    db = make_db(tmp_path / "app.db", 5)
    with pytest.raises(ValueError):
        backup.take_backup(str(db), str(tmp_path), compression="none", deferred=True)
    assert catalog.list_backups(tmp_path, "app") == []


def test_the_space_asked_for_is_what_the_method_writes(tmp_path, monkeypatch):
    """A streamed WAL backup writes only the packed file: with room for that
    (estimated from the last backup's ratio) but not for the whole database,
    it goes ahead. A rollback-journal database's backup writes a copy of the
    whole database first: without room for both it is refused, nothing written."""
    db = make_db(tmp_path / "app.db", 3000)  # WAL
    dest = tmp_path / "backups"
    dest.mkdir()
    first = backup.take_backup(str(db), str(dest), compression="gzip")
    size = db.stat().st_size + (Path(f"{db}-wal").stat().st_size
                                if Path(f"{db}-wal").exists() else 0)
    packed = os.path.getsize(first.path)
    assert packed * 3 < size  # compressible: the two answers differ
    monkeypatch.setattr(backup, "free_bytes", lambda _dir: packed * 2)
    backup.check_free_space(str(db), str(dest), "gzip")  # the stream fits
    with pytest.raises(OpsError) as refused:
        backup.check_free_space(str(db), str(dest), "none")  # the whole database does not
    assert refused.value.code == EX_FAIL and "not enough free space" in refused.value.message
    second = backup.take_backup(str(db), str(dest), compression="gzip")
    assert second.manifest["snapshot_method"] == "file"

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=DELETE").fetchall()
    conn.close()
    before = _files(dest)
    with pytest.raises(OpsError) as copy_refused:
        backup.take_backup(str(db), str(dest), compression="gzip")
    assert copy_refused.value.code == EX_FAIL
    assert "not enough free space" in copy_refused.value.message
    assert _files(dest) == before


def test_a_signal_during_pruning_does_not_say_pruning_did_not_run(tmp_path, monkeypatch,
                                                                  capsys):
    """Pruning removes one file after another: cut short, some may be gone,
    and the message must not say it never ran."""
    import signal

    from sqlite_ops.common import Settings

    db = make_db(tmp_path / "app.db")
    settings = backup.settings_from(Settings({}), str(db), str(tmp_path / "backups"),
                                    prog="backup_database.sh")

    def cut_short(settings, dry_run=False):
        raise backup.Interrupted(signal.SIGINT)

    monkeypatch.setattr(backup, "prune", cut_short)
    assert backup.run(settings) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "was published; pruning was cut short" in err
    assert "did not run" not in err
