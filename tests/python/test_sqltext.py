"""Tests for sqlite_ops.sqltext: the one SQL lexer, and the splitter over it."""

from __future__ import annotations

import sqlite3

import pytest

from sqlite_ops.sqltext import has_code, split_statements, sql_pieces, strip_comments


def test_pieces_join_back_to_the_text_and_end_code_at_each_semicolon():
    sql = "SELECT 1; SELECT 2 -- two;\n/* three; */SELECT 'x';"
    pieces = list(sql_pieces(sql))
    assert "".join(text for _, text in pieces) == sql
    assert pieces == [
        ("code", "SELECT 1;"), ("code", " SELECT 2 "), ("comment", "-- two;"),
        ("code", "\n"), ("comment", "/* three; */"), ("code", "SELECT "),
        ("string", "'x'"), ("code", ";")]


@pytest.mark.parametrize("quoted, kind", [
    ("'a;b''c -- d /* e'", "string"),
    ('"a;b""c -- d \'e"', "name"),
    ("`a;b``c -- d 'e`", "name"),
    ("[a;b -- d 'e\"]", "name"),
])
def test_a_quoted_part_is_one_piece_whatever_it_holds(quoted, kind):
    assert list(sql_pieces(f"SELECT {quoted};")) == [
        ("code", "SELECT "), (kind, quoted), ("code", ";")]


def test_unterminated_quotes_and_comments_run_to_the_end():
    assert list(sql_pieces("SELECT 'a; b")) == [("code", "SELECT "), ("string", "'a; b")]
    assert list(sql_pieces("x /* y; z")) == [("code", "x "), ("comment", "/* y; z")]
    assert list(sql_pieces("x -- y; z")) == [("code", "x "), ("comment", "-- y; z")]


def test_strip_comments_leaves_a_space_and_the_quoted_parts():
    assert strip_comments("SELECT '--not', [a/*b] -- gone\n/* gone */ FROM t") == \
        "SELECT '--not', [a/*b]  \n  FROM t"


def test_has_code():
    assert not has_code("  ;\n-- x;\n/* y */ ;")
    assert has_code("-- x\n'only a string'")
    assert has_code("/* x */ SELECT 1")


def test_split_ends_statements_only_where_sqlite_does():
    sql = """-- leading comment; not a statement
    CREATE TABLE "a;b" ([c--d] TEXT, `e'f` TEXT); /* a; comment */
    CREATE TRIGGER tr AFTER INSERT ON "a;b" BEGIN
        UPDATE "a;b" SET [c--d] = 'one;two' WHERE rowid = NEW.rowid;
        SELECT CASE WHEN 1 THEN 'end;' END;
    END;
    INSERT INTO "a;b" VALUES ('x;', 'y')"""
    statements = split_statements(sql)
    assert [s.split(None, 2)[:2] for s in statements] == [
        ["CREATE", "TABLE"], ["CREATE", "TRIGGER"], ["INSERT", "INTO"]]
    assert statements[1].endswith("END;")
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    assert conn.execute('SELECT [c--d], `e\'f` FROM "a;b"').fetchall() == [("one;two", "y")]


def test_split_of_nothing_but_comments_and_semicolons_is_empty():
    assert split_statements("-- nothing\n/* here; */\n;\n ; ") == []
