"""The backend called directly: one transaction per migration, and the records
table made or upgraded only inside a transaction that commits."""

from __future__ import annotations

import sqlite3

import pytest

from sqlite_ops.migration_backend import (
    LAYOUT_CURRENT,
    LAYOUT_LEGACY,
    LAYOUT_NONE,
    Transaction,
    apply_one,
    prepare_records,
    read_applied,
)
from sqlite_ops.migration_files import MigrationFailed, discover


def connect() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)


def test_transaction_commits_or_rolls_back_whole():
    conn = connect()
    with Transaction(conn):
        conn.execute("CREATE TABLE a (x)")
    with pytest.raises(ZeroDivisionError), Transaction(conn):
        conn.execute("INSERT INTO a VALUES (1)")
        raise ZeroDivisionError
    assert conn.execute("SELECT count(*) FROM a").fetchone() == (0,)
    with Transaction(conn) as transaction:
        conn.execute("INSERT INTO a VALUES (2)")
        transaction.rollback()
    assert conn.execute("SELECT count(*) FROM a").fetchone() == (0,) and not conn.in_transaction


def test_records_are_created_with_the_first_migration_or_not_at_all(make_migrations):
    migrations = discover(str(make_migrations({
        "001_ok.sql": "CREATE TABLE a (x);", "002_bad.sql": "INSERT INTO nope VALUES (1);"})))
    conn = connect()
    with pytest.raises(MigrationFailed):
        apply_one(conn, migrations[1], "up", lambda c: prepare_records(c, migrations))
    assert read_applied(conn) == (LAYOUT_NONE, {})
    assert apply_one(conn, migrations[0], "up", lambda c: prepare_records(c, migrations)) >= 0
    layout, applied = read_applied(conn)
    assert layout == LAYOUT_CURRENT and list(applied) == [1]


def test_prepare_records_upgrades_the_older_layout_and_records_an_adoption(make_migrations):
    migrations = discover(str(make_migrations({"001_a.sql": "CREATE TABLE a (x);",
                                               "002_b.sql": "CREATE TABLE b (x);"})))
    conn = connect()
    conn.executescript("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, version TEXT, "
                       "applied_at TEXT, description TEXT);"
                       "INSERT INTO schema_migrations VALUES (1, '001_a', '2020-01-01', 'a');")
    assert read_applied(conn)[0] == LAYOUT_LEGACY
    with Transaction(conn):
        assert prepare_records(conn, migrations) == LAYOUT_LEGACY
    layout, applied = read_applied(conn)
    assert layout == LAYOUT_CURRENT and applied[1].applied_at == "2020-01-01"
    assert applied[1].checksum == migrations[0].checksum
    fresh = connect()
    with Transaction(fresh):
        assert prepare_records(fresh, migrations, adopt=migrations[:1]) is None
    assert list(read_applied(fresh)[1]) == [1]
    with Transaction(fresh):  # again (a run that lost a race): nothing changes
        assert prepare_records(fresh, migrations, adopt=migrations) is None
    assert list(read_applied(fresh)[1]) == [1]
