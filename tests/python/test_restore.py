"""Tests for lib/sqlite_ops/restore.py: the steps of a restore, called directly (the flow
that strings them together, and its command line: test_restore_flow.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsenv import (
    SCRIPTS,
    blob_db,
    in_a_pid_namespace_of_its_own,
    kill_writer_mid_transaction,
    make_db,
    ops_env,
    run,
    seen_as_from_a_pid_namespace_of_its_own,
)

from sqlite_ops import catalog, common, hashing, restore, restore_flow
from sqlite_ops.common import EX_BUSY, EX_FAIL, EX_USAGE, EX_VERIFY, REPO_ROOT, OpsError

BACKUP_SCRIPT = REPO_ROOT / "scripts" / "backup_database.sh"



@contextlib.contextmanager
def held(db: Path):
    """A connection the application keeps open: the restore must write through
    SQLite (the backup API), never rename a file under it."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def open_elsewhere(path: Path):
    """Another process with ``path`` open (a plain descriptor, no SQLite
    connection): yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; f = open(sys.argv[1], 'rb'); "
                               "print('ready', flush=True); time.sleep(30)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def count(path: Path, table: str = "devices") -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    finally:
        conn.close()


def content(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def take_backup(db: Path, backup_dir: Path, compress: str = "zstd") -> Path:
    """A real backup, made by scripts/backup_database.sh."""
    env = dict(os.environ, SQLITE_OPS_CONFIG=os.devnull)
    proc = subprocess.run([str(BACKUP_SCRIPT), "--db", str(db), "--dir", str(backup_dir),
                           "--compress", compress, "--quiet"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.rsplit("Backup completed: ", 1)[1].rstrip("\n"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One real backup per module (taking one costs most of a second); copied per test."""
    base = tmp_path_factory.mktemp("template")
    db = make_db(base / "app.db")
    return db, take_backup(db, base / "backups")


@pytest.fixture
def world(tmp_path, template):
    """Each test's own database (WAL, 50 devices) and a verified backup of it."""
    db = tmp_path / "app.db"
    shutil.copyfile(template[0], db)
    (tmp_path / "backups").mkdir()
    backup = tmp_path / "backups" / template[1].name
    shutil.copyfile(template[1], backup)
    # The copy is this test's database's backup: its manifest says so (backups
    # of another database are not this one's `latest`).
    manifest = json.loads(Path(f"{template[1]}{catalog.MANIFEST_SUFFIX}").read_text())
    manifest["source"] = str(db)
    Path(f"{backup}{catalog.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
    return db, backup, tmp_path


# ---------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------


def test_newest_migration_is_the_highest_number_of_sql_and_py_files(tmp_path):
    for name in ("001_init.sql", "002_x.py", "010_later.sql", "999_notes.txt", "README.md",
                 "abc_x.sql", "011_.sql"):  # 011_.sql: no name, the migrator skips it
        (tmp_path / name).write_text("")
    assert restore.newest_migration(tmp_path) == 10
    assert restore.newest_migration(tmp_path / "missing") is None
    assert restore.newest_migration(None) is None


def test_compare_counts_names_the_differences():
    assert restore.compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 2}) is None
    text = restore.compare_counts({"a": 1, "gone": 3}, {"a": 2, "extra": 0})
    assert "a has 2 rows, manifest says 1" in text
    assert "table extra is not in the manifest" in text
    assert "table gone is missing" in text


def test_sniff_compression(tmp_path, world):
    db, backup, _ = world
    assert restore.sniff_compression(backup) == "zstd"
    assert restore.sniff_compression(db) == "none"
    (tmp_path / "junk").write_bytes(b"hello")
    assert restore.sniff_compression(tmp_path / "junk") is None


# ---------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------


def test_latest_is_the_newest_verified_backup_never_a_pre_restore_one(world):
    db, backup, tmp_path = world
    pre = tmp_path / "backups" / restore.PRE_RESTORE_DIR
    take_backup(db, pre)  # newer, but a safety backup
    assert restore.resolve_backup("latest", tmp_path / "backups", db) == backup
    # A newer file without a manifest is not "verified": latest skips it.
    (backup.parent / "app_29990101_000000.db.zst").write_bytes(backup.read_bytes())
    assert restore.resolve_backup("latest", tmp_path / "backups", db) == backup


def test_resolve_accepts_a_file_name_a_pre_restore_name_and_any_path(world):
    db, backup, tmp_path = world
    root = tmp_path / "backups"
    assert restore.resolve_backup(backup.name, root, db) == backup
    time.sleep(1.1)  # a safety backup named like a backup in the root would resolve there
    safety = take_backup(db, root / restore.PRE_RESTORE_DIR)
    assert restore.resolve_backup(safety.name, root, db) == safety
    assert restore.resolve_backup(str(safety), tmp_path / "elsewhere", db) == safety
    with pytest.raises(OpsError) as err:
        restore.resolve_backup("nope.db.zst", root, db)
    assert err.value.code == EX_USAGE
    with pytest.raises(OpsError) as err:
        restore.resolve_backup("latest", tmp_path / "empty", db)
    assert err.value.code == EX_USAGE


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["zstd", "gzip", "none"])
def test_verify_a_good_backup_leaves_its_database_in_the_work_file(tmp_path, compress):
    db = make_db(tmp_path / "app.db", rows=30)
    backup = take_backup(db, tmp_path / "backups", compress)
    report = restore.verify_backup(backup, tmp_path / "work.db")
    assert report.tables == {"devices": 30, "services": 30}
    assert report.compression == compress
    assert report.journal_mode == "wal"
    assert content(tmp_path / "work.db") == content(db)


@pytest.mark.parametrize("compress", ["zstd", "gzip", "none"])
def test_the_work_file_goes_to_disk_while_it_is_written(tmp_path, monkeypatch, compress):
    """Its writeback starts a step behind the writer over the whole file, so
    the fsync before the rename waits for the last step only."""
    db = make_db(tmp_path / "app.db", rows=3000)
    backup = take_backup(db, tmp_path / "backups", compress)
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(common.Writeback, "STEP", 8192)
    monkeypatch.setattr(common, "start_writeback",
                        lambda fd, offset, length: started.append((offset, length)))
    restore.verify_backup(backup, tmp_path / "work.db")
    size = (tmp_path / "work.db").stat().st_size
    assert size > 4 * 8192 and started[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(started, started[1:]))  # no gap
    assert size - sum(n for _, n in started) < 8192 + hashing.CHUNK


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_a_verify_that_checks_a_work_file_does_not_send_it_to_disk(tmp_path, monkeypatch,
                                                                    compress):
    """--verify (keep=False) removes its work file unrenamed: writing it to the
    disk would only take the disk from whatever comes next."""
    db = make_db(tmp_path / "app.db", rows=3000)
    backup = take_backup(db, tmp_path / "backups", compress)
    edit_manifest(backup, lambda m: m.pop("integrity_check"))  # so it is written and checked
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(common.Writeback, "STEP", 8192)
    monkeypatch.setattr(common, "start_writeback",
                        lambda fd, offset, length: started.append((offset, length)))
    report = restore.verify_backup(backup, tmp_path / "work.db", keep=False)
    assert report.work and (tmp_path / "work.db").stat().st_size > 4 * 8192
    assert started == []


def test_writeback_really_reaches_the_kernel_on_linux(tmp_path):
    """Not a silent no-op where sync_file_range exists."""
    if not sys.platform.startswith("linux"):
        pytest.skip("sync_file_range is Linux's")
    path = tmp_path / "f"
    path.write_bytes(b"x" * 65536)
    call = common._sync_file_range()
    assert call is not None
    with open(path, "rb") as handle:
        assert call(handle.fileno(), 0, 65536, common._SYNC_FILE_RANGE_WRITE) == 0


@pytest.mark.parametrize("how", ["count_rows", "no integrity record"])
def test_verify_rejects_edited_row_counts_wherever_it_counts(world, how):
    """Counted (before a restore over the live database touches it, or beside
    an integrity_check that runs now), every table must have the manifest's rows."""
    _, backup, tmp_path = world

    def edit(manifest):
        manifest["tables"]["devices"] += 1
        if how == "no integrity record":
            manifest.pop("integrity_check")

    edit_manifest(backup, edit)
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db", count_rows=how == "count_rows")
    assert err.value.code == EX_VERIFY
    assert "row counts differ from its manifest: devices has 50 rows, manifest says 51" \
        in err.value.message


def traced(monkeypatch) -> list[str]:
    """Every SQL statement any connection opened from here on runs."""
    statements: list[str] = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def scans(statements: list[str]) -> list[str]:
    """The statements that read whole tables or every page."""
    return [s for s in statements
            if 'count(*) FROM "' in s or "quick_check" in s or "integrity_check" in s
            or "foreign_key_check" in s]


def test_verify_of_the_same_bytes_takes_the_manifests_counts_and_scans_no_table(
        world, monkeypatch):
    _, backup, tmp_path = world
    statements = traced(monkeypatch)
    report = restore.verify_backup(backup, tmp_path / "work.db")
    assert report.tables == {"devices": 50, "services": 50}
    assert report.rows_recorded and report.fk_recorded
    assert report.schema_version is None and report.page_size == 4096  # read, not scanned
    assert statements and scans(statements) == []
    line = restore_flow.verified_line(report, str(backup))
    assert "row counts as recorded (same bytes)" in line
    assert "foreign_key_check clean as recorded (same bytes)" in line
    # A restore over the live database counts them all the same.
    statements.clear()
    counted = restore.verify_backup(backup, tmp_path / "work2.db", count_rows=True)
    assert counted.tables == report.tables and not counted.rows_recorded
    assert 'SELECT count(*) FROM "devices"' in statements
    assert "row counts match the manifest" in restore_flow.verified_line(counted, str(backup))


def test_a_verify_that_restores_nothing_only_hashes_bytes_the_records_stand_for(
        world, monkeypatch):
    """--verify (keep=False): where the manifest's records stand for the bytes
    it names, the content is hashed and dropped: no work file, no SQL."""
    _, backup, tmp_path = world
    statements = traced(monkeypatch)
    report = restore.verify_backup(backup, tmp_path / "work.db", keep=False)
    assert not (tmp_path / "work.db").exists() and report.work == ""
    assert statements == []
    assert report.tables == {"devices": 50, "services": 50} and report.rows_recorded
    assert report.page_size == 4096 and report.schema_version is None
    assert report.db_size_bytes == json.loads(
        Path(f"{backup}{catalog.MANIFEST_SUFFIX}").read_text())["db_size_bytes"]
    assert report.integrity.startswith("recorded at backup, same bytes")


def test_a_hash_only_verify_still_refuses_other_bytes(world):
    _, backup, tmp_path = world
    edit_manifest(backup, lambda m: (m.update(db_sha256="e" * 64),
                                     m["integrity_check"].update(db_sha256="e" * 64)))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db", keep=False)
    assert err.value.code == EX_VERIFY
    assert "decompressed database's SHA-256 differs" in err.value.message
    assert not (tmp_path / "work.db").exists()


@pytest.mark.parametrize("change", [
    lambda m: m.pop("integrity_check"),  # the check must run on the content
    lambda m: m.update(foreign_key_violations=1),  # the rows must be named
    lambda m: m.pop("schema_version"),  # an older manifest: read it from the content
])
def test_a_verify_that_needs_the_content_still_writes_and_reads_it(world, monkeypatch,
                                                                   change):
    _, backup, tmp_path = world
    edit_manifest(backup, change)
    statements = traced(monkeypatch)
    report = restore.verify_backup(backup, tmp_path / "work.db", keep=False)
    assert report.work == str(tmp_path / "work.db") and Path(report.work).exists()
    assert statements  # SQLite read it


def test_verify_of_the_same_bytes_still_reads_the_table_names(world):
    """The counts stand as recorded, but a manifest naming a table the content
    lacks (or lacking one it has) is refused."""
    _, backup, tmp_path = world
    edit_manifest(backup, lambda m: m["tables"].update(ghost=3))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "its tables differ from its manifest: table ghost is missing" in err.value.message
    edit_manifest(backup, lambda m: (m["tables"].pop("ghost"), m["tables"].pop("services")))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work2.db")
    assert "table services is not in the manifest" in err.value.message


def test_verify_rejects_a_changed_file_with_a_checksum_mismatch(world):
    _, backup, tmp_path = world
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    backup.write_bytes(bytes(data))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "checksum mismatch" in err.value.message


def test_verify_without_a_manifest_needs_force(world):
    _, backup, tmp_path = world
    Path(f"{backup}{catalog.MANIFEST_SUFFIX}").unlink()
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "no manifest" in err.value.message
    report = restore.verify_backup(backup, tmp_path / "work.db", force=True)
    assert report.has_manifest is False
    assert any("completeness unproven" in w for w in report.warnings)


def test_the_plan_says_when_it_could_not_see_every_process(monkeypatch, tmp_path):
    """Not root: "nobody has it open" would be a guess; the plan says so."""
    db = str(make_db(tmp_path / "app.db"))
    monkeypatch.setattr(restore, "holders", lambda paths: ([], False))
    assert "none of yours; other users' processes unseen" in restore._open_in(db)[0]
    monkeypatch.setattr(restore, "holders", lambda paths: ([(42, "app")], True))
    assert restore._open_in(db)[0] == "  open in:  pid 42 (app)"
    monkeypatch.setattr(restore, "holders", lambda paths: ([], True))
    assert restore._open_in(db) == []


def test_verify_rejects_a_broken_foreign_key_unless_forced(tmp_path):
    """Orphaned rows are the data's own state, not damage: refused by default
    (the contract's empty foreign_key_check), accepted and reported with --force;
    otherwise a database that has them could never be restored."""
    db = make_db(tmp_path / "bad.db", mode="delete")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO services(device_id, port) VALUES (?, 80)", [(998,), (999,)])
    conn.commit()
    conn.close()
    backup = take_backup(db, tmp_path / "backups")
    manifest = json.loads(Path(f"{backup}{catalog.MANIFEST_SUFFIX}").read_text())
    assert manifest["foreign_key_violations"] == 2
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "foreign_key_check failed: 2 rows point to missing parent rows" in err.value.message
    assert "already had this when the backup was taken" in err.value.message
    report = restore.verify_backup(backup, tmp_path / "work2.db", force=True)
    assert report.fk_violations == 2
    assert any("accepted as it is (--force)" in w for w in report.warnings)


def edit_manifest(backup: Path, change) -> None:
    path = Path(f"{backup}{catalog.MANIFEST_SUFFIX}")
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def test_verify_trusts_the_integrity_record_of_the_same_bytes(world, tmp_path, monkeypatch):
    _, backup, _ = world
    ran = []
    real = restore.integrity.Background
    monkeypatch.setattr(restore.integrity, "Background",
                        lambda *a, **k: ran.append(a) or real(*a, **k))
    report = restore.verify_backup(backup, tmp_path / "work.db")
    assert report.integrity.startswith("recorded at backup, same bytes")
    assert ran == []  # the check's time is not spent again


@pytest.mark.parametrize("change, why", [
    (lambda m: m.pop("integrity_check"),
     "no integrity_check record (an older backup, or a pre-restore safety backup, which runs "
     "quick_check only)"),
    (lambda m: m["integrity_check"].update(sqlite_version="3.31.0"),
     "made by SQLite 3.31.0, older than this one"),
    (lambda m: m["integrity_check"].update(db_sha256="0" * 64), "record is of other content"),
    (lambda m: m["integrity_check"].update(result="not run"), "does not say ok"),
])
def test_verify_checks_now_when_the_record_cannot_stand(world, tmp_path, monkeypatch,
                                                        change, why):
    _, backup, _ = world
    edit_manifest(backup, change)
    ran = []
    real = restore.integrity.Background
    monkeypatch.setattr(restore.integrity, "Background",
                        lambda *a, **k: ran.append(a) or real(*a, **k))
    report = restore.verify_backup(backup, tmp_path / "work.db")
    assert report.integrity.startswith("checked now (integrity_check ok; ")
    assert why in report.integrity
    assert len(ran) == 1


def test_the_same_bytes_clean_foreign_key_count_stands_too(world, tmp_path, monkeypatch):
    """With a standing integrity record, a manifest's count of 0 violations is
    these bytes' count: not counted again. Without the record, it is."""
    _, backup, _ = world
    calls = []
    real = restore.fkcheck.check
    monkeypatch.setattr(restore.fkcheck, "check", lambda conn: calls.append(1) or real(conn))
    assert restore.verify_backup(backup, tmp_path / "w1.db").fk_violations == 0
    assert calls == []
    edit_manifest(backup, lambda m: m.pop("integrity_check"))
    assert restore.verify_backup(backup, tmp_path / "w2.db").fk_violations == 0
    assert calls == [1]


def test_a_record_does_not_excuse_other_bytes(world, tmp_path):
    """A record names content by its SHA-256: a file whose content differs from
    the manifest's db_sha256 is refused before any record is looked at."""
    _, backup, _ = world
    edit_manifest(backup, lambda m: m.update(db_sha256="f" * 64))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "decompressed database's SHA-256 differs" in err.value.message


def test_verify_accepts_orphans_in_the_tables_fk_accept_lists(tmp_path):
    db = make_db(tmp_path / "app.db", mode="delete")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO services(device_id, port) VALUES (?, 80)", [(998,), (999,)])
    conn.commit()
    conn.close()
    backup = take_backup(db, tmp_path / "backups")
    report = restore.verify_backup(backup, tmp_path / "w1.db", fk_accept="services")
    assert report.fk_violations == 0 and report.warnings == []
    assert report.fk_note == ('foreign_key_check: accepted orphaned rows (FK_ACCEPT): '
                              '2 in "services"')
    assert restore.verify_backup(backup, tmp_path / "w2.db", fk_accept="services:2").fk_note
    for over in ("services:1", "devices"):  # more than accepted, or another table
        with pytest.raises(OpsError) as err:
            restore.verify_backup(backup, tmp_path / f"w-{over}.db", fk_accept=over)
        assert err.value.code == EX_VERIFY and "2 rows point to missing" in err.value.message


def test_check_schema_refuses_newer_and_notes_older(world, tmp_path):
    _, backup, _ = world
    report = restore.verify_backup(backup, tmp_path / "work.db")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "003_x.sql").write_text("")
    report.schema_version = 4
    with pytest.raises(OpsError) as err:
        restore.check_schema(report, str(migrations), force=False)
    assert err.value.code == EX_USAGE
    assert "newer than the newest migration (3)" in err.value.message
    assert "--force" in restore.check_schema(report, str(migrations), force=True)
    report.schema_version = 1
    assert "make migrate" in restore.check_schema(report, str(migrations), force=False)


# ---------------------------------------------------------------------------
# apply
# ---------------------------------------------------------------------------


def test_the_free_space_check_counts_what_this_user_may_write(tmp_path, monkeypatch):
    monkeypatch.setattr(restore, "free_bytes", lambda directory: 1024)
    with pytest.raises(OpsError) as info:
        restore._check_free_space(str(tmp_path), 4096, "the decompressed copy")
    assert info.value.code == EX_FAIL
    assert info.value.message == (
        f"not enough free space in {tmp_path} for the decompressed copy: need about 4.0 KiB, "
        "have 1.0 KiB; nothing was changed (--verify and --drill use TMPDIR)")
    monkeypatch.setattr(restore.tempfile, "gettempdir", lambda: "/nonexistent-tmpdir")
    with pytest.raises(OpsError) as info:  # not TMPDIR (--to's target directory): no hint
        restore._check_free_space(str(tmp_path), 4096, "the decompressed copy")
    assert info.value.message.endswith("have 1.0 KiB; nothing was changed")
    monkeypatch.setattr(restore, "free_bytes", lambda directory: None)  # unknown: go ahead
    restore._check_free_space(str(tmp_path), 4096, "the decompressed copy")


def _verified(world):
    db, backup, tmp_path = world
    return restore.verify_backup(backup, tmp_path / "work.db")


def test_restore_into_a_wal_database_that_a_reader_keeps_open(world):
    db, _, tmp_path = world
    report = _verified(world)
    wanted = content(Path(report.work))
    reader = sqlite3.connect(db, isolation_level=None)
    reader.executemany("INSERT INTO devices(ip) VALUES (?)", [("late",)] * 5)
    assert reader.execute("SELECT count(*) FROM devices").fetchone()[0] == 55
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["method"] == "backup-api"
    assert applied["journal_mode"] == "wal"
    assert reader.execute("SELECT count(*) FROM devices").fetchone()[0] == 50
    reader.close()
    assert content(db) == wanted
    restore.check_restored(str(db), report.tables)


def test_a_rollback_journal_database_stays_in_rollback_mode(tmp_path):
    db = make_db(tmp_path / "app.db", mode="delete")
    backup = take_backup(db, tmp_path / "backups")
    report = restore.verify_backup(backup, tmp_path / "work.db")
    restore.set_journal_mode(report.work, "wal")  # the backup API copies this header
    with held(db):
        applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["journal_mode"] == "delete"
    assert not Path(f"{db}-wal").exists()


def test_page_size_change_into_a_wal_database(tmp_path):
    source = make_db(tmp_path / "src.db", page_size=8192)
    backup = take_backup(source, tmp_path / "backups")
    db = make_db(tmp_path / "app.db", rows=5, page_size=4096)
    report = restore.verify_backup(backup, tmp_path / "work.db")
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["journal_mode"] == "wal"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
    conn.close()
    assert count(db) == 50


def test_page_size_change_refused_while_another_connection_has_the_wal_open(tmp_path):
    source = make_db(tmp_path / "src.db", page_size=8192)
    backup = take_backup(source, tmp_path / "backups")
    db = make_db(tmp_path / "app.db", rows=5, page_size=4096)
    other = sqlite3.connect(db)
    other.execute("SELECT 1 FROM devices").fetchall()
    report = restore.verify_backup(backup, tmp_path / "work.db")
    before = db.read_bytes()
    with pytest.raises(OpsError) as err:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"), busy_ms=200)
    other.close()
    assert err.value.code == EX_BUSY
    assert "page size" in err.value.message
    assert db.read_bytes() == before


def test_a_held_lock_gives_busy_quickly_instead_of_retrying_forever(world):
    db, _, tmp_path = world
    report = _verified(world)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(OpsError) as err:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"), busy_ms=300)
    writer.execute("ROLLBACK")
    writer.close()
    assert err.value.code == EX_BUSY
    assert time.monotonic() - started < 5
    assert count(db) == 50


def test_missing_database_is_placed_with_stale_companions_moved_aside(world):
    db, _, tmp_path = world
    report = _verified(world)
    wanted = content(Path(report.work))
    db.unlink()
    Path(f"{db}-wal").write_bytes(b"stale wal frames")
    Path(f"{db}-journal").write_bytes(b"stale journal")
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["method"] == "rename"
    assert applied["journal_mode"] == "wal"  # the manifest's journal mode
    assert (tmp_path / "aside" / "app.db-wal").read_bytes() == b"stale wal frames"
    assert not Path(f"{db}-journal").exists()
    assert content(db) == wanted


def test_placement_refused_while_a_process_has_the_file_open(world):
    db, _, tmp_path = world
    report = _verified(world)
    db.write_bytes(b"not a database at all" * 100)
    with open_elsewhere(db) as pid:
        found, _ = restore.holders([str(db)])
        assert pid in [found_pid for found_pid, _ in found]
        with pytest.raises(OpsError) as err:
            restore.apply_restore(report, str(db), str(tmp_path / "aside"))
        assert err.value.code == EX_BUSY
        assert f"pid {pid}" in err.value.message
    assert db.read_bytes() == b"not a database at all" * 100


def test_a_process_holding_the_file_by_another_path_gets_the_restore_through_sqlite(world):
    """A container's volume or a bind mount shows the application the same file
    under another path. The restore must still see it there and write through
    SQLite: renaming a new file into place would leave the application on the
    old, unlinked one, and its writes lost. (A hard link of the same name in
    another directory is what a mount shows, without the privileges a mount
    needs.)"""
    db, _, tmp_path = world
    report = _verified(world)
    other = tmp_path / "volume" / db.name
    other.parent.mkdir()
    os.link(db, other)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO devices(ip) VALUES ('written after the backup')")
    conn.close()
    before = os.stat(db).st_ino
    with open_elsewhere(other) as pid:
        found, _ = common.holders([str(db)])
        assert pid in [found_pid for found_pid, _ in found]
        applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["method"] == "backup-api"
    assert os.stat(db).st_ino == before == os.stat(other).st_ino
    assert count(db) == report.tables["devices"]


def test_check_restored_fails_on_wrong_counts(world):
    db, _, _ = world
    with pytest.raises(OpsError) as err:
        restore.check_restored(str(db), {"devices": 1, "services": 50})
    assert err.value.code == 4


def test_a_check_of_restored_content_that_cannot_run_is_no_verdict(tmp_path):
    """A hot journal a read-only open may not roll back, a work file that cannot
    be opened: the checks of restored content say they could not run (exit 1),
    never "failed PRAGMA quick_check" (exit 4) or "cannot be read" (exit 3,
    "do not use this backup": a person would give up on a sound backup)."""
    db = blob_db(tmp_path / "copy.db")
    size = db.stat().st_size
    kill_writer_mid_transaction(db)
    for check in (lambda: restore.check_restored(str(db), {"t": 2000}, shown="live.db"),
                  lambda: restore.check_proven(str(db), {"t": 2000}, size, shown="live.db")):
        with pytest.raises(OpsError) as caught:
            check()
        assert caught.value.code == EX_FAIL
        assert caught.value.message.startswith(
            "cannot check the restored live.db (attempt to write a readonly database)")
    unopenable = tmp_path / "a directory"
    unopenable.mkdir()
    with pytest.raises(OpsError) as caught:
        restore.structural_checks(str(unopenable))
    assert caught.value.code == EX_FAIL
    assert caught.value.message.startswith("cannot read the backup's content in ")
    assert caught.value.message.endswith("the backup was not judged, and nothing was changed")


# ---------------------------------------------------------------------------
# The entry point restore_database.sh execs (sqlite_ops.restore_flow)
# ---------------------------------------------------------------------------


def run_cli(action: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "lib"), SQLITE_OPS_CONFIG=os.devnull)
    return subprocess.run([sys.executable, "-m", "sqlite_ops.restore_flow", action, *args],
                          env=env, capture_output=True, text=True)


def test_cli_errors_are_one_line_with_the_contract_code(tmp_path):
    proc = run_cli("verify", "--dir", str(tmp_path), "--db", str(tmp_path / "app.db"), "--",
                   str(tmp_path / "missing.db.zst"))
    assert proc.returncode == EX_USAGE
    assert proc.stderr.startswith("restore_database.sh: backup not found")
    assert proc.stderr.count("\n") == 1


def test_cli_list_json(world):
    db, backup, tmp_path = world
    proc = run_cli("list", "--json", "--dir", str(tmp_path / "backups"), "--db", str(db))
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["latest"] == str(backup)
    (entry,) = data["backups"]
    assert entry["status"] == "ok" and entry["checksum_ok"] is True
    assert entry["tables"] == {"devices": 50, "services": 50}


# ---------------------------------------------------------------------------
# Hostile manifests and backups dated in the future
# ---------------------------------------------------------------------------


def _copy_as(backup: Path, epoch: float, **fields) -> Path:
    """A copy of ``backup`` named for ``epoch``, its manifest edited with ``fields``."""
    copy = backup.with_name(catalog.backup_file_name("app", epoch, "zstd"))
    shutil.copyfile(backup, copy)
    manifest = json.loads(Path(f"{backup}{catalog.MANIFEST_SUFFIX}").read_text())
    manifest.update(fields)
    Path(f"{copy}{catalog.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(("key", "value"), [
    ("db_size_bytes", "garbage"), ("created_at", 12345), ("tables", {"devices": "many"}),
    ("schema_version", {}), ("size_bytes", None),
])
def test_verify_refuses_a_mistyped_manifest_with_exit_3(world, key, value):
    _, backup, tmp_path = world
    bad = _copy_as(backup, time.time() - 60, **{key: value})
    with pytest.raises(OpsError) as err:
        restore.verify_backup(bad, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert f"manifest unreadable: {key} is" in err.value.message


def test_verify_names_what_an_incomplete_manifest_lacks(world):
    _, backup, tmp_path = world
    manifest_path = Path(f"{backup}{catalog.MANIFEST_SUFFIX}")
    manifest = json.loads(manifest_path.read_text())
    del manifest["db_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(OpsError) as err:
        restore.verify_backup(backup, tmp_path / "work.db")
    assert err.value.code == EX_VERIFY
    assert "its manifest is incomplete: it has no db_sha256" in err.value.message


def test_a_hostile_newer_manifest_leaves_latest_and_the_list_working(world):
    db, backup, tmp_path = world
    newer = _copy_as(backup, time.time() + 60)
    Path(f"{newer}{catalog.MANIFEST_SUFFIX}").write_text("[" * 100000)
    assert restore.resolve_backup("latest", tmp_path / "backups", db) == backup
    entries = {e["file"]: e for e in restore.list_entries(tmp_path / "backups", str(db))}
    assert entries[newer.name]["status"] == "manifest unreadable (nested too deeply)"
    assert entries[newer.name]["manifest_error"] == "manifest unreadable: nested too deeply"
    assert entries[backup.name]["status"] == "ok"


def test_latest_skips_a_backup_dated_in_the_future_and_says_so_when_nothing_else(world):
    db, backup, tmp_path = world
    future = _copy_as(backup, time.time() + 30 * 86400)  # name and created_at both
    Path(f"{future}{catalog.MANIFEST_SUFFIX}").write_text(json.dumps(dict(
        json.loads(Path(f"{backup}{catalog.MANIFEST_SUFFIX}").read_text()),
        created_at=catalog.iso_utc(time.time() + 30 * 86400), file=future.name)))
    assert restore.resolve_backup("latest", tmp_path / "backups", db) == backup
    entry = {e["file"]: e for e in restore.list_entries(tmp_path / "backups", str(db))}[
        future.name]
    assert entry["in_future"] and "dated in the future" in entry["status"]
    assert entry["oddities"][0].startswith("dated in the future")
    backup.unlink()
    with pytest.raises(OpsError) as err:
        restore.resolve_backup("latest", tmp_path / "backups", db)
    assert err.value.code == EX_USAGE
    assert "1 are dated in the future" in err.value.message


def test_list_shows_a_newline_in_a_name_escaped_on_one_line(tmp_path):
    db = make_db(tmp_path / "new\nline.db", rows=3)
    take_backup(db, tmp_path / "backups")
    proc = run_cli("list", "--dir", str(tmp_path / "backups"), "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("* ")]
    assert row.startswith("* new\\nline_") and row.endswith("  ok")
    assert "Backups of 'new\\nline'" in proc.stdout


# ---------------------------------------------------------------------------
# The incident path tells the truth
# ---------------------------------------------------------------------------


def test_a_commit_right_after_the_restore_is_not_mistaken_for_damage(world, monkeypatch):
    """The application commits between the restore's commit and its check: the
    check still sees exactly what the restore wrote, or knows it did not."""
    db, _, tmp_path = world
    report = _verified(world)
    app = sqlite3.connect(db, isolation_level=None)
    real_check = restore._check_own_copy

    def app_writes_first(dst, target, expected, version_before):
        app.execute("INSERT INTO devices(ip) VALUES ('written by the app after the restore')")
        return real_check(dst, target, expected, version_before)

    monkeypatch.setattr(restore, "_check_own_copy", app_writes_first)
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    app.close()
    assert "another process committed writes right after the restore" in applied["note"]
    assert "devices has 51 rows, the backup has 50" in applied["note"]
    assert count(db) == 51  # the app's row is kept: it is the application's


def test_a_difference_nobody_else_wrote_is_still_damage(world, monkeypatch):
    db, _, tmp_path = world
    report = _verified(world)
    report.tables = dict(report.tables, devices=49)  # as if a page had been written wrong
    with held(db), pytest.raises(OpsError) as caught:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert caught.value.code == 4
    assert "devices has 50 rows, manifest says 49" in caught.value.message


def _without_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_a_file_proven_by_hash_is_renamed_into_place_without_a_scan(world, monkeypatch):
    """--to, --drill, a restore into a missing database: the work file holds
    the bytes the backup counted and checked; it is not read again."""
    db, _, tmp_path = world
    report = _verified(world)
    wanted = content(Path(report.work))
    _without_db(db)
    statements = traced(monkeypatch)
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["method"] == "rename" and applied["journal_mode"] == "wal"
    assert scans(statements) == []
    assert any("page_count" in s for s in statements)  # what it reads instead: the header
    assert content(db) == wanted


def _rewrite(work: str) -> None:
    conn = sqlite3.connect(work, isolation_level=None)
    conn.execute("UPDATE devices SET ip = 'changed after the hash' WHERE id = 1")
    conn.close()


def _rewrite_keeping_mtime(work: str) -> None:
    st = os.stat(work)
    _rewrite(work)
    os.utime(work, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_with_another(work: str) -> None:
    other = make_db(Path(work).with_name("other.db"), rows=50)
    restore.set_journal_mode(str(other), "delete")
    os.replace(other, work)


@pytest.mark.parametrize("change, said", [
    (_rewrite, "was written to or replaced"),
    (_rewrite_keeping_mtime, "was written to or replaced"),
    (_replace_with_another, "was written to or replaced"),
    (os.unlink, "was removed"),
])
def test_a_work_file_changed_after_its_hash_is_never_put_in_place(world, change, said):
    """Between verify and the rename (a person reading the plan, say) the
    private work file is written to, replaced by another database with the same
    tables and rows, or removed: refused, nothing placed, whatever its rows say."""
    db, _, tmp_path = world
    report = _verified(world)
    _without_db(db)
    change(report.work)
    with pytest.raises(OpsError) as err:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert err.value.code == 1
    assert f"the verified copy {report.work} {said} after it was verified" in err.value.message
    assert "nothing was changed" in err.value.message
    assert not db.exists()


@pytest.mark.parametrize("pages, said", [
    (-1, "cannot be read (database disk image is malformed)"),
    (+1, "does not match the backup: it has"),
])
def test_a_bad_write_by_the_journal_mode_change_is_caught_before_the_rename(
        world, monkeypatch, pages, said):
    """The journal-mode change is the one write after the hash: a file it
    left a page short or long is refused, not put in place."""
    db, _, tmp_path = world
    report = _verified(world)
    _without_db(db)
    real = restore.set_journal_mode

    def and_resize(path, mode):
        result = real(path, mode)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) + pages * 4096)
        return result

    monkeypatch.setattr(restore, "set_journal_mode", and_resize)
    with pytest.raises(OpsError) as err:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert err.value.code == 4
    assert f"the restored {db} {said}" in err.value.message
    assert not db.exists()


def test_a_restore_without_a_manifest_still_runs_quick_check_and_counts(world, monkeypatch):
    """--force without a manifest: nothing proved the bytes, so the work file
    gets quick_check and every table's count before it is renamed into place."""
    db, backup, tmp_path = world
    Path(f"{backup}{catalog.MANIFEST_SUFFIX}").unlink()
    report = restore.verify_backup(backup, tmp_path / "work.db", force=True)
    assert report.work_identity is None and not report.rows_recorded
    _without_db(db)
    statements = traced(monkeypatch)
    restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert "PRAGMA quick_check" in statements and 'SELECT count(*) FROM "devices"' in statements
    assert count(db) == 50
    # And what it counts decides: rows lost after verify are refused.
    _without_db(db)
    report = restore.verify_backup(backup, tmp_path / "work2.db", force=True)
    conn = sqlite3.connect(report.work, isolation_level=None)
    conn.execute("DELETE FROM services WHERE id = 1")
    conn.close()
    with pytest.raises(OpsError) as err:
        restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert err.value.code == 4
    assert "services has 49 rows, manifest says 50" in err.value.message
    assert not db.exists()


def _interrupt_in(monkeypatch, name):
    real = getattr(restore, name)

    def interrupted(*args, **kwargs):
        if name in ("_check_own_copy", "_move_aside"):
            raise KeyboardInterrupt
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(restore, name, interrupted)


def _apply(report, db, tmp_path):
    """The flow's apply step, interrupted: (exit code, what it says)."""
    with pytest.raises(OpsError) as caught:
        restore_flow.apply(report, str(db), str(tmp_path / "aside"))
    return caught.value.code, caught.value.message


def test_interrupted_after_the_commit_says_restored_not_as_it_was(world, monkeypatch):
    db, _, tmp_path = world
    restore.set_journal_mode(str(db), "wal")
    app = sqlite3.connect(db, isolation_level=None)
    app.executemany("INSERT INTO devices(ip) VALUES (?)", [("later",)] * 7)
    app.close()
    report = _verified(world)
    wanted = content(Path(report.work))
    _interrupt_in(monkeypatch, "_check_own_copy")
    with held(db):
        code, err = _apply(report, db, tmp_path)
    assert code == 130
    assert "interrupted after the copy was committed" in err
    assert f"{db} holds the backup's content ({Path(report.backup).name}, 100 rows)" in err
    assert "it was not checked: check it with:" in err and "quick-check" in err
    assert "as it was" not in err
    assert content(db) == wanted  # and it really does


def test_interrupted_before_the_copy_says_as_it_was(world, monkeypatch):
    db, _, tmp_path = world
    app = sqlite3.connect(db, isolation_level=None)
    app.executemany("INSERT INTO devices(ip) VALUES (?)", [("later",)] * 7)
    app.close()
    before = content(db)
    report = _verified(world)
    monkeypatch.setattr(restore, "_check_free_space",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with held(db):
        code, err = _apply(report, db, tmp_path)
    assert code == 130
    assert f"interrupted before anything was written: {db} is as it was" in err
    assert content(db) == before


def test_an_interrupted_copy_that_changes_the_page_size_leaves_wal_mode_as_it_was(
        tmp_path, monkeypatch):
    """A WAL database is switched to DELETE mode for a copy that changes its
    page size. Interrupted, the copy is rolled back, and so is the switch:
    "as it was" includes the journal mode the application relies on."""
    source = make_db(tmp_path / "src.db", page_size=8192)
    backup = take_backup(source, tmp_path / "backups")
    db = make_db(tmp_path / "app.db", rows=5, page_size=4096)
    before = content(db)
    report = restore.verify_backup(backup, tmp_path / "work.db")
    monkeypatch.setattr(restore, "COPY_STEP_PAGES", 1)
    monkeypatch.setattr(restore, "abort_when_busy",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with open_elsewhere(db):  # so the restore writes through SQLite
        code, err = _apply(report, db, tmp_path)
    assert code == 130
    assert f"SQLite rolled it back, so {db} is as it was" in err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    conn.close()
    assert content(db) == before


def test_interrupted_during_the_copy_finds_out_from_the_schema_cookie(world, monkeypatch):
    """A Ctrl-C inside the backup-API step is raised after the step returns:
    whether it committed is read from the database, not assumed."""
    db, _, tmp_path = world
    report = _verified(world)
    wanted = content(Path(report.work))

    def progress_interrupted(status, remaining, total):
        raise KeyboardInterrupt

    monkeypatch.setattr(restore, "abort_when_busy", progress_interrupted)
    with held(db):
        code, err = _apply(report, db, tmp_path)
    assert code == 130
    assert "interrupted during the copy, after its commit" in err
    assert content(db) == wanted


def test_interrupted_after_a_rename_into_place(world, monkeypatch):
    db, _, tmp_path = world
    report = _verified(world)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(restore.os, "replace", replace_then_interrupt)
    code, err = _apply(report, db, tmp_path)
    assert code == 130
    assert "interrupted after the restored file was put in place" in err
    assert count(db) == 50


def test_a_new_file_gets_the_manifests_journal_mode_owner_and_mode(world):
    db, backup, tmp_path = world
    manifest_path = Path(f"{backup}{catalog.MANIFEST_SUFFIX}")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["journal_mode"] == "wal"
    assert {"owner", "group", "mode"} <= set(manifest)  # recorded by every backup
    manifest["mode"] = "0640"
    manifest_path.write_text(json.dumps(manifest))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    report = _verified(world)
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["journal_mode"] == "wal"
    assert oct(os.stat(db).st_mode & 0o777) == "0o640"
    assert "0640 (as recorded in the backup's manifest)" in applied["ownership"]


def test_a_fresh_empty_file_in_place_of_the_database_gets_the_backups_journal_mode(world):
    """`sqlite3 app.db` (or an application starting) after the loss leaves an
    empty rollback-journal file: the restore must not keep that mode."""
    db, _, tmp_path = world
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for method in ("backup-api", "rename"):  # an application has it open, or nothing
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        db.touch(mode=0o600)
        report = _verified(world)
        with held(db) if method == "backup-api" else contextlib.nullcontext():
            applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
        assert applied["method"] == method
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert "as recorded in the backup's manifest" in applied["ownership"]


def test_an_existing_file_keeps_its_owner_and_mode(world):
    db, _, tmp_path = world
    os.chmod(db, 0o644)
    report = _verified(world)
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert "0644 (as the replaced file)" in applied["ownership"]
    assert os.stat(db).st_mode & 0o777 == 0o644


def test_incident_pruning_keeps_the_first_the_newest_two_and_whatever_nothing_else_holds():
    day = 86400.0
    times = [0, 600, 1200, 1800, 2400, 3000, 3600, 4200, 5 * day, 5 * day + 60, 5 * day + 90,
             5 * day + 120]
    contents = ["orig", "orig", "app-wrote", "app-wrote", None, "latest", "a", "b", "c", "c",
                "d", "e"]
    copies = [restore.SafetyCopy(Path(f"c{i}"), t, None, content)
              for i, (t, content) in enumerate(zip(times, contents))]
    backups = [restore.SafetyCopy(Path("backups/latest"), 3000, None, "latest"),
               restore.SafetyCopy(Path("backups/older"), 0, None, "orig"),
               restore.SafetyCopy(Path("backups/old-a"), 100, None, "a2")]
    copies[6].content = "a2"  # c6 (kept) holds what an older backup holds too
    planned = restore.plan_incident_prune(copies, backups)
    # c0..c7 are one incident: c0 (before anyone restored), c6 and c7 stay; of
    # c1..c5, each goes only when its content is kept elsewhere: c1 is c0's
    # (a kept copy comes first, before the older backup holding it), c2 holds
    # writes nothing else has (so c3, its twin, goes), c4 is a raw copy (no
    # hash: kept), c5 is the backup's, taken as late as c5. c8..c11: another
    # incident, whose middle c9 is its first's twin.
    assert [(c.path.name, str(twin)) for c, twin in planned] == [
        ("c1", "c0"), ("c3", "c2"), ("c5", "backups/latest"), ("c9", "c8")]
    # A backup older than the copy is no twin: retention would remove it first.
    lone = [restore.SafetyCopy(Path(f"d{i}"), 600 * i, None, content)
            for i, content in enumerate(["x", "orig", "y", "z"])]
    assert restore.plan_incident_prune(lone, backups) == []


def test_migration_undone_by_the_restore_is_named(tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for name in ("001_init.sql", "002_devices.sql", "003_drop_hostnames.sql"):
        (migrations / name).write_text("-- migrate:up\nSELECT 1;\n")
    report = restore.Report(backup="b", work="w", has_manifest=True, created_at=None,
                            compression="none", sha256="", db_size_bytes=0, page_size=4096,
                            journal_mode="wal", schema_version=2, tables={})
    report.undone = restore.undone_migrations(report, str(migrations),
                                              [(3, "the database being replaced")])
    assert report.undone == [[3, "003_drop_hostnames.sql", "the database being replaced"]]
    note = restore.check_schema(report, str(migrations), False)
    assert "predates migration 003_drop_hostnames.sql" in note
    assert "do not run `make migrate` yet" in note
    report.undone = restore.undone_migrations(report, str(migrations), [])
    assert "run `make migrate`" in restore.check_schema(report, str(migrations), False)


def test_later_versions_reads_the_schema_version_of_the_database_being_replaced(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);"
                       "INSERT INTO schema_migrations VALUES (1), (3);")
    conn.close()
    backup = tmp_path / "app_20260101_000000.db"
    assert restore.later_versions(str(backup), str(db), None) == [
        (3, "the database being replaced")]
    assert restore.later_versions(str(backup), str(tmp_path / "missing.db"), None) == []


def test_a_mistyped_directory_names_the_nearest_existing_path(tmp_path):
    (tmp_path / "dashboard" / "data").mkdir(parents=True)
    typo = tmp_path / "dashbaord" / "data" / "dashboard.db"
    message = restore.missing_dir_message(str(typo), str(tmp_path / "conf.db"))
    assert f"directory {typo.parent} does not exist" in message
    assert f"the nearest existing one is {tmp_path}" in message
    assert f"did you mean {tmp_path / 'dashboard' / 'data' / 'dashboard.db'}?" in message
    assert f"the configured DB_PATH is {tmp_path / 'conf.db'}" in message
    assert "create it (owned" not in message


def test_python_entry_points_end_an_interrupt_without_a_traceback():
    for sig in ("SIGINT", "SIGTERM"):
        # (A test runner may start children with SIGINT ignored: give it back.)
        code = ("import os, signal\nfrom sqlite_ops.common import run_interruptible\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                f"def main():\n    os.kill(os.getpid(), signal.{sig})\n    return 0\n"
                "raise SystemExit(run_interruptible(main))\n")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "lib"))
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 130, sig
        assert "Traceback" not in proc.stderr
    for module in (REPO_ROOT / "lib" / "sqlite_ops").glob("*.py"):
        text = module.read_text()
        if 'if __name__ == "__main__":' in text:
            assert "run_interruptible(main)" in text, f"{module.name}: Ctrl-C gives a traceback"


def test_an_interrupted_drill_says_its_temp_file_goes(world, monkeypatch):
    db, _, tmp_path = world
    report = _verified(world)
    _interrupt_in(monkeypatch, "_move_aside")
    with pytest.raises(OpsError) as caught:
        restore_flow.apply(report, str(tmp_path / "drill.db"), str(tmp_path / "aside"),
                           scratch=True)
    assert caught.value.code == 130
    err = caught.value.message
    assert "the drill's temp file is removed, nothing else was touched" in err
    assert "check it with" not in err


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_a_database_nothing_has_open_gets_the_verified_file_itself(world, mode):
    """No process has it open: the verified file is renamed into place (one
    write of the data, not two through the WAL), in the database's own journal
    mode, with the replaced file's owner and mode."""
    db, _, tmp_path = world
    restore.set_journal_mode(str(db), mode)
    os.chmod(db, 0o640)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM services")
    conn.execute("DELETE FROM devices WHERE id > 5")
    conn.close()
    before = os.stat(db).st_ino
    report = _verified(world)
    applied = restore.apply_restore(report, str(db), str(tmp_path / "aside"))
    assert applied["method"] == "rename" and applied["idle"]
    assert applied["journal_mode"] == mode
    assert os.stat(db).st_ino != before
    assert os.stat(db).st_mode & 0o777 == 0o640
    assert count(db) == 50
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


APP = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('SELECT 1 FROM devices').fetchall()
print('open', flush=True)
sys.stdin.readline()
print(c.execute('SELECT count(*) FROM devices').fetchone()[0])
"""


@pytest.mark.parametrize("seen_from", ["this PID namespace", "one of its own"])
def test_an_application_with_it_open_keeps_its_file(world, monkeypatch, seen_from):
    """Another process has the database open: the restore writes into that very
    file through SQLite, so the application reads the restored rows. Also where
    the /proc scan cannot see it (a restore from a container of its own, made
    here without a namespace, which a container may forbid): its WAL
    connection's SQLite locks show it."""
    db, _, tmp_path = world
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM services")
    conn.execute("DELETE FROM devices")
    conn.close()
    if seen_from == "one of its own":
        seen_as_from_a_pid_namespace_of_its_own(monkeypatch, restore)
    app = subprocess.Popen([sys.executable, "-c", APP, str(db)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "open"
        before = os.stat(db).st_ino
        applied = restore.apply_restore(_verified(world), str(db), str(tmp_path / "aside"))
        assert applied["method"] == "backup-api"
        assert os.stat(db).st_ino == before
        seen, _ = app.communicate("\n", timeout=30)
    finally:
        app.kill()
    assert seen.strip() == "50"  # the application's own connection sees the restore




def test_a_restore_from_a_container_of_its_own_keeps_the_applications_file(tmp_path):
    """restore_database.sh run in a PID namespace of its own (a sidecar
    container) sees no process with the database open in /proc, but the
    application's WAL connection holds its locks: the restore writes into that
    very file, never renames a new one under it (where the application would
    go on reading, and writing, the replaced file)."""
    db = make_db(tmp_path / "app.db")
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"))
    proc = run("backup_database.sh", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["sqlite3", str(db), "DELETE FROM services; DELETE FROM devices;"], check=True)
    app = subprocess.Popen([sys.executable, "-c", APP, str(db)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "open"
        before = os.stat(db).st_ino
        proc = in_a_pid_namespace_of_its_own(
            [str(SCRIPTS / "restore_database.sh"), "--yes", "--quiet", "latest"], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert os.stat(db).st_ino == before
        seen, _ = app.communicate("\n", timeout=30)
    finally:
        app.kill()
    assert seen.strip() == "50"  # the application's own connection sees the restore


def test_the_plan_says_an_application_it_cannot_see_has_the_database_open(tmp_path,
                                                                         monkeypatch):
    """What the operator is shown before yes, from a container of its own
    (the /proc scan finds nobody): the database is open all the same."""
    db = make_db(tmp_path / "app.db")
    seen_as_from_a_pid_namespace_of_its_own(monkeypatch, restore)
    assert restore._open_in(str(db)) == []
    app = subprocess.Popen([sys.executable, "-c", APP, str(db)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "open"
        lines = restore._open_in(str(db))
        described = restore.describe_holders(str(db))
    finally:
        app.kill()
        app.wait()
    assert lines[0] == f"  open in:  {restore.unseen_holder(True)}"
    assert described == ("a process this run cannot see (one in another PID namespace: a "
                         "container), which holds its SQLite locks")


def _restore_with_a_late_opener(world, monkeypatch, code: str) -> tuple[dict, int]:
    """apply_restore, with a process that runs ``code`` on the database (and
    prints "open") started between the last check and the rename: (what was
    applied, its pid)."""
    db, _, tmp_path = world
    late = []
    real_replace = os.replace

    def replace_after_an_open(src, dst):
        if os.fspath(dst) == str(db) and not late:
            late.append(subprocess.Popen([sys.executable, "-c", code, str(db)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True))
            assert late[0].stdout.readline().strip() == "open"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_an_open)
    try:
        applied = restore.apply_restore(_verified(world), str(db), str(tmp_path / "aside"))
    finally:
        for proc in late:
            proc.kill()
            proc.wait()
    assert applied["method"] == "rename"
    return applied, late[0].pid


def test_a_process_that_opens_the_old_file_mid_replace_is_named(world, monkeypatch):
    """Between the check that nothing has it open and the rename, a process
    opens the database: it is left holding the old file, and the receipt's note
    names it and says to restart it."""
    applied, pid = _restore_with_a_late_opener(
        world, monkeypatch, "import sys, time\nf = open(sys.argv[1], 'rb')\n"
                            "print('open', flush=True)\ntime.sleep(60)\n")
    assert f"(pid {pid}) opened {world[0]} while it was being replaced and still has the " \
           f"old file: {restore.LATE_OPENER_ADVICE}" in applied["note"]


def test_an_application_it_cannot_see_that_opens_the_old_file_mid_replace_is_said(
        world, monkeypatch):
    """The same from a container of its own: no /proc scan finds the late
    opener, but its SQLite locks on the replaced file show it."""
    seen_as_from_a_pid_namespace_of_its_own(monkeypatch, restore)
    applied, _ = _restore_with_a_late_opener(world, monkeypatch, APP)
    assert applied["note"] == (f"{restore.unseen_holder(True)} opened {world[0]} while it was "
                               "being replaced and still has the old file: "
                               f"{restore.LATE_OPENER_ADVICE}")


def test_the_restore_is_not_its_own_holder_where_proc_numbers_it_otherwise(world,
                                                                          monkeypatch):
    """Run in a PID namespace whose /proc is another's (unshare without
    --mount-proc), this process is not os.getpid() in /proc: the restore
    holds the replaced file open across the rename, and must not find itself
    there and refuse, nor tell the operator to restart itself."""
    db, _, tmp_path = world
    monkeypatch.setattr(os, "getpid", lambda: 1)
    applied = restore.apply_restore(_verified(world), str(db), str(tmp_path / "aside"))
    assert applied["method"] == "rename" and applied["note"] is None
