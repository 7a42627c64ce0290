"""Schema comparison by structure: what adoption, 'schema --check' and
db_metrics's drift see as different, and what they do not."""

from __future__ import annotations

import sqlite3

import pytest

from sqlite_ops.migration_schema import (
    drift_from_file,
    foreign_history,
    schema_drift,
    strip_comments,
    user_tables,
)


def db(sql: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(sql)
    return conn


def test_column_order_whitespace_quotes_and_comments_are_not_drift():
    live = db("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL); "
              "ALTER TABLE t ADD COLUMN c TEXT DEFAULT 'x';")
    reference = db('CREATE TABLE "t" (\n  a INTEGER PRIMARY KEY, -- the key\n'
                   "  c TEXT DEFAULT 'x', /* moved */ b TEXT NOT NULL\n);")
    assert schema_drift(live, reference) == []


@pytest.mark.parametrize("live, reference, expected", [
    ("CREATE TABLE t (a INTEGER CHECK (a > 0))", "CREATE TABLE t (a INTEGER CHECK (a > 1))",
     ["table t: check constraints differ"]),
    ("CREATE TABLE t (id INTEGER PRIMARY KEY)",
     "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)",
     ["table t: options differ"]),
    ("CREATE TABLE t (a TEXT, b TEXT)", "CREATE TABLE t (a TEXT, b TEXT, UNIQUE (a, b))",
     ["table t: unique/primary key constraints differ"]),
    ("CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE t (p INTEGER REFERENCES p (id))",
     "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE t (p INTEGER REFERENCES p (id) "
     "ON DELETE CASCADE)", ["table t: foreign keys differ"]),
    ("CREATE TABLE t (a TEXT DEFAULT 'x')", "CREATE TABLE t (a TEXT DEFAULT 'y')",
     ["table t: column a differs (type/not null/default/key): TEXT DEFAULT 'x' instead of "
      "TEXT DEFAULT 'y'"]),
    ("CREATE TABLE t (a); CREATE INDEX i ON t (a)",
     "CREATE TABLE t (a); CREATE INDEX i ON t (a DESC)",
     ["index i: definition differs"]),
])
def test_real_differences_are_named(live, reference, expected):
    assert schema_drift(db(live), db(reference)) == expected


def test_another_tools_history_is_not_part_of_the_schema():
    live = db("CREATE TABLE t (a); CREATE TABLE schema_version (version INTEGER);"
              "INSERT INTO schema_version VALUES (3);"
              "CREATE TABLE migrations (version INTEGER PRIMARY KEY);")
    assert [(h.table, h.rows, h.highest) for h in foreign_history(live)] == [
        ("schema_version", 1, 3), ("migrations", 0, None)]
    django = db("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, "
                "applied TEXT)")
    assert [h.table for h in foreign_history(django)] == ["django_migrations"]
    assert user_tables(live) == ["t"]
    assert schema_drift(live, db("CREATE TABLE t (a)")) == []
    # An application table that happens to be called "migrations" (bird data,
    # say) without a version-like column is the application's data: compared.
    birds = db("CREATE TABLE migrations (id INTEGER PRIMARY KEY, name TEXT, km REAL)")
    assert foreign_history(birds) == []
    assert schema_drift(birds, db("")) == ["table migrations: not in schema.sql"]


def test_drift_from_file_reads_a_schema_sql_text():
    text = "-- header\nCREATE TABLE t (a);\n\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN\n" \
           "  SELECT 1;\nEND;\n"
    assert drift_from_file(db("CREATE TABLE t (a)"), text) == [
        "trigger tr: missing from the database"]


def test_strip_comments_keeps_string_literals():
    assert strip_comments("SELECT '--not', \"a--b\" -- gone\n/* gone */ FROM t") == \
        "SELECT '--not', \"a--b\"  \n  FROM t"
