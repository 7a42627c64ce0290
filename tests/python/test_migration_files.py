"""Migration files as projects already write them: every Python shape runs as
written, inside the runner's transaction; anything the runner does not
understand is refused (exit 2) and never recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sqlite_ops.common import EX_FAIL, EX_USAGE, OpsError
from sqlite_ops.migration_files import discover
from sqlite_ops.migration_manager import Migrator

pytestmark = pytest.mark.usefixtures("isolated_ops_env")


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}


def recorded(db: Path) -> list[int]:
    if "schema_migrations" not in tables(db):
        return []
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run_up(tmp_path: Path, migrations: Path) -> Migrator:
    m = Migrator(str(tmp_path / "d.db"), str(migrations))
    m.up(backup=False)
    return m


SEED_BASE = '''
from typing import List


class DatabaseMigration:
    version = 0
    description = ""

    def up(self, cursor) -> List[str]:
        raise NotImplementedError

    def down(self, cursor) -> List[str]:
        raise NotImplementedError

    def validate(self, cursor) -> bool:
        return True
'''

SEED_MIGRATION = '''
from typing import List

from .base import DatabaseMigration


class Migration001(DatabaseMigration):
    version = 1
    description = "devices and their services"

    def up(self, cursor) -> List[str]:
        return [
            "CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT UNIQUE NOT NULL)",
            "CREATE INDEX idx_devices_ip ON devices(ip)",
            "INSERT INTO devices (ip) VALUES ('10.0.0.1'), ('10.0.0.2')",
        ]

    def down(self, cursor) -> List[str]:
        return ["DROP INDEX idx_devices_ip", "DROP TABLE devices"]

    def validate(self, cursor) -> bool:
        cursor.execute("SELECT count(*) FROM devices")
        return cursor.fetchall() == [(2,)]
'''


def test_seed_class_shape_returning_sql_runs_and_reverts(tmp_path, make_migrations):
    """class Migration001(DatabaseMigration) from a relative import, returning lists
    of SQL, validate(cursor) with a real cursor: applied, validated, reverted."""
    migrations = make_migrations({"base.py": SEED_BASE, "001_devices.py": SEED_MIGRATION})
    db = tmp_path / "d.db"
    m = run_up(tmp_path, migrations)
    assert rows(db, "SELECT ip FROM devices ORDER BY id") == [("10.0.0.1",), ("10.0.0.2",)]
    assert recorded(db) == [1]
    assert [x.version for x in m.migrations] == [1]  # base.py is no migration
    m.down(steps=1, backup=False)
    assert tables(db) == {"schema_migrations"}


def test_seed_class_whose_validate_fails_is_rolled_back(tmp_path, make_migrations):
    migrations = make_migrations({"base.py": SEED_BASE, "001_devices.py": SEED_MIGRATION.replace(
        "== [(2,)]", "== [(3,)]")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        run_up(tmp_path, migrations)
    assert "validate() returned false" in raised.value.message
    assert tables(db) == set()


PIWARDRIVE_BASE = '''
class BaseMigration:
    """PiWardrive-style: async apply/rollback on an aiosqlite connection."""

    version = 0

    async def apply(self, conn):
        raise NotImplementedError

    async def rollback(self, conn):
        raise NotImplementedError
'''

PIWARDRIVE_MIGRATION = '''
from .base import BaseMigration


class AddGpsColumns(BaseMigration):
    version = 2

    async def apply(self, conn):
        await conn.execute("CREATE TABLE wifi (bssid TEXT PRIMARY KEY, ssid TEXT)")
        await conn.executemany("INSERT INTO wifi VALUES (?, ?)", [("aa", "home"), ("bb", "cafe")])
        await conn.execute("ALTER TABLE wifi ADD COLUMN lat REAL")
        cursor = await conn.execute("SELECT count(*) FROM wifi")
        (count,) = await cursor.fetchone()
        async with conn.execute("SELECT bssid FROM wifi ORDER BY bssid") as cur:
            seen = [row[0] async for row in cur]
        await conn.execute("CREATE TABLE log (what TEXT)")
        await conn.execute("INSERT INTO log VALUES (?)", (f"{count} {seen}",))
        await conn.commit()

    async def rollback(self, conn):
        await conn.execute("DROP TABLE log")
        await conn.execute("DROP TABLE wifi")
        await conn.commit()
'''


def test_piwardrive_async_class_runs_to_completion_in_one_transaction(tmp_path,
                                                                       make_migrations):
    migrations = make_migrations({"base.py": PIWARDRIVE_BASE,
                                  "002_add_gps.py": PIWARDRIVE_MIGRATION})
    db = tmp_path / "d.db"
    m = run_up(tmp_path, migrations)
    assert rows(db, "SELECT what FROM log") == [("2 ['aa', 'bb']",)]
    assert recorded(db) == [2]
    m.down(steps=1, backup=False)
    assert tables(db) == {"schema_migrations"}


def test_async_migration_failing_half_way_leaves_nothing(tmp_path, make_migrations):
    migrations = make_migrations({"001_half.py": (
        "async def up(conn):\n"
        "    await conn.execute('CREATE TABLE a (x)')\n"
        "    await conn.commit()\n"
        "    await conn.execute('INSERT INTO nope VALUES (1)')\n")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        run_up(tmp_path, migrations)
    assert raised.value.code == EX_FAIL
    assert "001_half.py failed in up() at line 4" in raised.value.message
    assert tables(db) == set()


def test_module_up_returning_a_list_of_sql_is_executed(tmp_path, make_migrations):
    migrations = make_migrations({"001_list.py": (
        "def up(conn):\n"
        "    return ['CREATE TABLE a (x)', 'INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)']\n"
        "def down(conn):\n"
        "    return 'DROP TABLE a'\n")})
    db = tmp_path / "d.db"
    m = run_up(tmp_path, migrations)
    assert rows(db, "SELECT x FROM a") == [(1,), (2,)]
    m.down(steps=1, backup=False)
    assert "a" not in tables(db)


@pytest.mark.parametrize("body, words", [
    ("def up(conn):\n    conn.execute('CREATE TABLE a (x)')\n    return True\n",
     "returned bool True, which the runner does not understand"),
    ("def up(conn):\n    return {'sql': 'CREATE TABLE a (x)'}\n",
     "returned dict"),
    ("async def create(conn):\n    conn.execute('CREATE TABLE a (x)')\n"
     "def up(conn):\n    return create(conn)\n",
     "returned a coroutine without awaiting it"),
    ("async def up(conn):\n    conn.execute('CREATE TABLE a (x)')\n",
     "was never awaited"),
    ("class A:\n    def up(self, c):\n        pass\nclass B:\n    def apply(self, c):\n"
     "        pass\n", "defines 2 migration classes (A, B)"),
    ("X = 1\n", "defines no up(conn) function and no migration class"),
    ("class M:\n    def __init__(self, needed):\n        pass\n    def up(self, c):\n"
     "        pass\n", "cannot create M()"),
])
def test_a_shape_the_runner_does_not_understand_is_refused_and_never_recorded(
        tmp_path, make_migrations, body, words):
    migrations = make_migrations({"001_odd.py": body})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        run_up(tmp_path, migrations)
    assert raised.value.code == EX_USAGE, raised.value.message
    assert words in raised.value.message
    assert "a" not in tables(db) and recorded(db) == []


def test_validate_gets_a_cursor_and_rollback_fails_the_migration(tmp_path, make_migrations):
    migrations = make_migrations({"001_rb.py": (
        "def up(conn):\n"
        "    cur = conn.cursor()\n"
        "    cur.execute('CREATE TABLE a (x)')\n"
        "    cur.connection.rollback()\n")})
    db = tmp_path / "d.db"
    with pytest.raises(OpsError) as raised:
        run_up(tmp_path, migrations)
    assert raised.value.code == EX_FAIL and "cannot roll back" in raised.value.message
    assert tables(db) == set()


def test_discover_ignores_files_without_a_number(tmp_path, make_migrations):
    migrations = make_migrations({"base.py": SEED_BASE, "__init__.py": "",
                                  "001_devices.py": SEED_MIGRATION})
    assert [m.filename for m in discover(str(migrations))] == ["001_devices.py"]
