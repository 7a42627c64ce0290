"""Tests for sqlite_ops.snapshot: the one-step online copy, pack and manifest."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from opsenv import blob_db, index_out_of_step, make_db, slow_sqlite

from sqlite_ops import catalog, snapshot
from sqlite_ops.common import EX_FAIL, EX_INTEGRITY, OpsError


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copy_is_complete_and_self_contained(tmp_path):
    src = make_db(tmp_path / "live.db", 500)
    dest = tmp_path / "snap.db"
    dest.touch()
    facts = snapshot.take_snapshot(src, dest)
    assert facts["journal_mode"] == "wal"
    assert facts["page_size"] == 4096
    assert facts["sqlite_version"] == sqlite3.sqlite_version
    assert dest.read_bytes()[18:20] == b"\x01\x01"  # rollback-journal header
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 500
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert not Path(f"{dest}-wal").exists() and not Path(f"{dest}-shm").exists()


def test_copy_includes_uncheckpointed_wal_commits(tmp_path):
    src = make_db(tmp_path / "live.db", 10)
    holder = sqlite3.connect(src, isolation_level=None)
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO devices(ip) SELECT ip FROM devices")
    assert Path(f"{src}-wal").stat().st_size > 0
    dest = tmp_path / "snap.db"
    snapshot.take_snapshot(src, dest)
    holder.close()
    assert sqlite3.connect(dest).execute("SELECT count(*) FROM devices").fetchone()[0] == 20


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_copy_completes_under_a_steady_writer(tmp_path, mode):
    """One backup step holds one read transaction: commits cannot restart it."""
    src = make_db(tmp_path / "live.db", 1, mode)
    conn = sqlite3.connect(src, isolation_level=None)
    conn.execute("CREATE TABLE big(b BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO big VALUES (randomblob(1000))", [()] * 8000)
    conn.execute("COMMIT")
    conn.close()
    stop = threading.Event()
    commits = [0]

    def writer() -> None:
        w = sqlite3.connect(src, timeout=30, isolation_level=None)
        while not stop.is_set():
            w.execute("INSERT INTO devices(ip) VALUES ('w')")
            commits[0] += 1
            time.sleep(0.003)
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        before = commits[0]
        start = time.monotonic()
        snapshot.take_snapshot(src, tmp_path / "snap.db")
        took = time.monotonic() - start
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert took < 20
    assert commits[0] > before  # the writer kept going around the copy
    check = sqlite3.connect(tmp_path / "snap.db")
    assert check.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert check.execute("SELECT count(*) FROM big").fetchone()[0] == 8000


def test_copy_of_a_corrupt_database_is_an_integrity_error(tmp_path):
    src = tmp_path / "bad.db"
    src.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with pytest.raises(OpsError) as info:
        snapshot.take_snapshot(src, tmp_path / "snap.db")
    assert info.value.code == EX_INTEGRITY


def test_copy_opens_hostile_paths_as_files(tmp_path):
    weird = tmp_path / "it's a ?x=1#frag\n'; DROP TABLE t; --"
    weird.mkdir()
    src = make_db(weird / "db%20name.db", 3)
    dest = weird / "snap?.db"
    snapshot.take_snapshot(src, dest)
    assert sqlite3.connect(dest).execute("SELECT count(*) FROM devices").fetchone()[0] == 3
    assert sqlite3.connect(src).execute("SELECT count(*) FROM devices").fetchone()[0] == 3


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_pack_hashes_both_streams(tmp_path, codec):
    if codec == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    snap = make_db(tmp_path / "snap.db", 2000, "delete")
    original = snap.read_bytes()
    out = snap if codec == "none" else tmp_path / "out"
    facts = snapshot.pack(snap, out, codec)
    assert facts["sha256"] == sha(out)
    assert facts["size_bytes"] == out.stat().st_size
    assert facts["db_sha256"] == hashlib.sha256(original).hexdigest()
    assert facts["db_size_bytes"] == len(original)
    if codec == "gzip":
        assert gzip.decompress(out.read_bytes()) == original
    elif codec == "zstd":
        plain = subprocess.run(["zstd", "-d", "-c", str(out)], capture_output=True, check=True)
        assert plain.stdout == original
        assert facts["size_bytes"] < len(original)


@pytest.mark.parametrize("codec", ["gzip", "none"])
def test_pack_records_the_integrity_check_against_the_content_hash(tmp_path, codec):
    snap = make_db(tmp_path / "snap.db", 500, "delete")
    out = snap if codec == "none" else tmp_path / "out.gz"
    facts = snapshot.pack(snap, out, codec)
    assert facts["integrity_check"] == {"result": "ok", "db_sha256": sha(snap),
                                        "sqlite_version": sqlite3.sqlite_version}


def test_pack_refuses_content_that_fails_integrity_check(tmp_path):
    """An index that disagrees with its table: quick_check passes it, the full
    check does not; nothing may be recorded as ok."""
    snap = index_out_of_step(tmp_path / "snap.db")
    assert sqlite3.connect(snap).execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert sqlite3.connect(snap).execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    with pytest.raises(OpsError) as info:
        snapshot.pack(snap, tmp_path / "out.gz", "gzip", source="live.db")
    assert info.value.code == EX_INTEGRITY
    assert info.value.message.startswith("live.db failed PRAGMA integrity_check (")


def test_pack_reports_a_failing_compressor(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "gzip"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho 'gzip: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    snap = make_db(tmp_path / "snap.db", 100, "delete")
    with pytest.raises(OpsError) as info:
        snapshot.pack(snap, tmp_path / "out.gz", "gzip")
    assert info.value.code == EX_FAIL
    assert "No space left on device" in info.value.message


def test_pack_names_the_package_of_a_missing_compressor(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OpsError) as info:
        snapshot.compressor_command("zstd")
    assert "apt-get install zstd" in info.value.message


def test_describe_counts_rows_of_awkward_table_names(tmp_path):
    snap = make_db(tmp_path / "snap.db", 7, "delete")
    conn = sqlite3.connect(snap)
    conn.execute('CREATE TABLE "Order ""Details"""(x)')
    conn.execute('INSERT INTO "Order ""Details""" VALUES (1)')
    conn.commit()
    conn.close()
    facts = snapshot.describe(snap)
    assert facts["tables"] == {"Order \"Details\"": 1, "devices": 7, "services": 7}
    assert facts["schema_version"] is None


@pytest.mark.parametrize(("ddl", "violations", "error"), [
    ("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id));"
     "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1), (2), (3);", 2, None),
    ("CREATE TABLE p(a, b); CREATE TABLE c(x REFERENCES p(b));"  # parent key not unique
     "INSERT INTO p VALUES (1, 2); INSERT INTO c VALUES (2);", None, "foreign key mismatch"),
])
def test_describe_records_foreign_key_problems_and_never_fails_on_them(
        tmp_path, ddl, violations, error):
    """A backup copies the data as it is: the manifest records the problem for
    the restore to explain, and the backup still succeeds."""
    snap = tmp_path / "snap.db"
    conn = sqlite3.connect(snap)
    conn.executescript(ddl)
    conn.close()
    facts = snapshot.describe(snap)
    assert facts["foreign_key_violations"] == violations
    assert (error is None) == ("foreign_key_check_error" not in facts)
    assert error is None or error in facts["foreign_key_check_error"]


@pytest.mark.parametrize(
    ("ddl", "rows", "expected"),
    [
        ("version INTEGER PRIMARY KEY, description TEXT", [(9, "a"), (10, "b"), (2, "c")], 10),
        ("id INTEGER PRIMARY KEY, version TEXT", [(1, "9"), (2, "10")], None),
        ("version INTEGER PRIMARY KEY, description TEXT", [], None),
    ],
)
def test_schema_version(tmp_path, ddl, rows, expected):
    conn = sqlite3.connect(tmp_path / "db.db")
    conn.execute(f"CREATE TABLE schema_migrations({ddl})")
    conn.executemany("INSERT INTO schema_migrations VALUES (?, ?)", rows)
    assert snapshot.schema_version(conn) == expected


def test_manifest_has_every_contract_field(tmp_path):
    snap = make_db(tmp_path / "snap.db", 5, "delete")
    manifest = snapshot.build_manifest(
        snap, source="live.db", created=0, file_name="live_19700101_000000.db", name="live",
        compression="none", duration=1.23456,
        facts=[{"journal_mode": "wal", "sqlite_version": "3", "owner": 0, "group": 0,
                "mode": "0644"}, snapshot.pack(snap, snap, "none")])
    written = {key for key, (_, level) in catalog.MANIFEST_SCHEMA.items()
               if level != catalog.OPTIONAL}
    assert written <= set(manifest)
    assert manifest["created_at"] == "1970-01-01T00:00:00Z"
    assert manifest["source"] == os.path.abspath("live.db")
    assert manifest["verified"] is True and manifest["format"] == 1
    assert manifest["duration_seconds"] == 1.235


def test_a_manifest_that_breaks_its_schema_is_never_published(tmp_path):
    snap = make_db(tmp_path / "snap.db", 5, "delete")
    with pytest.raises(OpsError) as raised:
        snapshot.build_manifest(
            snap, source="live.db", created=0, file_name="live_19700101_000000.db",
            name="live", compression="none", duration=1.0,
            facts=[{"journal_mode": "wal", "sqlite_version": "3", "owner": 0, "group": 0,
                    "mode": "0644"},
                   {"sha256": "not hex", "db_sha256": "b" * 64, "size_bytes": 1,
                    "db_size_bytes": 1}])
    assert raised.value.code == EX_FAIL
    assert "sha256 is \"not hex\", not a hex SHA-256" in raised.value.message


def test_a_lock_taken_just_before_the_copy_ends_it_at_the_busy_timeout(tmp_path, monkeypatch):
    """A writer that takes the rollback-journal database between the snapshot's
    first reads and its copy, and keeps it: the copy gives up after the busy
    timeout with a message that says so, instead of retrying for as long as
    the lock stays (a cron backup that never ends)."""
    src = make_db(tmp_path / "live.db", 50, "delete")
    writer = sqlite3.connect(src, isolation_level=None, check_same_thread=False)
    real_progress = snapshot.Progress

    def lock_then_progress(*args, **kwargs):
        writer.execute("BEGIN EXCLUSIVE")
        return real_progress(*args, **kwargs)

    monkeypatch.setattr(snapshot, "Progress", lock_then_progress)
    ended: dict[str, BaseException | None] = {}

    def copy() -> None:
        try:
            snapshot.take_snapshot(src, tmp_path / "snap.db", busy_timeout_ms=200, quiet=True)
            ended["error"] = None
        except BaseException as exc:
            ended["error"] = exc

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    copier.join(30)
    still_copying = copier.is_alive()
    writer.execute("ROLLBACK")  # lets a copy that kept retrying finish
    copier.join(30)
    writer.close()
    assert not still_copying, "the copy kept retrying the lock for 30 s"
    error = ended["error"]
    assert isinstance(error, OpsError) and error.code == EX_FAIL
    assert "locked" in error.message and "busy timeout" in error.message


def test_a_failed_compression_stops_the_check_beside_it(tmp_path, monkeypatch):
    """pack gives up (the compressor failed): the integrity_check on the
    snapshot is stopped before pack returns, not left reading a file its
    caller removes next."""
    snap = blob_db(tmp_path / "snap.db", 5000)
    slow_sqlite(monkeypatch)
    checkers = []
    real = snapshot.integrity.Background

    def recorded(*args, **kwargs):
        checkers.append(real(*args, **kwargs))
        return checkers[-1]

    def compressor_fails(*args, **kwargs):
        raise OpsError(EX_FAIL, "zstd failed: out of frames")

    monkeypatch.setattr(snapshot.integrity, "Background", recorded)
    monkeypatch.setattr(snapshot, "_compress", compressor_fails)
    with pytest.raises(OpsError, match="out of frames"):
        snapshot.pack(snap, tmp_path / "out.zst", "zstd")
    assert len(checkers) == 1 and checkers[0].done() and checkers[0].rows is None
