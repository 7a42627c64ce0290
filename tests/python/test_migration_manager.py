"""The migration library, called directly: parsing, planning, applying, recording."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ops import migration_manager as mm
from sqlite_ops.common import (
    EX_FAIL,
    EX_INTEGRITY,
    EX_USAGE,
    EX_VERIFY,
    LOCK_HELD_ENV,
    REPO_ROOT,
    SQLITE_HEADER,
    OpsError,
)
from sqlite_ops.migration_manager import Migrator

SHIPPED = REPO_ROOT / "migrations"

pytestmark = pytest.mark.usefixtures("isolated_ops_env")


def table_names(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}


def recorded(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def migrator(db: Path, migrations: Path, **kwargs) -> Migrator:
    return Migrator(str(db), str(migrations), **kwargs)


def simple(version: int, table: str | None = None, down: bool = True) -> tuple[str, str]:
    table = table or f"t{version}"
    text = f"-- migrate:up\nCREATE TABLE {table} (id INTEGER PRIMARY KEY);\n"
    if down:
        text += f"-- migrate:down\nDROP TABLE {table};\n"
    return f"{version:03d}_create_{table}.sql", text


# ---------------------------------------------------------------- parsing and files


def test_split_keeps_trigger_bodies_and_strings_with_semicolons_whole():
    sql = """
    CREATE TABLE a (x TEXT); -- a comment; with a semicolon
    CREATE TRIGGER tr AFTER INSERT ON a BEGIN
        UPDATE a SET x = 'one;two' WHERE rowid = NEW.rowid;
        SELECT 1;
    END;
    INSERT INTO a VALUES ('semi;colon'); INSERT INTO a VALUES ('x')
    """
    statements = mm.split_statements(sql)
    assert len(statements) == 4
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    assert statements[2] == "INSERT INTO a VALUES ('semi;colon');"
    assert statements[3] == "INSERT INTO a VALUES ('x')"


def test_split_skips_comment_only_chunks():
    assert mm.split_statements("-- nothing\n/* here; */\n;\n") == []


def test_sections_and_directives():
    text = ("-- header comment\n-- migrate:foreign_keys off\n-- migrate:up\nCREATE TABLE a(x);\n"
            "--  migrate:down\nDROP TABLE a;\n-- migrate:validate\nSELECT 1;\n")
    sections, directives = mm.parse_sql_sections(text)
    assert mm.split_statements(sections["up"]) == ["CREATE TABLE a(x);"]
    assert mm.split_statements(sections["down"]) == ["DROP TABLE a;"]
    assert mm.split_statements(sections["validate"]) == ["SELECT 1;"]
    assert directives == {"foreign_keys off"}


def test_a_file_without_markers_is_all_up():
    sections, _ = mm.parse_sql_sections("CREATE TABLE a(x);\n")
    assert sections == {"up": "CREATE TABLE a(x);\n", "down": None, "validate": None}


@pytest.mark.parametrize("text, message", [
    ("-- migrate:upp\nSELECT 1;", "unknown directive"),
    ("-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;", "second"),
    ("CREATE TABLE a(x);\n-- migrate:up\nSELECT 1;", "before the first"),
    ("-- migrate:down\nDROP TABLE a;", "no '-- migrate:up'"),
])
def test_malformed_files_are_usage_errors(text, message):
    with pytest.raises(OpsError) as raised:
        mm.parse_sql_sections(text, "005_x.sql")
    assert raised.value.code == EX_USAGE and message in raised.value.message


def test_checksum_ignores_bom_and_line_endings_but_not_content():
    base = mm.file_checksum(b"CREATE TABLE a(x);\nSELECT 1;\n")
    assert mm.file_checksum(b"\xef\xbb\xbfCREATE TABLE a(x);\r\nSELECT 1;\r\n") == base
    assert mm.file_checksum(b"CREATE TABLE a(x);\rSELECT 1;\r") == base
    assert mm.file_checksum(b"CREATE TABLE a(y);\nSELECT 1;\n") != base


def test_versions_are_integers_9_before_10(tmp_path, make_migrations):
    migrations = make_migrations({
        "9_first.sql": "CREATE TABLE first (id INTEGER PRIMARY KEY); CREATE TABLE log (what);",
        "10_second.sql": "CREATE TABLE second (id INTEGER REFERENCES first (id));"
                         "INSERT INTO log SELECT 'second';",
        "notes.txt": "not a migration", "schema.sql": "-- not a migration",
        "README_1.sql": "-- not numbered",
    })
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    assert [x.version for x in m.migrations] == [9, 10]
    m.up(backup=False)
    assert recorded(db) == [9, 10]


def test_two_files_with_one_version_are_refused(tmp_path, make_migrations):
    migrations = make_migrations({"001_a.sql": "SELECT 1;", "1_b.py": "def up(conn): pass\n"})
    with pytest.raises(OpsError) as raised:
        migrator(tmp_path / "d.db", migrations).up(backup=False)
    assert raised.value.code == EX_USAGE
    assert "001_a.sql and 1_b.py" in raised.value.message
    assert not (tmp_path / "d.db").exists()


def test_missing_migrations_directory_is_a_usage_error(tmp_path):
    with pytest.raises(OpsError) as raised:
        migrator(tmp_path / "d.db", tmp_path / "nope").status()
    assert raised.value.code == EX_USAGE


def test_not_an_sqlite_file_is_refused_unchanged(tmp_path, make_migrations):
    db = tmp_path / "d.db"
    db.write_bytes(b"this is a text file, not a database\n")
    migrations = make_migrations(dict([simple(1)]))
    for call in (lambda m: m.up(backup=False), lambda m: m.status(),
                 lambda m: m.baseline(1), lambda m: m.down(steps=1)):
        with pytest.raises(OpsError) as raised:
            call(migrator(db, migrations))
        assert raised.value.code == EX_USAGE
    assert db.read_bytes() == b"this is a text file, not a database\n"


def test_a_damaged_database_is_exit_4_as_for_every_command(tmp_path, make_migrations):
    # Once exit 2 ("not a usable SQLite database") here while backup and db_metrics said 4.
    db = tmp_path / "d.db"
    damaged = SQLITE_HEADER + bytes(range(256)) * 64
    db.write_bytes(damaged)
    migrations = make_migrations(dict([simple(1)]))
    for call in (lambda m: m.up(backup=False), lambda m: m.status()):
        with pytest.raises(OpsError) as raised:
            call(migrator(db, migrations))
        assert raised.value.code == EX_INTEGRITY, raised.value.message
        assert "maintain_database.sh check" in raised.value.message
    assert db.read_bytes() == damaged


# ------------------------------------------------- pitfall 1: all or nothing per migration


def test_failed_statement_rolls_back_the_whole_migration_and_its_row(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), (
        "002_broken.sql",
        "CREATE TABLE half (id INTEGER);\nINSERT INTO half VALUES (1);\n"
        "INSERT INTO no_such_table VALUES (1);\nCREATE TABLE never (id INTEGER);\n")]))
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    error = raised.value
    assert error.code == EX_FAIL
    assert "002_broken.sql failed at statement 3 of its up section" in error.message
    assert "INSERT INTO no_such_table" in error.message
    assert "applied before it in this run: 001_create_t1.sql" in error.message
    assert table_names(db) == {"t1", "schema_migrations"}  # nothing of 002 survived
    assert recorded(db) == [1]


def test_false_validation_rolls_back_and_exits_3(tmp_path, make_migrations):
    migrations = make_migrations({"001_fill.sql": (
        "-- migrate:up\nCREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (NULL);\n"
        "-- migrate:validate\nSELECT count(*) = 1 FROM a;\n"
        "SELECT count(*) = 0 FROM a WHERE x IS NULL;\n")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_VERIFY
    assert "validation: query 2" in raised.value.message
    assert table_names(db) == set()  # not even an empty schema_migrations


def test_python_migration_cannot_commit_the_runners_transaction(tmp_path, make_migrations):
    """commit() in a migration is a no-op: a later failure still rolls back all of it."""
    migrations = make_migrations({"001_sneaky.py": (
        "def up(conn):\n"
        "    conn.execute('CREATE TABLE a (x)')\n"
        "    conn.commit()\n"
        "    with conn:\n"
        "        conn.execute('CREATE TABLE b (x)')\n"
        "    conn.executescript('CREATE TABLE c (x); INSERT INTO nope VALUES (1);')\n")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_FAIL
    assert "001_sneaky.py failed in up() at line 6" in raised.value.message
    assert "no such table: nope" in raised.value.message
    assert table_names(db) == set()


def test_python_data_migration_fills_vendor_from_a_lookup_table(tmp_path, make_migrations):
    migrations = make_migrations({
        "001_initial.sql": (
            "CREATE TABLE devices (id INTEGER PRIMARY KEY, mac TEXT);\n"
            "INSERT INTO devices (mac) VALUES ('00:1a:2b:00:00:01'), "
            "('3c:5a:b4:00:00:02'), (NULL);\n"),
        "002_vendor.py": '''
"""Add devices.vendor, filled from the MAC prefix (OUI) lookup table."""

OUI = {"00:1a:2b": "Ayecom", "3c:5a:b4": "Google"}


def up(conn):
    conn.execute("ALTER TABLE devices ADD COLUMN vendor TEXT")
    conn.execute("CREATE TABLE oui_vendors (prefix TEXT PRIMARY KEY, vendor TEXT NOT NULL)")
    conn.executemany("INSERT INTO oui_vendors VALUES (?, ?)", OUI.items())
    conn.execute("""UPDATE devices SET vendor = (SELECT vendor FROM oui_vendors
                    WHERE prefix = substr(devices.mac, 1, 8))""")


def down(conn):
    conn.execute("DROP TABLE oui_vendors")
    conn.execute("ALTER TABLE devices DROP COLUMN vendor")


def validate(conn):
    return conn.execute("SELECT count(*) FROM devices WHERE mac IS NOT NULL "
                        "AND vendor IS NULL").fetchone()[0] == 0
'''})
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    m.up(backup=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT vendor FROM devices ORDER BY id").fetchall() == [
            ("Ayecom",), ("Google",), (None,)]
    m.down(steps=1, backup=False)
    with sqlite3.connect(db) as conn:
        assert "vendor" not in [r[1] for r in conn.execute("PRAGMA table_info(devices)")]
    assert recorded(db) == [1]


def test_failed_python_validation_exits_3_and_rolls_back(tmp_path, make_migrations):
    migrations = make_migrations({"001_x.py": (
        "def up(conn):\n    conn.execute('CREATE TABLE a (x)')\n"
        "def validate(conn):\n    return conn.execute('SELECT count(*) FROM a').fetchone()[0]\n")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_VERIFY
    assert "a" not in table_names(db)


# ------------------------------------------------------ pitfall 2: order and out-of-order


def test_out_of_order_file_is_refused_unless_allowed(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(3)]))
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    m.up(backup=False)
    make_migrations(dict([simple(2), simple(4)]))
    m = migrator(db, migrations)
    with pytest.raises(OpsError) as raised:
        m.up(backup=False)
    assert raised.value.code == EX_VERIFY
    assert "002_create_t2.sql" in raised.value.message and "--allow-out-of-order" in \
        raised.value.message
    assert recorded(db) == [1, 3]  # 4 was not applied either
    entries = {e.version: e for e in m.status().entries}
    assert entries[2].state == "pending" and entries[2].out_of_order
    assert not entries[4].out_of_order
    m.up(backup=False, allow_out_of_order=True)
    assert recorded(db) == [1, 2, 3, 4]


def test_up_to_stops_at_the_version_and_rejects_unknown_ones(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2), simple(3)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(to=2, backup=False)
    assert recorded(db) == [1, 2]
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(to=7, backup=False)
    assert raised.value.code == EX_USAGE
    assert recorded(db) == [1, 2]


# ----------------------------------------------------------- pitfall 3: edited migrations


def test_edited_applied_migration_blocks_up_and_validate(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    path = migrations / "001_create_t1.sql"
    path.write_text(path.read_text() + "CREATE INDEX i ON t1 (id);\n")
    make_migrations(dict([simple(2)]))
    m = migrator(db, migrations)
    for call in (lambda: m.up(backup=False), m.validate):
        with pytest.raises(OpsError) as raised:
            call()
        assert raised.value.code == EX_VERIFY
        assert "001_create_t1.sql" in raised.value.message
    assert recorded(db) == [1]
    assert "t2" not in table_names(db)
    assert [e.state for e in m.status().entries] == ["edited", "pending"]


def test_line_endings_and_bom_are_not_an_edit(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    path = migrations / "001_create_t1.sql"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert [e.state for e in migrator(db, migrations).validate()] == ["applied"]


def test_missing_file_is_reported_not_fatal(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    (migrations / "001_create_t1.sql").unlink()
    entries = migrator(db, migrations).validate()
    assert [(e.version, e.state) for e in entries] == [(1, "missing"), (2, "applied")]


# ------------------------------------------------------ pitfall 5: foreign keys and rebuilds


REBUILD = """\
-- Rebuild devices (SQLite's 12-step procedure) to add a CHECK constraint.
-- migrate:foreign_keys off
-- migrate:up
CREATE TABLE devices_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL CHECK (name != ''));
INSERT INTO devices_new (id, name) SELECT id, name FROM devices;
DROP TABLE devices;
ALTER TABLE devices_new RENAME TO devices;
-- migrate:down
CREATE TABLE devices_old (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO devices_old (id, name) SELECT id, name FROM devices;
DROP TABLE devices;
ALTER TABLE devices_old RENAME TO devices;
"""

PARENT_AND_CHILD = """\
CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE services (id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE, port INTEGER);
INSERT INTO devices VALUES (1, 'router'), (2, 'printer');
INSERT INTO services (device_id, port) VALUES (1, 22), (1, 443), (2, 631);
"""


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_rebuild_with_foreign_keys_off_keeps_every_child_row(tmp_path, make_migrations):
    migrations = make_migrations({"001_init.sql": PARENT_AND_CHILD, "002_rebuild.sql": REBUILD})
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    m.up(backup=False)
    assert count(db, "services") == 3
    with sqlite3.connect(db) as conn:
        assert "CHECK" in conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'devices'").fetchone()[0]
    m.down(steps=1, backup=False)
    assert count(db, "services") == 3


@pytest.mark.parametrize("setting", [0, 1])
def test_the_foreign_keys_setting_is_restored_after_the_migration(make_migrations, setting):
    migrations = make_migrations({"001_init.sql": PARENT_AND_CHILD, "002_rebuild.sql": REBUILD})
    conn = mm.memory_database()
    conn.execute(f"PRAGMA foreign_keys = {setting}")
    first, rebuild = mm.discover(str(migrations))
    mm.apply_one(conn, first)
    mm.apply_one(conn, rebuild)
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == setting
    assert conn.execute("SELECT count(*) FROM services").fetchone()[0] == 3


def test_without_the_directive_the_rebuild_cascades_away_child_rows(tmp_path, make_migrations):
    """Why the directive exists: the runner keeps foreign keys on, so DROP TABLE cascades."""
    migrations = make_migrations({
        "001_init.sql": PARENT_AND_CHILD,
        "002_rebuild.sql": REBUILD.replace("-- migrate:foreign_keys off\n", ""),
    })
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    assert count(db, "services") == 0


def test_pragma_foreign_keys_inside_a_migration_is_a_no_op(tmp_path, make_migrations):
    migrations = make_migrations({
        "001_init.sql": PARENT_AND_CHILD,
        "002_rebuild.sql": REBUILD.replace("-- migrate:foreign_keys off\n", "").replace(
            "-- migrate:up\n", "-- migrate:up\nPRAGMA foreign_keys = OFF;\n"),
    })
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    assert count(db, "services") == 0


def test_foreign_key_violations_after_a_rebuild_roll_it_back(tmp_path, make_migrations):
    migrations = make_migrations({"001_init.sql": PARENT_AND_CHILD, "002_lossy.sql": (
        REBUILD.replace("SELECT id, name FROM devices;", "SELECT id, name FROM devices "
                        "WHERE id = 1;", 1))})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_VERIFY
    assert "foreign-key check" in raised.value.message
    assert count(db, "devices") == 2 and count(db, "services") == 3
    assert recorded(db) == [1]


def test_no_transaction_directive_allows_vacuum(tmp_path, make_migrations, stub_backup):
    migrations = make_migrations({"001_a.sql": "CREATE TABLE a (x);",
                                  "002_vacuum.sql": "VACUUM;"})
    db = tmp_path / "d.db"
    migrator(db, migrations).up(to=1, backup=False)
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert "cannot VACUUM from within a transaction" in raised.value.message
    assert recorded(db) == [1]

    (migrations / "002_vacuum.sql").write_text("-- migrate:no-transaction\nVACUUM;\n")
    result = migrator(db, migrations).up(backup=False)
    assert recorded(db) == [1, 2]
    # A no-transaction migration gets its backup even with backup=False.
    assert result.backup and Path(result.backup).exists()
    assert len(stub_backup.calls) == 1


# ----------------------------------------------------------------------- backups


def test_up_backs_up_an_existing_database_first(tmp_path, make_migrations, stub_backup):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    result = m.up()  # a new database: nothing to back up
    assert result.backup is None and stub_backup.calls == []
    make_migrations(dict([simple(2)]))
    result = migrator(db, migrations, backup_dir=str(tmp_path / "bk")).up()
    assert result.backup and Path(result.backup).parent == tmp_path / "bk"
    assert "t2" not in table_names(Path(result.backup))  # taken before migrating
    (dest, lock_env), = stub_backup.calls
    assert dest == str(tmp_path / "bk")
    assert lock_env == str(db) + ".sqlite-ops.lock"  # taken under migrate's own lock
    assert migrator(db, migrations).up().backup is None  # nothing pending: no backup
    assert len(stub_backup.calls) == 1


@pytest.mark.parametrize("direction", ["up", "down"])
def test_no_connection_of_migrate_is_open_while_its_backup_runs(tmp_path, make_migrations,
                                                               monkeypatch, direction):
    """The backup runs in migrate's process and opens and closes the database's
    files: with a connection of migrate open, that would silently drop its POSIX
    locks (they belong to the process), and an application closing its own
    connection meanwhile could delete the WAL under it."""
    monkeypatch.setenv("COMPRESS", "none")
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    if direction == "up":
        make_migrations(dict([simple(2)]))
    opened: list[sqlite3.Connection] = []
    connect, take_backup = mm.Migrator.connect, mm.Migrator.take_backup

    def recording_connect(self, *args, **kwargs):
        opened.append(connect(self, *args, **kwargs))
        return opened[-1]

    def checking_backup(self):
        for conn in opened:
            with pytest.raises(sqlite3.ProgrammingError):  # closed
                conn.execute("SELECT 1")
        return take_backup(self)

    monkeypatch.setattr(mm.Migrator, "connect", recording_connect)
    monkeypatch.setattr(mm.Migrator, "take_backup", checking_backup)
    m = migrator(db, migrations, backup_dir=str(tmp_path / "bk"))
    result = m.up() if direction == "up" else m.down(steps=1)
    assert result.backup and Path(result.backup).exists()
    assert recorded(db) == ([1, 2] if direction == "up" else [])


def test_failed_backup_applies_nothing(tmp_path, make_migrations, failing_backup):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    make_migrations(dict([simple(2)]))
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up()
    assert raised.value.code == EX_FAIL
    assert "backup" in raised.value.message and "disk full" in raised.value.message
    assert table_names(db) == {"t1", "schema_migrations"} and recorded(db) == [1]


def test_failure_message_names_the_backup_to_restore(tmp_path, make_migrations, stub_backup):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up()
    make_migrations({"002_good.sql": "CREATE TABLE t2 (x);",
                     "003_bad.sql": "CREATE TABLE t1 (x);"})
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up()
    assert "applied before it in this run: 002_good.sql" in raised.value.message
    backup = str(stub_backup.backups()[0])
    script = str(REPO_ROOT / "scripts" / "restore_database.sh")
    undo = shlex.join([script, "--db", str(db), "--dir", str(Path(backup).parent),
                       "--migrations", str(migrations), "--yes", backup])
    assert undo in raised.value.message
    assert "table t1 already exists" in raised.value.message
    # A backup of a database with foreign-key violations restores only with --force.
    Path(backup + ".manifest.json").write_text('{"foreign_key_violations": 3}')
    assert migrator(db, migrations)._undo(backup) == shlex.join(
        [script, "--db", str(db), "--dir", str(Path(backup).parent),
         "--migrations", str(migrations), "--yes", "--force", backup])


def test_a_drill_mode_pre_migration_backup_still_counts_orphans_so_the_undo_carries_force(
        tmp_path, make_migrations, stub_backup, monkeypatch):
    """INTEGRITY_CHECK=drill leaves a cron backup's foreign-key count to the
    drill that follows it; no drill follows migrate's backup, and the undo it
    prints decides --force by that count. Unknown, the command printed ready to
    paste stopped at the orphans (exit 3): pasted, it must restore."""
    monkeypatch.setenv("INTEGRITY_CHECK", "drill")
    migrations = make_migrations({"001_tables.sql": (
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));")})
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    with sqlite3.connect(db) as conn:  # foreign keys off, as the application runs
        conn.execute("INSERT INTO child VALUES (1, 42)")
    conn.close()
    make_migrations({"002_good.sql": "CREATE TABLE t2 (x);",
                     "003_bad.sql": "CREATE TABLE t2 (x);"})
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up()
    backup = str(stub_backup.backups()[0])
    manifest = json.loads(Path(backup + ".manifest.json").read_text())
    assert manifest["integrity_check_deferred"] is True  # the full check is still the drill's
    assert manifest["foreign_key_violations"] == 1
    assert "foreign_key_check_deferred" not in manifest
    undo = raised.value.message.split("to return to the state before this run: ", 1)[1]
    assert "--force" in shlex.split(undo)
    pasted = subprocess.run(undo, shell=True, capture_output=True, text=True, check=False)
    assert pasted.returncode == 0, pasted.stderr
    assert table_names(db) == {"parent", "child", "schema_migrations"} and recorded(db) == [1]


def test_lock_is_released_and_env_cleared_after_up(tmp_path, make_migrations):
    import os

    migrations = make_migrations(dict([simple(1)]))
    migrator(tmp_path / "d.db", migrations).up(backup=False)
    assert LOCK_HELD_ENV not in os.environ


# ----------------------------------------------------- pitfall 6: layouts and baseline


def test_legacy_layout_is_upgraded_in_place_keeping_history(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2), simple(3)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE t1 (id INTEGER PRIMARY KEY); CREATE TABLE t2 (id INTEGER PRIMARY KEY);
            CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, version TEXT,
                applied_at TEXT, description TEXT);
            INSERT INTO schema_migrations (version, applied_at, description) VALUES
                ('001', '2023-01-01 10:00:00', 'create t1'),
                ('002_create_t2', '2023-02-01 10:00:00', NULL);
        """)
    m = migrator(db, migrations)
    status = m.status()
    assert status.layout == "legacy"
    assert [e.state for e in status.entries] == ["applied", "applied", "pending"]
    result = m.up(backup=False)
    assert result.upgraded_layout == "legacy"
    assert [x.version for x, _ in result.applied] == [3]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version, description, applied_at, length(checksum) "
                            "FROM schema_migrations ORDER BY version").fetchall()
        columns = [r[1] for r in conn.execute("PRAGMA table_info(schema_migrations)")]
    assert columns == ["version", "description", "checksum", "applied_at", "execution_ms"]
    assert rows[:2] == [(1, "create t1", "2023-01-01 10:00:00", 64),
                        (2, "create_t2", "2023-02-01 10:00:00", 64)]
    assert rows[2][0] == 3
    assert table_names(db) == {"t1", "t2", "t3", "schema_migrations"}


def dump(db: Path, *tables: str) -> list[tuple]:
    """Each table's definition and rows, to show a table was left exactly as it was."""
    with sqlite3.connect(db) as conn:
        return [(t, conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (t,)).fetchone(),
                 conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall()) for t in tables]


PIWARDRIVE = ("CREATE TABLE schema_version (version INTEGER);"
              "INSERT INTO schema_version VALUES (1);"
              "CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT);"
              "INSERT INTO migrations VALUES (1, 'initial'), (2, 'add_gps');"
              "CREATE TABLE t1 (id INTEGER PRIMARY KEY);")


def test_foreign_history_tables_survive_a_failed_up_untouched(tmp_path, make_migrations,
                                                              stub_backup):
    """A PiWardrive-shaped database: its schema_version and migrations tables are
    the application's. A refused up and a failing up leave them (and everything
    else) exactly as they were, take no backup and write no schema_migrations."""
    migrations = make_migrations(dict([simple(1), simple(2)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(PIWARDRIVE + "CREATE TABLE gps (x);")
    before = db.read_bytes()
    with pytest.raises(OpsError) as raised:  # its schema is no version's: refused
        migrator(db, migrations).up()
    assert raised.value.code == EX_VERIFY
    message = raised.value.message
    assert "table gps: not in the migrations through 001_create_t1.sql" in message
    assert "table schema_version (1 row(s), highest version 1)" in message
    assert "nothing was written" in message and "baseline V --force" in message
    assert db.read_bytes() == before and stub_backup.backups() == []
    # Adopted explicitly, then a migration that fails: still untouched.
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE gps")
    migrator(db, migrations).baseline(1)
    make_migrations({"003_bad.sql": "CREATE TABLE t3 (x); INSERT INTO nope VALUES (1);"})
    kept = dump(db, "schema_version", "migrations")
    with pytest.raises(OpsError):
        migrator(db, migrations).up(backup=False)
    assert dump(db, "schema_version", "migrations") == kept
    assert recorded(db) == [1, 2]  # 002 applied, 003 rolled back


def test_foreign_history_tables_survive_a_successful_up_and_show_in_status(
        tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(PIWARDRIVE)
    kept = dump(db, "schema_version", "migrations")
    status = migrator(db, migrations).status()
    # schema_version = 1 is another sequence's number: never mapped onto 001.
    assert [e.state for e in status.entries] == ["pending", "pending"]
    assert status.unadopted and [h.table for h in status.foreign] == [
        "schema_version", "migrations"]
    assert status.as_dict()["foreign_history"][0]["highest"] == 1
    result = migrator(db, migrations).up(backup=False)  # t1 is 001's schema: adopted
    assert [m.version for m in result.adopted] == [1]
    assert [m.version for m, _ in result.applied] == [2]
    assert dump(db, "schema_version", "migrations") == kept
    assert recorded(db) == [1, 2]
    migrator(db, migrations).write_schema()
    assert migrator(db, migrations).check_schema() == []  # their tables are no drift


def test_a_foreign_schema_migrations_table_is_refused_not_rewritten(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:  # another tool's table of that name (Rails-style)
        conn.executescript("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY);"
                           "INSERT INTO schema_migrations VALUES ('20240101');")
    before = db.read_bytes()
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_USAGE and "another tool's" in raised.value.message
    assert db.read_bytes() == before


def test_failing_first_migration_leaves_no_records_table_and_no_layout_upgrade(
        tmp_path, make_migrations):
    migrations = make_migrations({"001_bad.sql": "CREATE TABLE a (x); INSERT INTO nope VALUES (1);"
                                  })
    db = tmp_path / "d.db"
    with pytest.raises(OpsError):
        migrator(db, migrations).up(backup=False)
    assert table_names(db) == set()
    # The older layout is upgraded only together with a migration that commits.
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, version TEXT,"
                           " applied_at TEXT, description TEXT);")
    before = dump(db, "schema_migrations")
    with pytest.raises(OpsError):
        migrator(db, migrations).up(backup=False)
    assert dump(db, "schema_migrations") == before


def test_legacy_version_without_a_number_is_a_clear_error(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, "
                           "version TEXT, applied_at TEXT, description TEXT);"
                           "INSERT INTO schema_migrations (version) VALUES ('initial');")
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).up(backup=False)
    assert raised.value.code == EX_USAGE and "'initial'" in raised.value.message


def test_baseline_verifies_the_schema_before_recording(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2), simple(3)]))
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:  # created by hand, long ago: t1 and t2 exist
        conn.executescript("CREATE TABLE t1 (id INTEGER PRIMARY KEY);"
                           "CREATE TABLE t2 (id INTEGER PRIMARY KEY);")
    with pytest.raises(OpsError) as raised:  # t2 exists: it is not at version 1
        migrator(db, migrations).baseline(1)
    assert raised.value.code == EX_VERIFY
    assert "table t2: not in the migrations through 001_create_t1.sql" in raised.value.message
    assert "nothing was recorded" in raised.value.message
    assert "schema_migrations" not in table_names(db)
    m = migrator(db, migrations)
    chosen, drift = m.baseline(2)
    assert [x.version for x in chosen] == [1, 2] and drift == []
    assert recorded(db) == [1, 2]
    m.up(backup=False)  # would fail with "table t1 already exists" had 1 and 2 run
    assert recorded(db) == [1, 2, 3]
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).baseline(3)
    assert raised.value.code == EX_USAGE and "already has migration history" in \
        raised.value.message


def test_baseline_force_records_anyway_and_says_what_differs(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    sqlite3.connect(db).execute("CREATE TABLE t1 (id INTEGER PRIMARY KEY, extra TEXT)"
                                ).connection.close()
    chosen, drift = migrator(db, migrations).baseline(1, force=True)
    assert [x.version for x in chosen] == [1]
    assert drift == ["table t1: column extra not in the migrations through 001_create_t1.sql"]
    assert recorded(db) == [1]


def test_up_adopts_a_database_whose_schema_matches_and_says_so(tmp_path, make_migrations,
                                                               stub_backup):
    migrations = make_migrations(dict([simple(1), simple(2)]))
    db = tmp_path / "d.db"
    sqlite3.connect(db).execute("CREATE TABLE t1 (id INTEGER PRIMARY KEY)").connection.close()
    result = migrator(db, migrations).up()
    assert [m.version for m in result.adopted] == [1]
    assert [m.version for m, _ in result.applied] == [2]
    assert recorded(db) == [1, 2] and len(stub_backup.backups()) == 1


def test_up_refuses_a_database_that_matches_no_version_writing_nothing(tmp_path,
                                                                        make_migrations,
                                                                        stub_backup):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    sqlite3.connect(db).execute("CREATE TABLE t1 (id TEXT PRIMARY KEY)").connection.close()
    before = db.read_bytes()
    for _ in range(2):  # a deploy retried: still no backup piling up
        with pytest.raises(OpsError) as raised:
            migrator(db, migrations).up()
        assert raised.value.code == EX_VERIFY
    assert "table t1: column id differs (type/not null/default/key): TEXT PRIMARY KEY " \
        "instead of INTEGER PRIMARY KEY" in raised.value.message
    assert db.read_bytes() == before and stub_backup.backups() == []


def test_a_data_only_migration_after_the_matching_version_is_run_not_assumed(
        tmp_path, make_migrations):
    migrations = make_migrations({
        "001_t.sql": "CREATE TABLE t (x INTEGER);",
        "002_fill.sql": "UPDATE t SET x = 2 WHERE x = 1;"})
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
    result = migrator(db, migrations).up(backup=False)
    assert [m.version for m in result.adopted] == [1]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_baseline_needs_an_existing_database_and_a_known_version(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    with pytest.raises(OpsError):
        migrator(db, migrations).baseline(1)
    assert not db.exists()
    sqlite3.connect(db).execute("CREATE TABLE t1 (x)").connection.close()
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).baseline(5)
    assert raised.value.code == EX_USAGE
    assert table_names(db) == {"t1"}


# ------------------------------------------------------------- pitfall 7: going down


def test_down_runs_in_reverse_applied_order(tmp_path, make_migrations):
    def logged(version: int) -> tuple[str, str]:
        return (f"{version:03d}_m{version}.sql",
                f"-- migrate:up\nINSERT INTO log VALUES ('up {version}');\n"
                f"-- migrate:down\nINSERT INTO log VALUES ('down {version}');\n")

    db = tmp_path / "d.db"
    migrations = make_migrations({"000_log.sql": "CREATE TABLE log (what TEXT);"})
    migrator(db, migrations).up(backup=False)
    make_migrations(dict([logged(1), logged(3)]))
    migrator(db, migrations).up(backup=False)
    make_migrations(dict([logged(2)]))
    migrator(db, migrations).up(backup=False, allow_out_of_order=True)  # applied: 1, 3, 2
    m = migrator(db, migrations)
    assert [x.version for x in m.down(steps=1, dry_run=True).planned] == [2]
    m.down(to=0, backup=False)
    with sqlite3.connect(db) as conn:
        log = [r[0] for r in conn.execute("SELECT what FROM log ORDER BY rowid")]
    assert log == ["up 1", "up 3", "up 2", "down 2", "down 3", "down 1"]
    assert recorded(db) == [0]


def test_down_refuses_before_touching_anything(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(2, down=False), simple(3)]))
    db = tmp_path / "d.db"
    m = migrator(db, migrations)
    m.up(backup=False)
    with pytest.raises(OpsError) as raised:
        m.down(steps=2, backup=False)
    assert raised.value.code == EX_FAIL
    assert "002_create_t2.sql has no down section" in raised.value.message
    assert recorded(db) == [1, 2, 3] and "t3" in table_names(db)  # 3 was not reverted
    m.down(steps=1, backup=False)
    assert recorded(db) == [1, 2]


def test_down_of_an_edited_migration_is_refused(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    (migrations / "001_create_t1.sql").write_text("-- migrate:up\nSELECT 1;\n"
                                                   "-- migrate:down\nDROP TABLE t1;\n")
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).down(steps=1, backup=False)
    assert raised.value.code == EX_VERIFY
    assert "t1" in table_names(db)


@pytest.mark.parametrize("kwargs", [{}, {"steps": 1, "to": 0}, {"steps": 0}, {"steps": 5},
                                    {"to": -1}])
def test_down_arguments_are_checked(tmp_path, make_migrations, kwargs):
    migrations = make_migrations(dict([simple(1)]))
    db = tmp_path / "d.db"
    migrator(db, migrations).up(backup=False)
    with pytest.raises(OpsError) as raised:
        migrator(db, migrations).down(backup=False, **kwargs)
    assert raised.value.code == EX_USAGE
    assert recorded(db) == [1]


# -------------------------------------------------------------------- new, status


def test_new_creates_the_next_numbered_file(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1), simple(9)]))
    m = migrator(tmp_path / "d.db", migrations)
    path = Path(m.new("Add vendor-column"))
    assert path.name == "010_add_vendor_column.sql"
    sections, _ = mm.parse_sql_sections(path.read_text())
    assert sections["up"] is not None and sections["down"] is not None
    py = Path(m.new("backfill", python=True))
    assert py.name == "011_backfill.py"
    assert [x.version for x in migrator(tmp_path / "d.db", migrations).migrations][-2:] == [10, 11]
    with pytest.raises(OpsError):
        m.new("bad/name")


def test_status_of_a_database_that_does_not_exist_yet(tmp_path, make_migrations):
    migrations = make_migrations(dict([simple(1)]))
    status = migrator(tmp_path / "nope.db", migrations).status().as_dict()
    assert status["database_exists"] is False and status["pending"] == [1]
    assert status["current_version"] is None and status["latest_version"] == 1
    assert not (tmp_path / "nope.db").exists()


# ------------------------------------------------------------- the shipped migrations


def test_committed_schema_sql_is_what_the_migrations_produce():
    committed = (SHIPPED / "schema.sql").read_text(encoding="utf-8")
    assert committed == Migrator(":memory:", str(SHIPPED)).render_schema(), \
        "migrations/schema.sql is stale: run 'scripts/migrate schema' and commit it"


def test_shipped_migrations_go_up_and_back_down_to_the_applications_own_schema(tmp_path):
    """003 and 004 revert; 001 and 002 are the application's own tables (its code
    and its installer create them) and are never dropped: down stops there."""
    db = tmp_path / "d.db"
    m = Migrator(str(db), str(SHIPPED))
    m.up(backup=False)
    assert table_names(db) == {"devices", "scans", "network_changes", "services",
                               "schema_migrations"}
    assert m.check_schema() == []
    m.down(to=2, backup=False)
    reference = Migrator(":memory:", str(SHIPPED)).build_schema(through=2)
    with sqlite3.connect(db) as conn:
        assert mm.schema_drift(conn, reference) == []
    with pytest.raises(OpsError) as raised:
        m.down(to=0, backup=False)
    assert raised.value.code == EX_FAIL
    assert "002_installer_schema.sql has no down section" in raised.value.message
    assert recorded(db) == [1, 2] and "devices" in table_names(db)


def test_schema_check_reports_drift_table_by_table(tmp_path):
    db = tmp_path / "d.db"
    m = Migrator(str(db), str(SHIPPED))
    m.up(backup=False)
    with sqlite3.connect(db) as conn:
        conn.executescript("ALTER TABLE devices ADD COLUMN owner TEXT;"
                           "DROP INDEX idx_services_port;"
                           "CREATE TABLE scratch (x);")
    assert m.check_schema() == [
        "table devices: column owner not in schema.sql",
        "table scratch: not in schema.sql",
        "index idx_services_port: missing from the database",
    ]


def test_schema_check_sees_a_changed_constraint(tmp_path, make_migrations):
    migrations = make_migrations({"001_a.sql": "CREATE TABLE a (x INTEGER CHECK (x > 0));"})
    m = migrator(tmp_path / "d.db", migrations)
    m.write_schema()
    sqlite3.connect(tmp_path / "d.db").execute(
        "CREATE TABLE a (x INTEGER CHECK (x > 1))").connection.close()
    assert m.check_schema() == ["table a: check constraints differ"]


def dashboard_queries() -> list[str]:
    return [line.strip() for line in (SHIPPED / "queries.sql").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("--")]


def query_plan(conn: sqlite3.Connection, query: str) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query)]


@pytest.mark.parametrize("query", dashboard_queries())
def test_dashboard_queries_use_an_index(query):
    conn = Migrator(":memory:", str(SHIPPED)).build_schema()
    plan = query_plan(conn, query)
    for step in plan:
        if step.startswith(("SCAN", "SEARCH")):
            assert " USING " in step, f"full table scan in {plan} for {query}"
        assert "TEMP B-TREE" not in step, f"sort without an index in {plan} for {query}"


def test_the_application_schema_alone_sorts_its_page_view():
    """The index test above can fail: with only the application's own schema (001)
    its two page-view queries sort in a temporary b-tree, and the lookups on
    MAC, host name, services and changes scan or have no table yet."""
    conn = Migrator(":memory:", str(SHIPPED)).build_schema(through=1)

    def slow(query: str) -> bool:
        try:
            plan = query_plan(conn, query)
        except sqlite3.OperationalError:  # no such table before 002/003
            return True
        return any(s.startswith("SCAN") and " USING " not in s or "TEMP B-TREE" in s
                   for s in plan)

    queries = dashboard_queries()
    assert slow(queries[0]) and slow(queries[1])
    assert len([q for q in queries if slow(q)]) >= len(queries) - 5


# ------------------------------------------------------------------ property-based


@st.composite
def migration_sets(draw):
    count_ = draw(st.integers(min_value=1, max_value=5))
    files = {}
    for version in range(1, count_ + 1):
        kind = draw(st.sampled_from(["plain", "plain", "no_down", "broken", "index"]))
        name = f"{version:03d}_m{version}.sql"
        if kind == "broken":  # first statement works, second fails: must leave no trace
            files[name] = (f"-- migrate:up\nCREATE TABLE t{version} (id INTEGER);\n"
                           f"INSERT INTO missing_{version} VALUES (1);\n"
                           f"-- migrate:down\nDROP TABLE t{version};\n")
        elif kind == "no_down":
            files[name] = f"CREATE TABLE t{version} (id INTEGER);\n"
        elif kind == "index":
            files[name] = (f"-- migrate:up\nCREATE TABLE t{version} (id INTEGER);\n"
                           f"CREATE INDEX i{version} ON t{version} (id);\n"
                           f"-- migrate:down\nDROP INDEX i{version};\nDROP TABLE t{version};\n")
        else:
            files[name] = (f"-- migrate:up\nCREATE TABLE t{version} (id INTEGER);\n"
                           f"-- migrate:down\nDROP TABLE t{version};\n")
    return files


operations = st.lists(st.one_of(
    st.tuples(st.just("up"), st.none() | st.integers(1, 5)),
    st.tuples(st.just("down_steps"), st.integers(1, 3)),
    st.tuples(st.just("down_to"), st.integers(0, 5)),
), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=migration_sets(), ops=operations)
def test_any_sequence_of_operations_keeps_the_history_consistent(files, ops):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "migrations"
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
        db = Path(tmp) / "d.db"
        for op, arg in ops:
            m = Migrator(str(db), str(directory))
            try:
                if op == "up":
                    m.up(to=arg if arg is None or arg <= len(files) else None, backup=False)
                elif op == "down_steps":
                    m.down(steps=arg, backup=False)
                else:
                    m.down(to=arg, backup=False)
            except OpsError as error:
                assert error.code in (EX_FAIL, EX_USAGE)
            if not db.exists():
                continue
            versions = recorded(db) if "schema_migrations" in table_names(db) else []
            tables = {t for t in table_names(db) if t != "schema_migrations"}
            # Every recorded migration's table exists, and nothing else does.
            assert tables == {f"t{v}" for v in versions}
            # Applied migrations are always a prefix: no holes from failures or downs.
            assert versions == list(range(1, len(versions) + 1))
            with sqlite3.connect(db) as conn:
                indexes = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert indexes == {f"i{v}" for v in versions if f"CREATE INDEX i{v}" in
                               files[f"{v:03d}_m{v}.sql"]}


def test_a_migration_recorded_meanwhile_is_not_applied_twice(tmp_path, make_migrations):
    """The applied set is re-read inside BEGIN IMMEDIATE, not only before it."""
    migrations = make_migrations({"001_count.sql": "CREATE TABLE IF NOT EXISTS c (x);"
                                                   "INSERT INTO c VALUES (1);"})
    m = migrator(tmp_path / "d.db", migrations)
    conn = m.connect()
    conn.execute(mm.TABLE_SQL)
    (migration,) = m.migrations
    assert mm.apply_one(conn, migration) is not None
    assert mm.apply_one(conn, migration) is None  # another run got there first
    assert conn.execute("SELECT count(*) FROM c").fetchone()[0] == 1
    conn.close()


@pytest.mark.parametrize("size", [0, 65535, 65536, 65537, 200_000])
def test_checksum_reads_the_whole_file(tmp_path, size):
    import hashlib

    data = (b"SELECT 1;\n" * (size // 10 + 1))[:size]
    path = tmp_path / "001_big.sql"
    path.write_bytes(data)
    assert mm.Migration(1, "big", str(path)).checksum == hashlib.sha256(data).hexdigest()


# ------------------------------------------- the real application: nMapping+'s own SQL

from opsenv import NMAPPING  # noqa: E402

needs_nmapping = pytest.mark.skipif(
    not (NMAPPING / "app_statements.sql").is_file(),
    reason=f"nMapping+'s SQL is not at {NMAPPING} (set SQLITE_OPS_CLIENTS)")

# What the dashboard binds, by column (dashboard_app.py: process_device_file,
# process_scan_summary): the services text is its "port lines joined by newlines".
APP_VALUES = {
    "ip": "192.0.2.10", "mac": "00:11:22:33:44:55", "vendor": "Acme", "hostname": "nas.lan",
    "first_seen": "2024-05-01", "last_seen": "2024-05-02", "status": "online",
    "os_info": "## OS & Services\nLinux 5.x",
    "services": "22/tcp   open  ssh     OpenSSH 8.9p1\n80/tcp   open  http    nginx 1.18",
    "vulnerabilities": "", "scan_type": "discovery", "scan_date": "2024-05-02",
    "devices_found": 3, "new_devices": 1, "scan_file": "discovery_2024-05-02.md",
}


def app_statements() -> list[str]:
    return mm.split_statements((NMAPPING / "app_statements.sql").read_text())


def app_parameters(statement: str) -> tuple:
    """The statement's ? placeholders bound as the dashboard binds them."""
    if "?" not in statement:
        return ()
    columns = statement[statement.index("(") + 1:statement.index(")")]
    names = [c.strip() for c in columns.split(",")][:statement.count("?")]
    return tuple(APP_VALUES[name] for name in names)


def run_app_statements(db: Path, foreign_keys: bool = False) -> list[sqlite3.Row]:
    """Every statement the dashboard issues, twice (a re-import replaces rows), on a
    connection opened as the dashboard opens it (foreign keys off unless asked)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    results = []
    try:
        for _ in range(2):
            for statement in app_statements():
                results = conn.execute(statement, app_parameters(statement)).fetchall() or results
                conn.commit()
        devices = conn.execute("SELECT * FROM devices ORDER BY last_seen DESC, ip ASC").fetchall()
    finally:
        conn.close()
    assert [dict(d)["ip"] for d in devices] == ["192.0.2.10"]
    assert dict(devices[0])["status"] == "online"  # what the dashboard counts by
    return devices


def app_database(path: Path, schema: str) -> Path:
    """A database made by the application's own code (or its installer)."""
    conn = sqlite3.connect(path)
    conn.executescript((NMAPPING / schema).read_text())
    conn.close()
    return path


@needs_nmapping
@pytest.mark.parametrize("version", [m.version for m in mm.discover(str(SHIPPED))])
def test_every_app_statement_works_at_every_migration_version(tmp_path, version):
    db = tmp_path / "dashboard.db"
    Migrator(str(db), str(SHIPPED)).up(to=version, backup=False)
    # The dashboard's start-up (CREATE ... IF NOT EXISTS) finds what it expects...
    conn = sqlite3.connect(db)
    conn.executescript((NMAPPING / "app_schema.sql").read_text())
    conn.close()
    # ...and its writes and page views work, with foreign keys off (as it runs)
    # and on (a REPLACE of a device with services rows must not fail or cascade).
    run_app_statements(db)
    run_app_statements(db, foreign_keys=True)
    reference = Migrator(":memory:", str(SHIPPED)).build_schema(through=version)
    with sqlite3.connect(db) as live:
        assert mm.schema_drift(live, reference) == []  # start-up changed nothing
        assert live.execute("PRAGMA foreign_key_check").fetchall() == []


@needs_nmapping
def test_a_fresh_database_is_the_one_the_dashboard_creates(tmp_path):
    ours = tmp_path / "ours.db"
    Migrator(str(ours), str(SHIPPED)).up(to=1, backup=False)
    theirs = app_database(tmp_path / "theirs.db", "app_schema.sql")
    with sqlite3.connect(ours) as a, sqlite3.connect(theirs) as b:
        assert mm.schema_drift(a, b) == []
        # Same names, types, defaults and index names, to the letter.
        assert [r[:2] for r in mm.schema_objects(a)] == [r[:2] for r in mm.schema_objects(b)]
        for table in ("devices", "scans"):
            query = f"SELECT * FROM pragma_table_xinfo('{table}')"
            assert a.execute(query).fetchall() == b.execute(query).fetchall()


@needs_nmapping
def test_up_adopts_the_dashboards_own_database_and_fills_services(tmp_path, stub_backup):
    db = app_database(tmp_path / "dashboard.db", "app_schema.sql")
    run_app_statements(db)
    m = Migrator(str(db), str(SHIPPED))
    result = m.up()
    assert [x.version for x in result.adopted] == [1]
    assert [x.version for x, _ in result.applied] == [2, 3, 4]
    assert len(stub_backup.backups()) == 1  # taken once, before 002
    assert m.check_schema() == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT device_ip, port, protocol, state, service, version "
                            "FROM services ORDER BY port").fetchall() == [
            ("192.0.2.10", 22, "tcp", "open", "ssh", "OpenSSH 8.9p1"),
            ("192.0.2.10", 80, "tcp", "open", "http", "nginx 1.18")]
    run_app_statements(db)


@needs_nmapping
def test_up_adopts_the_installers_database_at_002(tmp_path, stub_backup):
    db = app_database(tmp_path / "dashboard.db", "installer_schema.sql")
    m = Migrator(str(db), str(SHIPPED))
    result = m.up()
    assert [x.version for x in result.adopted] == [1, 2]
    assert [x.version for x, _ in result.applied] == [3, 4]
    assert m.check_schema() == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT scan_type, scan_file FROM scans").fetchall() == [
            ("init", "database_init.sql")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    run_app_statements(db)


@needs_nmapping
def test_baseline_of_the_dashboards_database_at_the_wrong_version_is_refused(tmp_path):
    db = app_database(tmp_path / "dashboard.db", "app_schema.sql")
    before = db.read_bytes()
    with pytest.raises(OpsError) as raised:
        Migrator(str(db), str(SHIPPED)).baseline(2)
    assert raised.value.code == EX_VERIFY
    assert "table network_changes: missing from the database" in raised.value.message
    assert "table scans: column scan_duration missing" in raised.value.message
    assert db.read_bytes() == before


@pytest.mark.parametrize("text, expected", [
    (None, []),
    ("", []),
    ("no ports here, just words", []),
    ("22/tcp open ssh OpenSSH 8.9p1 Ubuntu 3ubuntu0.1 (Ubuntu Linux; protocol 2.0)",
     [(22, "tcp", "open", "ssh", "OpenSSH 8.9p1 Ubuntu 3ubuntu0.1 (Ubuntu Linux; protocol 2.0)")]),
    ("- **Port 80**: http\n- Port 443 (https)",
     [(80, "tcp", None, "http", None), (443, "tcp", None, "https", None)]),
    ('["53/udp open domain", "22/tcp open ssh"]',
     [(22, "tcp", "open", "ssh", None), (53, "udp", "open", "domain", None)]),
    ('[{"port": 8080, "protocol": "tcp", "service": "http-proxy"}, {"port": "x"}]',
     [(8080, "tcp", None, "http-proxy", None)]),
    ("22/tcp, 80/tcp, 99999/tcp", [(22, "tcp", None, None, None), (80, "tcp", None, None, None)]),
    ('["22/tcp", unterminated', [(22, "tcp", None, None, None)]),
    ("| 3306/tcp | open | mysql |", [(3306, "tcp", "open", "mysql", None)]),
])
def test_004_fills_services_from_whatever_the_text_holds(tmp_path, text, expected):
    db = tmp_path / "d.db"
    m = Migrator(str(db), str(SHIPPED))
    m.up(to=3, backup=False)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO devices (ip, services) VALUES ('10.0.0.1', ?)", (text,))
    m.up(backup=False)
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT port, protocol, state, service, version FROM services "
                           "ORDER BY port").fetchall()
        assert conn.execute("SELECT services FROM devices").fetchone() == (text,)  # kept
    assert got == expected
    m.down(steps=1, backup=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM services").fetchone() == (0,)
