"""sqlite_ops.fkcheck: the anti-join check agrees with PRAGMA foreign_key_check."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ops import fkcheck
from sqlite_ops.common import EX_INTEGRITY, EX_OK, EX_USAGE, REPO_ROOT, OpsError

# Values chosen where affinity and collation decide: 1 / 1.0 / '1' / '01' / x'31',
# 'a' / 'A' / 'a ' (NOCASE, RTRIM), NULL.
VALUES = st.sampled_from([None, 1, 2, 3, 1.0, 1.5, "1", "01", " 1", "1.0", "2", "a", "A",
                          "a ", "b", b"1", b"a", -0.0, 0])
TYPES = st.sampled_from(["", "INTEGER", "TEXT", "REAL", "NUMERIC", "BLOB"])
COLLATIONS = st.sampled_from(["", " COLLATE NOCASE", " COLLATE RTRIM", " COLLATE BINARY"])


@st.composite
def schemas(draw):
    """A parent of some kind, and a child with one foreign key to it, and their rows."""
    kind = draw(st.sampled_from(["rowid", "rowid-implicit", "unique", "unique2", "pk-text",
                                 "without-rowid", "no-unique", "missing"]))
    ptype, ctype = draw(TYPES), draw(TYPES)
    pcoll, ccoll = draw(COLLATIONS), draw(COLLATIONS)
    ncols = 2 if kind in ("unique2", "without-rowid") else 1
    if kind == "rowid":
        parent = "CREATE TABLE p(id INTEGER PRIMARY KEY, v)"
        ref, pcols = "p(id)", ["id"]
    elif kind == "rowid-implicit":
        parent = "CREATE TABLE p(id INTEGER PRIMARY KEY, v)"
        ref, pcols = "p", ["id"]
    elif kind == "unique":
        parent = f"CREATE TABLE p(a {ptype}{pcoll} UNIQUE, v)"
        ref, pcols = "p(a)", ["a"]
    elif kind == "unique2":
        parent = f"CREATE TABLE p(a {ptype}{pcoll}, b TEXT, UNIQUE(a, b))"
        ref, pcols = "p(a, b)", ["a", "b"]
    elif kind == "pk-text":
        parent = f"CREATE TABLE p(a {ptype}{pcoll} PRIMARY KEY, v)"
        ref, pcols = "p", ["a"]
    elif kind == "without-rowid":
        parent = f"CREATE TABLE p(a {ptype}{pcoll}, b, PRIMARY KEY(b, a)) WITHOUT ROWID"
        ref, pcols = "p(b, a)", ["b", "a"]
    elif kind == "no-unique":
        parent = f"CREATE TABLE p(a {ptype}{pcoll}, v)"
        ref, pcols = "p(a)", ["a"]
    else:
        parent = None
        ref, pcols = "p(a)", ["a"]
    ccols = ", ".join(f"x{i} {ctype}{ccoll}" for i in range(ncols))
    cnames = ", ".join(f"x{i}" for i in range(ncols))
    child = f"CREATE TABLE c(id INTEGER PRIMARY KEY, {ccols}, FOREIGN KEY({cnames}) REFERENCES {ref})"
    if draw(st.booleans()):  # the child's index on its key: the anti-join's usual path
        child += f"; CREATE INDEX c_key ON c({cnames})"
    prow = st.tuples(*[st.integers(1, 5) if kind.startswith("rowid") and i == 0 else VALUES
                       for i in range(len(pcols))])
    parents = draw(st.lists(prow, max_size=6))
    children = draw(st.lists(st.tuples(*[VALUES] * ncols), max_size=10))
    return parent, pcols, child, ncols, parents, children


def build(parent, pcols, child, ncols, parents, children) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    if parent:
        conn.execute(parent)
        marks = ", ".join("?" * len(pcols))
        for row in parents:
            try:  # an INTEGER PRIMARY KEY refuses 1.5: that row is simply not there
                conn.execute(f"INSERT OR IGNORE INTO p({', '.join(pcols)}) VALUES ({marks})", row)
            except sqlite3.IntegrityError:
                pass
    conn.executescript(child)
    marks = ", ".join("?" * ncols)
    conn.executemany(f"INSERT INTO c({', '.join(f'x{i}' for i in range(ncols))}) "
                     f"VALUES ({marks})", children)
    return conn


def pragma(conn: sqlite3.Connection) -> Counter | None:
    try:
        return Counter(row[0] for row in conn.execute("PRAGMA foreign_key_check"))
    except sqlite3.OperationalError as exc:
        assert "foreign key mismatch" in str(exc)
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas())
def test_agrees_with_the_pragma(schema):
    conn = build(*schema)
    expected = pragma(conn)
    report = fkcheck.check(conn)
    if expected is None:
        assert report.count is None and "foreign key mismatch" in report.error
        return
    assert report.count == sum(expected.values())
    assert report.by_table == dict(expected)
    if expected:
        assert report.first == tuple(conn.execute("PRAGMA foreign_key_check").fetchone())


def test_several_tables_and_keys_and_awkward_names():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript('''
        CREATE TABLE "Order ""Details"""(id INTEGER PRIMARY KEY, code TEXT UNIQUE);
        CREATE TABLE "line items"(id INTEGER PRIMARY KEY,
            "order id" REFERENCES "Order ""Details"""(id),
            code REFERENCES "Order ""Details"""(code),
            gone REFERENCES missing_table(x));
        INSERT INTO "Order ""Details""" VALUES (1, 'A'), (2, 'B');
        INSERT INTO "line items" VALUES (1, 1, 'A', NULL), (2, 9, 'B', NULL),
                                        (3, 2, "Z", 5), (4, NULL, NULL, NULL);
    ''')
    report = fkcheck.check(conn)
    assert report.count == 3 == len(conn.execute("PRAGMA foreign_key_check").fetchall())
    assert report.by_table == {"line items": 3}


def test_a_clean_database_reports_zero():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p);"
                       "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1), (NULL);")
    report = fkcheck.check(conn)
    assert (report.count, report.by_table, report.first) == (0, {}, None)


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("network_changes", {"network_changes": None}),
    (" network_changes:12 , line items ", {"network_changes": 12, "line items": None}),
])
def test_parse_accept(text, expected):
    assert fkcheck.parse_accept(text) == expected


@pytest.mark.parametrize("text", ["t:x", ":5", "t:-1"])
def test_parse_accept_refuses_malformed_entries(text):
    with pytest.raises(OpsError) as err:
        fkcheck.parse_accept(text)
    assert err.value.code == EX_USAGE and "FK_ACCEPT" in err.value.message


def test_unaccepted_covers_other_tables_and_rows_over_the_ceiling():
    report = fkcheck.ForeignKeyReport(count=15, by_table={"network_changes": 10, "other": 5})
    assert fkcheck.unaccepted(report, {}) == {"network_changes": 10, "other": 5}
    assert fkcheck.unaccepted(report, {"network_changes": None}) == {"other": 5}
    assert fkcheck.unaccepted(report, {"network_changes": 10, "other": None}) == {}
    assert fkcheck.unaccepted(report, {"network_changes": 9, "other": None}) == {
        "network_changes": 10}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO_ROOT / "lib"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "sqlite_ops.fkcheck", *args], env=env,
                          capture_output=True, text=True)


def test_cli_lists_the_rows_of_unaccepted_violations_only(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("""
        CREATE TABLE p(id INTEGER PRIMARY KEY);
        CREATE TABLE known(id INTEGER PRIMARY KEY, p REFERENCES p);
        CREATE TABLE fresh(id INTEGER PRIMARY KEY, p REFERENCES p);
        INSERT INTO known(p) VALUES (7), (8);
    """)
    proc = run_cli("--accept", "known", str(db))
    assert proc.returncode == EX_OK, proc.stderr
    assert proc.stdout == 'foreign_key_check: accepted orphaned rows (FK_ACCEPT): 2 in "known"\n'
    proc = run_cli("--accept", "known:1", str(db))
    assert proc.returncode == EX_INTEGRITY
    assert proc.stdout.splitlines() == ["known|1|p|0", "known|2|p|0"]
    conn.execute("INSERT INTO fresh(p) VALUES (9)")
    proc = run_cli("--accept", "known", str(db))
    assert proc.returncode == EX_INTEGRITY and proc.stdout.splitlines() == ["fresh|1|p|0"]
