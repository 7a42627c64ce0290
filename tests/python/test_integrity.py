"""sqlite_ops.integrity: when a backup's integrity_check record stands."""

from __future__ import annotations

import sqlite3

import pytest
from opsenv import blob_db, index_out_of_step, kill_writer_mid_transaction, slow_sqlite

from sqlite_ops import integrity
from sqlite_ops.common import EX_FAIL, OpsError, check_rows, readonly_uri

SHA = "a" * 64


def manifest(**record) -> dict:
    entry = {"result": "ok", "sqlite_version": sqlite3.sqlite_version, "db_sha256": SHA}
    entry.update(record)
    return {"db_sha256": SHA, "integrity_check": entry}


def test_a_record_of_the_same_bytes_stands():
    ok, why = integrity.trusted(manifest(), SHA)
    assert ok and why.startswith(integrity.RECORDED)


def test_a_record_made_by_a_newer_sqlite_stands():
    assert integrity.trusted(manifest(sqlite_version="9.0.0"), SHA)[0]


@pytest.mark.parametrize("given, content, why", [
    (None, SHA, "no manifest"),
    ({"db_sha256": SHA}, SHA, "no integrity_check record"),
    (manifest(result="failed"), SHA, "does not say ok"),
    (manifest(), "b" * 64, "of other content"),
    (manifest(db_sha256="b" * 64), SHA, "of other content"),
    (manifest(sqlite_version="3.31.1"), SHA, "older than this one"),
    (manifest(sqlite_version="soon"), SHA, "older than this one"),
])
def test_the_check_runs_now_when_the_record_cannot_stand(given, content, why):
    ok, reason = integrity.trusted(given, content)
    assert not ok and why in reason


def test_run_check_and_record(tmp_path):
    db = tmp_path / "a.db"
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.close()
    assert integrity.run_check(str(db)) == ["ok"]
    assert integrity.Background(str(db)).result() == ["ok"]
    assert integrity.record(SHA) == {"result": "ok", "db_sha256": SHA,
                                     "sqlite_version": sqlite3.sqlite_version}
    broken = tmp_path / "b.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    assert integrity.run_check(str(broken)) != ["ok"]


def test_summary_keeps_the_problems_on_one_line():
    rows = ["*** in database main ***\nPage 5: btreeInitPage() returns error code 11",
            "row 3 missing from index t_v"]
    assert integrity.summary(rows) == ("Page 5: btreeInitPage() returns error code 11; "
                                       "row 3 missing from index t_v")


def test_the_catalog_schema_knows_the_record(tmp_path):
    """A manifest whose integrity_check is not a record is unreadable (it could
    not be trusted, and must not be mistaken for one)."""
    import json

    from sqlite_ops import catalog

    path = tmp_path / "a.manifest.json"
    good = manifest()
    path.write_text(json.dumps(good))
    assert catalog.read_manifest(path) == (good, None)
    path.write_text(json.dumps({**good, "integrity_check": "ok"}))
    data, why = catalog.read_manifest(path)
    assert data is None and "integrity_check" in why


def test_the_drills_record_says_who_ran_the_check():
    ok, why = integrity.trusted(manifest(checked_by="drill"), SHA)
    assert ok and why.startswith("recorded at drill, same bytes")
    entry = integrity.record(SHA, checked_by="drill")
    assert entry["checked_by"] == "drill" and entry["db_sha256"] == SHA and "checked_at" in entry


def test_a_deferred_check_without_its_record_runs_now_and_says_why():
    ok, why = integrity.trusted({"db_sha256": SHA, "integrity_check_deferred": True}, SHA)
    assert not ok and "left the full check to the drill" in why


def test_a_file_sqlite_calls_damaged_is_a_finding(tmp_path):
    db = blob_db(tmp_path / "a.db")
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # page 1's b-tree: the schema is unreadable
    db.write_bytes(bytes(data))
    rows = integrity.run_check(readonly_uri(db), uri=True)
    assert len(rows) == 1 and "malformed" in rows[0]


@pytest.mark.parametrize("pragma", ["integrity_check", "quick_check"])
def test_a_check_that_cannot_run_is_no_finding(tmp_path, pragma):
    """A hot journal a read-only open may not roll back ("attempt to write a
    readonly database") says nothing about the bytes: exit 1 naming the file,
    never a row a caller would report as damage (exit 4, or "do not use this
    backup")."""
    db = blob_db(tmp_path / "a.db")
    kill_writer_mid_transaction(db)
    with pytest.raises(OpsError) as caught:
        integrity.run_check(readonly_uri(db), uri=True, pragma=pragma, name="the copy")
    assert caught.value.code == EX_FAIL
    assert caught.value.message.startswith(f"PRAGMA {pragma} could not run on the copy: "
                                           "attempt to write a readonly database")
    checker = integrity.Background(readonly_uri(db), uri=True, pragma=pragma)
    with pytest.raises(OpsError):
        checker.result()


def test_a_check_that_dies_of_anything_else_raises_it_never_an_empty_verdict(tmp_path,
                                                                           monkeypatch):
    """No rows is no verdict: what stopped the check is raised (a caller would
    otherwise report "failed PRAGMA integrity_check (no result)" of a sound
    file)."""
    db = blob_db(tmp_path / "a.db", 10)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(sqlite3, "connect", out_of_memory)
    with pytest.raises(MemoryError):
        integrity.Background(readonly_uri(db), uri=True).result()


def test_a_cancelled_check_stops_reading(tmp_path, monkeypatch):
    """cancel() interrupts the check and waits for its thread: nothing goes on
    reading a file its caller is about to remove."""
    db = blob_db(tmp_path / "a.db", 5000)
    slow_sqlite(monkeypatch)
    checker = integrity.Background(readonly_uri(db), uri=True)
    checker.cancel()
    assert checker.done()
    assert checker.rows is None  # stopped before its verdict
    with pytest.raises(OpsError):
        checker.result()


class _InterruptedAfterFirstRow:
    """A connection whose check is interrupted once it has given one row, as
    an error after the first finding would stop it (an I/O error on the
    damaged page, a signal)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str):
        for row in self.conn.execute(sql):
            yield row
            self.conn.interrupt()

    def __getattr__(self, name: str):
        return getattr(self.conn, name)


def test_damage_the_check_found_stands_when_an_error_then_stops_it(tmp_path):
    """Rows of damage are the verdict, whatever stops the check after them:
    dropping them for the error would make a damaged file "could not run"
    (exit 1, retry) instead of damage (exit 4, do not use it)."""
    db = index_out_of_step(tmp_path / "a.db")
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert len(check_rows(conn, "integrity_check")) > 1  # more was still to come
        rows = check_rows(_InterruptedAfterFirstRow(conn), "integrity_check")
    finally:
        conn.close()
    assert rows == ["row 3 missing from index t_v", "integrity_check stopped: interrupted"]
    assert "missing from index" in integrity.summary(rows)


def test_the_backups_check_keeps_damage_found_before_an_error_stopped_it(tmp_path,
                                                                        monkeypatch):
    """The check beside a backup's compression (and the drill's, verify's):
    the damage it found is its verdict, not "could not run"."""
    db = index_out_of_step(tmp_path / "a.db")
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *args, **kwargs: _InterruptedAfterFirstRow(real(*args, **kwargs)))
    rows = integrity.Background(str(db)).result()
    assert rows[0] == "row 3 missing from index t_v" and "stopped: interrupted" in rows[-1]


def test_a_check_stopped_before_any_finding_is_raised(tmp_path):
    """The same error before any row found nothing: it is raised, for the
    caller to say the check could not run."""
    db = blob_db(tmp_path / "a.db", 10)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.set_progress_handler(lambda: 1, 1)  # interrupted at its first step
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            check_rows(conn)
    finally:
        conn.close()
