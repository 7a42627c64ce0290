"""sqlite_ops.fkcheck: the anti-join check agrees with PRAGMA foreign_key_check."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opsenv import blob_db, kill_writer_mid_transaction, make_db

from sqlite_ops import fkcheck
from sqlite_ops.common import EX_BUSY, EX_FAIL, EX_INTEGRITY, EX_OK, EX_USAGE, REPO_ROOT, OpsError

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
    child = (f"CREATE TABLE c(id INTEGER PRIMARY KEY, {ccols}, "
             f"FOREIGN KEY({cnames}) REFERENCES {ref})")
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


# ---------------------------------------------------------------------------
# nMapping+'s orphans by design, through the scripts (FK_ACCEPT)
# ---------------------------------------------------------------------------

CLIENT = REPO_ROOT.parent / "shared" / "clients" / "nmapping-plus"

# The tables of nMapping+'s installer schema that take part (the same shape,
# for machines without the client files).
INLINE_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE scans (id INTEGER PRIMARY KEY AUTOINCREMENT, scan_type TEXT NOT NULL,
    scan_date TEXT NOT NULL, devices_found INTEGER DEFAULT 0, new_devices INTEGER DEFAULT 0,
    scan_file TEXT, scan_duration INTEGER, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(scan_type, scan_date));
CREATE TABLE network_changes (id INTEGER PRIMARY KEY AUTOINCREMENT, device_ip TEXT NOT NULL,
    change_type TEXT NOT NULL, change_description TEXT, old_value TEXT, new_value TEXT,
    scan_id INTEGER, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (scan_id) REFERENCES scans(id));
"""
INLINE_REPLACE = """INSERT OR REPLACE INTO scans
    (scan_type, scan_date, devices_found, new_devices, scan_file) VALUES (?, ?, ?, ?, ?)"""


def client_sql(kind: str) -> tuple[str, str]:
    """(schema, the app's INSERT OR REPLACE INTO scans) of the installer, or inline."""
    if kind == "inline":
        return INLINE_SCHEMA, INLINE_REPLACE
    if not CLIENT.is_dir():
        pytest.skip(f"nMapping+ client SQL not found at {CLIENT}")
    statements = (CLIENT / "app_statements.sql").read_text().split(";")
    replace = next(s for s in statements if "INSERT OR REPLACE INTO scans" in s)
    return (CLIENT / "installer_schema.sql").read_text(), replace.strip()


def scan_import(conn: sqlite3.Connection, replace: str, changes: int) -> None:
    """What the dashboard does on a scan import: record the scan (re-importing the
    same scan file replaces its row, giving it a new id) and its network changes."""
    conn.execute(replace, ("nmap", "2026-01-01", 3, 1, "scan.xml"))
    scan_id = conn.execute("SELECT id FROM scans WHERE scan_type = 'nmap'").fetchone()[0]
    conn.executemany("INSERT INTO network_changes(device_ip, change_type, scan_id) "
                     "VALUES (?, 'new', ?)", [(f"10.0.0.{i}", scan_id) for i in range(changes)])


@pytest.mark.parametrize("kind", ["installer", "inline"])
def test_accepted_orphans_let_maintenance_drills_and_restores_run(tmp_path, kind):
    from opsenv import ops_env, run  # the whole-toolkit helpers (tests/python/opsenv.py)

    schema, replace = client_sql(kind)
    db = tmp_path / "dashboard.db"
    conn = sqlite3.connect(db, isolation_level=None)  # foreign_keys off, as the app runs
    conn.executescript(schema)
    conn.execute("PRAGMA foreign_keys = OFF")
    scan_import(conn, replace, 4)
    scan_import(conn, replace, 2)  # the same scan again: its 4 earlier changes are orphaned
    conn.close()
    assert len(sqlite3.connect(db).execute("PRAGMA foreign_key_check").fetchall()) == 4
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"))

    # Without the setting, the check stops maintenance before the checkpoint.
    proc = run("maintain_database.sh", "all", env=env)
    assert proc.returncode == EX_INTEGRITY
    assert "network_changes|1|scans|0" in proc.stdout
    assert "checkpoint: not run" in proc.stdout

    accept = dict(env, FK_ACCEPT="network_changes")
    proc = run("maintain_database.sh", "all", env=accept)
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    assert 'accepted orphaned rows (FK_ACCEPT): 4 in "network_changes"' in proc.stdout
    assert "not run" not in proc.stdout and "analyze: ok" in proc.stdout

    proc = run("backup_database.sh", env=accept)
    assert proc.returncode == EX_OK and "warning" not in proc.stderr, proc.stderr
    proc = run("restore_database.sh", "--drill", env=accept)
    assert proc.returncode == EX_OK, proc.stderr
    proc = run("restore_database.sh", "--yes", "latest", env=accept)
    assert proc.returncode == EX_OK, proc.stderr
    undo = next(line for line in proc.stdout.splitlines() if "undo with:" in line)
    assert "--force" not in undo  # the safety backup's orphans are accepted ones too

    # A new violation still fails: more orphans than accepted, or another table's.
    for setting in ("network_changes:3", "scans"):
        strict = dict(env, FK_ACCEPT=setting)
        assert run("maintain_database.sh", "check", env=strict).returncode == EX_INTEGRITY
        proc = run("restore_database.sh", "--drill", env=strict)
        assert proc.returncode == 3 and "FK_ACCEPT" in proc.stderr, proc.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(schemas(), min_size=2, max_size=3))
def test_agrees_with_the_pragma_across_several_tables(parts):
    """Several parent/child pairs in one database: the totals per child table
    agree, and one parent key without a unique index fails the whole check."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for n, (parent, pcols, child, ncols, parents, children) in enumerate(parts):
        p, c = f"p{n}", f"c{n}"
        if parent:
            conn.execute(parent.replace("TABLE p(", f"TABLE {p}(", 1))
            marks = ", ".join("?" * len(pcols))
            for row in parents:
                try:
                    conn.execute(f"INSERT OR IGNORE INTO {p}({', '.join(pcols)}) "
                                 f"VALUES ({marks})", row)
                except sqlite3.IntegrityError:
                    pass
        ddl = child.replace("TABLE c(", f"TABLE {c}(", 1).replace("REFERENCES p", f"REFERENCES {p}")
        conn.executescript(ddl.replace("INDEX c_key ON c(", f"INDEX {c}_key ON {c}("))
        cols = ", ".join(f"x{i}" for i in range(ncols))
        conn.executemany(f"INSERT INTO {c}({cols}) VALUES ({', '.join('?' * ncols)})", children)
    expected = pragma(conn)
    report = fkcheck.check(conn)
    if expected is None:
        assert report.count is None
    else:
        assert (report.count, report.by_table) == (sum(expected.values()), dict(expected))


def test_cli_tells_a_damaged_file_from_a_check_that_could_not_run(tmp_path):
    """SQLite stopping the check is exit 4 only when it calls the file damaged;
    a hot journal a read-only open may not roll back says nothing about the
    database's health: exit 1, SQLite's words, no rows."""
    damaged = tmp_path / "damaged.db"
    make_db(damaged, 2000, "delete")
    data = bytearray(damaged.read_bytes())
    data[4096:8 * 4096] = b"\xff" * (7 * 4096)  # pages 2-8: the tables' root pages
    damaged.write_bytes(bytes(data))
    proc = run_cli(str(damaged))
    assert proc.returncode == EX_INTEGRITY, proc.stdout
    assert "malformed" in proc.stdout

    hot = blob_db(tmp_path / "hot.db")
    kill_writer_mid_transaction(hot)
    proc = run_cli(str(hot))
    assert proc.returncode == EX_FAIL
    assert proc.stdout == "Error: attempt to write a readonly database\n"


def test_violations_found_stand_when_an_error_then_stops_their_listing(tmp_path, monkeypatch,
                                                                       capsys):
    """Counted, then a lock stops the PRAGMA that lists their rows: still a
    problem found (4), never "locked, retry" (75)."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("CREATE TABLE p(id INTEGER PRIMARY KEY);"
                       "CREATE TABLE c(id INTEGER PRIMARY KEY, p REFERENCES p);"
                       "INSERT INTO c(p) VALUES (7);")
    conn.close()
    counted = fkcheck.unaccepted

    def then_locked(report, accepted):
        monkeypatch.setattr(fkcheck, "quote_ident", locked)
        return counted(report, accepted)

    def locked(name):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(fkcheck, "unaccepted", then_locked)
    assert fkcheck.main([str(db)]) == EX_INTEGRITY
    assert capsys.readouterr().out == "Error: database is locked\n"


def test_cli_under_a_lock_held_past_the_busy_timeout_says_busy(tmp_path):
    """A writer holding the rollback-journal database past the busy timeout it
    is given: exit 75 (retry later), neither a problem nor a failure."""
    db = make_db(tmp_path / "app.db", 50, "delete")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        proc = run_cli("--busy-timeout-ms", "100", str(db))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert proc.returncode == EX_BUSY, proc.stdout
    assert proc.stdout == "Error: database is locked\n"
