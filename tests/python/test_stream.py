"""Tests for snapshot.stream: a WAL database's own file, read inside one read
transaction, straight into the compressor (no temp copy), and the backup-API
copy it falls back to. The content must be byte for byte what the backup API
copies of the same transaction, and no commit or checkpoint by another
connection may change what it reads."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opsenv import index_out_of_step, make_db

from sqlite_ops import backup, restore, snapshot
from sqlite_ops.common import EX_FAIL, EX_INTEGRITY, OpsError


def content(backup_file: Path) -> bytes:
    """The database inside a backup file (zstd, gzip or plain), decompressed
    as a restore does: every frame (member), one after the other."""
    magic = backup_file.read_bytes()[:4]
    for start, command in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b", "gzip")):
        if magic.startswith(start):
            return subprocess.run([command, "-q", "-d", "-c", str(backup_file)], check=True,
                                  stdout=subprocess.PIPE).stdout
    return backup_file.read_bytes()


def api_copy(src: Path, dest: Path) -> bytes:
    """What SQLite itself makes of ``src`` now: the backup API into a fresh
    file, then PRAGMA journal_mode=DELETE on it (SQLite rewriting the header)."""
    s = sqlite3.connect(src)
    d = sqlite3.connect(dest, isolation_level=None)
    d.execute("PRAGMA journal_mode=OFF")
    s.backup(d)
    d.close()
    s.close()
    d = sqlite3.connect(dest, isolation_level=None)
    assert d.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    d.close()
    return dest.read_bytes()


def count(db: Path | str, table: str = "devices") -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def shaped(path: Path, page_size: int, auto_vacuum: str) -> Path:
    """A WAL database with free pages, a schema cookie far from 1, and a
    change counter far from the copy's."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    conn.execute("PRAGMA journal_mode=WAL")
    for i in range(30):
        conn.execute(f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(10):
        conn.execute(f"DROP TABLE t{i}")
    conn.executemany("INSERT INTO t20(v) VALUES (?)", [(f"row {i}" * 20,) for i in range(3000)])
    conn.execute("DELETE FROM t20 WHERE id % 3 = 0")
    conn.execute("CREATE INDEX t20_v ON t20(v)")
    conn.close()
    return path


@pytest.mark.parametrize(("page_size", "auto_vacuum"),
                         [(1024, "NONE"), (4096, "NONE"), (4096, "FULL"), (65536, "INCREMENTAL")])
@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_stream_is_byte_for_byte_the_backup_api_copy(tmp_path, page_size, auto_vacuum, codec):
    src = shaped(tmp_path / "live.db", page_size, auto_vacuum)
    out = tmp_path / "out"
    facts = snapshot.stream(str(src), out, codec, check="full")
    assert facts is not None and facts["snapshot_method"] == "file"
    expected = api_copy(src, tmp_path / "api.db")
    assert content(out) == expected
    assert facts["db_sha256"] == hashlib.sha256(expected).hexdigest()
    assert facts["db_size_bytes"] == len(expected)
    assert facts["tables"]["t20"] == 2000
    assert facts["integrity_check"]["db_sha256"] == facts["db_sha256"]


def test_the_fallback_copy_is_byte_for_byte_the_backup_api_copy(tmp_path):
    """take_snapshot rewrites the header itself instead of letting SQLite open
    the copy in WAL mode: the bytes must be the same as SQLite's."""
    src = shaped(tmp_path / "live.db", 4096, "NONE")
    dest = tmp_path / "snap.db"
    snapshot.take_snapshot(src, dest)
    assert dest.read_bytes() == api_copy(src, tmp_path / "api.db")


WRITES = """
import sqlite3, sys
writer = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
writer.execute("UPDATE devices SET ip = 'rewritten'")
writer.execute("DELETE FROM services WHERE id % 2 = 0")
writer.execute("INSERT INTO devices(ip) SELECT ip FROM devices")
for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
    try:
        writer.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    except sqlite3.OperationalError:
        pass  # busy: it may not pass the backup's transaction
writer.close()
"""


@pytest.mark.parametrize("writer_in", ["this process", "another process"])
def test_commits_and_checkpoints_during_the_stream_change_nothing_it_reads(tmp_path, monkeypatch,
                                                                           writer_in):
    """While the stream reads the file, another connection commits (the WAL
    restarts, pages are rewritten) and checkpoints: the backup holds the
    database as it was when its transaction began. In another process too,
    where only the real POSIX locks keep its checkpoints out of the file
    (closing any descriptor of the -shm or the database in the backup's
    process would silently drop them)."""
    src = make_db(tmp_path / "live.db", 2000)
    blocks = snapshot._Pages.blocks

    def interleaved(self):
        for i, block in enumerate(blocks(self)):
            yield block
            if i == 0:  # page 1 is out; the rest of the file is still to be read
                if writer_in == "this process":
                    monkeypatch.setattr(sys, "argv", ["", str(src)])
                    exec(WRITES, {})  # the same statements, in this process
                else:
                    subprocess.run([sys.executable, "-c", WRITES, str(src)], check=True,
                                   timeout=60)

    monkeypatch.setattr(snapshot._Pages, "blocks", interleaved)
    out = tmp_path / "out.zst"
    facts = snapshot.stream(str(src), out, "zstd", check="full")
    assert facts is not None and facts["snapshot_method"] == "file"
    assert facts["tables"] == {"devices": 2000, "services": 2000}
    restored = tmp_path / "restored.db"
    restored.write_bytes(content(out))
    conn = sqlite3.connect(restored)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*), count(DISTINCT ip) FROM devices").fetchone() == (2000,
                                                                                          2000)
    assert conn.execute("SELECT count(*) FROM services").fetchone()[0] == 2000
    conn.close()
    assert count(src) == 4000  # the writes did land, after the backup's snapshot


def test_a_reader_the_checkpoint_cannot_pass_means_the_copy(tmp_path):
    """A reader holding an older snapshot keeps the newest commits out of the
    file: the stream declines, and the backup takes the backup API's copy,
    newest commit included."""
    src = make_db(tmp_path / "live.db", 10)
    reader = sqlite3.connect(src, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM devices").fetchall()
    writer = sqlite3.connect(src, isolation_level=None)
    writer.execute("INSERT INTO devices(ip) VALUES ('newest')")
    writer.close()
    assert snapshot.stream(str(src), tmp_path / "out.zst", "zstd") is None
    assert not (tmp_path / "out.zst").exists()
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    result = backup.take_backup(str(src), str(dest), compression="zstd")
    reader.close()
    assert result.manifest["snapshot_method"] == "backup-api"
    assert result.manifest["tables"]["devices"] == 11
    restored = tmp_path / "restored.db"
    restored.write_bytes(content(Path(result.path)))
    assert count(restored) == 11


def test_a_rollback_journal_database_is_copied_not_streamed(tmp_path):
    """Its readers hold writers off: the short copy, not the whole compression."""
    src = make_db(tmp_path / "live.db", 10, "delete")
    assert snapshot.stream(str(src), tmp_path / "out.zst", "zstd") is None
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    result = backup.take_backup(str(src), str(dest), compression="zstd")
    assert result.manifest["snapshot_method"] == "backup-api"


def test_a_streamed_backup_under_a_steady_writer_verifies(tmp_path):
    """Commits go on during the backup (WAL): it completes, and its content,
    manifest and row counts agree (restore's own verification)."""
    src = make_db(tmp_path / "live.db", 5000)
    stop = threading.Event()

    def write() -> None:
        conn = sqlite3.connect(src, timeout=30, isolation_level=None)
        while not stop.is_set():
            conn.execute("INSERT INTO devices(ip) VALUES ('w')")
        conn.close()

    thread = threading.Thread(target=write)
    thread.start()
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    try:
        results = [backup.take_backup(str(src), str(dest), compression="zstd")
                   for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    for result in results:
        report = restore.verify_backup(result.path, tmp_path / "work.db")
        assert report.tables == result.manifest["tables"]
        assert count(tmp_path / "work.db") == result.manifest["tables"]["devices"]
        (tmp_path / "work.db").unlink()


def test_a_streamed_backup_of_a_damaged_database_is_an_integrity_error(tmp_path):
    src = index_out_of_step(make_db(tmp_path / "live.db", 10))
    with pytest.raises(OpsError) as caught:
        snapshot.stream(str(src), tmp_path / "out.zst", "zstd", check="full")
    assert caught.value.code == EX_INTEGRITY
    assert "integrity_check" in caught.value.message


def test_the_pending_byte_page_reads_as_zeros(tmp_path, monkeypatch):
    """SQLite never uses the page holding the lock byte at 1 GiB, and the backup
    API never writes it: the stream gives zeros there whatever the file holds."""
    src = make_db(tmp_path / "live.db", 500)
    pages = sqlite3.connect(src).execute("PRAGMA page_count").fetchone()[0]
    assert pages > 4
    monkeypatch.setattr(snapshot, "PENDING_BYTE", 3 * 4096)
    raw = src.read_bytes()
    with open(src, "rb") as handle:
        streamed = b"".join(snapshot._Pages(handle.fileno(), 4096, pages).blocks())
    assert len(streamed) == pages * 4096
    assert streamed[3 * 4096:4 * 4096] == bytes(4096)
    assert streamed[4096:3 * 4096] == raw[4096:3 * 4096]
    assert streamed[4 * 4096:] == raw[4 * 4096:pages * 4096]


def compressor_inputs(monkeypatch) -> list[str]:
    """What each compressor run of snapshot.stream reads: "file" (the
    database's own descriptor) or "pipe" (pages written by this process)."""
    seen: list[str] = []
    run = snapshot._run_compressor

    def spy(*args, **kwargs):
        seen.append("file" if kwargs.get("stdin") is not None else
                    "pipe" if kwargs.get("feeds") else "none")
        return run(*args, **kwargs)

    monkeypatch.setattr(snapshot, "_run_compressor", spy)
    return seen


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_the_compressor_reads_the_file_itself_when_its_bytes_are_the_copys(tmp_path, monkeypatch,
                                                                            codec):
    """Page 1 as the copy has it goes first as a frame of its own, then the
    compressor reads the rest from the file: no pipe between this process and
    it. Decompressed, the frames are the backup-API copy."""
    src = shaped(tmp_path / "live.db", 4096, "NONE")
    seen = compressor_inputs(monkeypatch)
    out = tmp_path / "out"
    facts = snapshot.stream(str(src), out, codec, check="quick")
    assert seen == ["file"]
    expected = api_copy(src, tmp_path / "api.db")
    assert content(out) == expected
    assert facts["db_sha256"] == hashlib.sha256(expected).hexdigest()
    assert facts["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_a_pending_byte_page_that_is_not_zeros_is_fed_as_zeros(tmp_path, monkeypatch):
    """A file whose pending-byte page holds anything but zeros is not what the
    copy has there: the pages are fed through the pipe, that page as zeros."""
    src = make_db(tmp_path / "live.db", 500)
    monkeypatch.setattr(snapshot, "PENDING_BYTE", 3 * 4096)  # a page that holds data
    raw = src.read_bytes()
    assert raw[3 * 4096:4 * 4096] != bytes(4096)
    seen = compressor_inputs(monkeypatch)
    out = tmp_path / "out.zst"
    snapshot.stream(str(src), out, "zstd", check="quick")
    assert seen == ["pipe"]
    unpacked = content(out)
    assert unpacked[3 * 4096:4 * 4096] == bytes(4096)
    assert unpacked[4 * 4096:] == raw[4 * 4096:]


def test_a_file_longer_than_its_snapshot_is_fed_up_to_the_snapshots_end(tmp_path, monkeypatch):
    """Bytes past the last page (SQLite reads the size from the header) are no
    part of the copy: a compressor reading the file would take them too, so
    the pages go through the pipe, and the content ends where the copy does."""
    src = shaped(tmp_path / "live.db", 4096, "NONE")
    with open(src, "ab") as handle:
        handle.write(b"trailing bytes no page holds" * 100)
    seen = compressor_inputs(monkeypatch)
    out = tmp_path / "out.zst"
    snapshot.stream(str(src), out, "zstd", check="quick")
    assert seen == ["pipe"]
    assert content(out) == api_copy(src, tmp_path / "api.db")


def refused_backup(src: Path, tmp_path: Path) -> str:
    """A zstd backup of ``src`` that must fail with exit 1 and publish nothing
    into its fresh directory; its message."""
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    with pytest.raises(OpsError) as caught:
        backup.take_backup(str(src), str(dest), compression="zstd")
    assert caught.value.code == EX_FAIL
    assert list(dest.iterdir()) == []
    return caught.value.message


def test_a_compressor_that_reads_past_the_snapshot_publishes_nothing(tmp_path, monkeypatch):
    """Should the file ever hold more than the snapshot while the compressor
    reads it, the backup stops (exit 1) rather than publish content that is
    not the one hashed."""
    src = make_db(tmp_path / "live.db", 2000)
    with open(src, "ab") as handle:
        handle.write(bytes(4096))
    monkeypatch.setattr(snapshot._Pages, "file_is_copy", lambda self: True)
    assert f"{src} changed size while it was read" in refused_backup(src, tmp_path)


@pytest.mark.parametrize("compressor_reads", ["file", "pipe"])
def test_a_read_error_mid_stream_publishes_nothing(tmp_path, monkeypatch, compressor_reads):
    """The file fails to read half-way: exit 1 naming it, and no backup (a
    short stream must never pass for a whole one), whether the compressor
    reads the file itself (only the hash fails) or this process feeds it."""
    src = make_db(tmp_path / "live.db", 2000)
    if compressor_reads == "pipe":
        monkeypatch.setattr(snapshot._Pages, "file_is_copy", lambda self: False)
    blocks = snapshot._Pages.blocks

    def failing(self):
        for i, block in enumerate(blocks(self)):
            if i == 1:  # after page 1
                raise OSError(5, "Input/output error")
            yield block

    monkeypatch.setattr(snapshot._Pages, "blocks", failing)
    seen = compressor_inputs(monkeypatch)
    assert f"cannot read {src}: Input/output error" in refused_backup(src, tmp_path)
    assert seen == [compressor_reads]


@pytest.mark.parametrize("method", ["file", "backup-api"])
def test_the_compressor_runs_nicer_than_the_checks_beside_it(tmp_path, monkeypatch, method):
    """On a machine with fewer cores than busy threads, the single-threaded
    check must not wait behind zstd's workers: zstd runs at a higher
    niceness than this process, streamed or through the temp copy, and a
    failure is still reported under zstd's name."""
    real = shutil.which("zstd")
    tools = tmp_path / "bin"
    tools.mkdir()
    seen = tmp_path / "niceness"
    wrapper = tools / "zstd"
    wrapper.write_text(f'#!/bin/sh\nnice >> {shlex.quote(str(seen))}\n'
                       f'exec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    src = make_db(tmp_path / "live.db", 500)
    if method == "backup-api":
        monkeypatch.setattr(snapshot, "_pin", lambda *args: False)
    (tmp_path / "backups").mkdir(mode=0o700)
    result = backup.take_backup(str(src), str(tmp_path / "backups"), compression="zstd")
    assert result.manifest["snapshot_method"] == method
    runs = [int(line) for line in seen.read_text().split()]
    nicer = min(19, os.nice(0) + snapshot.COMPRESSOR_NICENESS)  # the kernel stops at 19
    assert runs and all(level == nicer for level in runs)

    wrapper.write_text("#!/bin/sh\necho 'out of frames' >&2\nexit 3\n")
    with pytest.raises(OpsError) as caught:
        backup.take_backup(str(src), str(tmp_path / "backups"), compression="zstd")
    assert caught.value.message.startswith("zstd failed: out of frames")
