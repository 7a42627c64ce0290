"""The migration lint: each warning fires when it should and stays quiet otherwise."""

from __future__ import annotations

import pytest

from sqlite_ops.common import REPO_ROOT
from sqlite_ops.migration_lint import cascading_children, code_only, lint, text_warnings
from sqlite_ops.migration_manager import Migrator, discover

SHIPPED = REPO_ROOT / "migrations"

pytestmark = pytest.mark.usefixtures("isolated_ops_env")

PARENT_AND_CHILD = """\
CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE services (id INTEGER PRIMARY KEY,
    device_id INTEGER REFERENCES devices (id) ON DELETE CASCADE);
CREATE TABLE notes (id INTEGER PRIMARY KEY, device_id INTEGER REFERENCES devices (id));
"""


def lint_files(make_migrations, files: dict[str, str], **kwargs) -> list[str]:
    directory = make_migrations(files)
    return [str(w) for w in lint(discover(str(directory)), **kwargs)]


def test_shipped_migrations_lint_clean_up_and_down():
    assert lint(discover(str(SHIPPED)), include_down=True) == []


def test_shipped_migrations_lint_clean_on_the_oldest_supported_sqlite():
    assert lint(discover(str(SHIPPED)), include_down=True, sqlite_version=(3, 31, 0)) == []


@pytest.mark.parametrize("statement, old, new", [
    ("ALTER TABLE devices DROP COLUMN notes", (3, 34, 1), (3, 35, 0)),
    ("ALTER TABLE devices DROP notes", (3, 34, 1), (3, 35, 0)),
    ("ALTER TABLE devices RENAME COLUMN notes TO remarks", (3, 24, 0), (3, 25, 0)),
    ("alter table devices rename notes to remarks", (3, 24, 0), (3, 25, 0)),
])
def test_version_dependent_statements(statement, old, new):
    assert len(text_warnings(statement, old)) == 1
    assert "needs SQLite" in text_warnings(statement, old)[0]
    assert text_warnings(statement, new) == []


def test_table_rename_is_not_a_column_rename():
    assert text_warnings("ALTER TABLE devices_new RENAME TO devices", (3, 20, 0)) == []


@pytest.mark.parametrize("statement", [
    "PRAGMA foreign_keys = OFF", "pragma main.foreign_keys=0", "PRAGMA foreign_keys",
])
def test_pragma_foreign_keys_is_flagged(statement):
    (warning,) = text_warnings(statement, (3, 40, 0))
    assert "-- migrate:foreign_keys off" in warning


@pytest.mark.parametrize("statement", [
    "PRAGMA foreign_key_check", "PRAGMA foreign_key_list(devices)",
    "INSERT INTO notes VALUES ('PRAGMA foreign_keys = OFF')",
    "-- PRAGMA foreign_keys = OFF\nSELECT 1",
])
def test_related_but_harmless_statements_are_not_flagged(statement):
    assert text_warnings(statement, (3, 40, 0)) == []


def test_not_null_column_without_default():
    bad = "ALTER TABLE devices ADD COLUMN vendor TEXT NOT NULL"
    assert "DEFAULT" in text_warnings(bad, (3, 40, 0))[0]
    assert text_warnings(bad + " DEFAULT ''", (3, 40, 0)) == []
    assert text_warnings("ALTER TABLE devices ADD vendor TEXT", (3, 40, 0)) == []


def test_code_only_drops_comments_and_string_contents():
    assert code_only("SELECT 'a;b''c' -- x\n/* y */ FROM t") == "SELECT ''  \n  FROM t"


def test_a_quote_or_dashes_inside_a_quoted_name_hide_nothing():
    # The name's ' once opened a string literal that hid the DROP COLUMN.
    assert code_only('ALTER TABLE "it\'s" DROP x') == 'ALTER TABLE "it\'s" DROP x'
    assert "DROP COLUMN" in text_warnings('ALTER TABLE "it\'s" DROP COLUMN x', (3, 30, 0))[0]
    assert "DROP COLUMN" in text_warnings("ALTER TABLE [a--b] DROP COLUMN x", (3, 30, 0))[0]


def test_drop_table_with_cascading_children_is_flagged(make_migrations):
    warnings = lint_files(make_migrations, {
        "001_init.sql": PARENT_AND_CHILD,
        "002_rebuild.sql": ("CREATE TABLE devices_new (id INTEGER PRIMARY KEY, name TEXT);\n"
                            "INSERT INTO devices_new SELECT * FROM devices;\n"
                            "DROP TABLE devices;\n"
                            "ALTER TABLE devices_new RENAME TO devices;\n"),
    })
    assert warnings == [
        "002_rebuild.sql (up statement 3): DROP TABLE devices deletes the rows of services "
        "(ON DELETE CASCADE) while foreign keys are on; declare '-- migrate:foreign_keys off'"]


def test_drop_table_is_fine_with_the_directive_or_without_cascading_children(make_migrations):
    assert lint_files(make_migrations, {
        "001_init.sql": PARENT_AND_CHILD,
        "002_rebuild.sql": "-- migrate:foreign_keys off\nDROP TABLE devices;\n",
        "003_notes.sql": "DROP TABLE notes;\n",
    }) == []


def test_drop_table_checks_the_live_schema_passed_in(make_migrations):
    base = [s.strip() for s in PARENT_AND_CHILD.split(";") if s.strip()]
    warnings = lint_files(make_migrations, {"005_drop.sql": 'DROP TABLE IF EXISTS "devices";'},
                          base_schema=base)
    assert len(warnings) == 1 and "services" in warnings[0]


def test_statement_failing_against_the_planned_schema(make_migrations):
    warnings = lint_files(make_migrations, {
        "001_a.sql": "CREATE TABLE a (x);",
        "002_b.sql": "CREATE INDEX i ON a (missing_column);",
    })
    assert warnings == ["002_b.sql (up statement 1): fails against the planned schema: "
                        "no such column: missing_column"]


def test_python_migrations_are_linted_through_the_sql_they_run(make_migrations):
    warnings = lint_files(make_migrations, {
        "001_init.sql": PARENT_AND_CHILD,
        "002_py.py": ("def up(conn):\n"
                      "    conn.execute('PRAGMA foreign_keys = OFF')\n"
                      "    conn.execute('ALTER TABLE notes ADD COLUMN x TEXT NOT NULL')\n"),
        "003_drop.py": "def up(conn):\n    conn.execute('DROP TABLE devices')\n",
    })
    assert warnings == [
        "002_py.py (up): PRAGMA foreign_keys does nothing inside the migration's transaction; "
        "declare '# migrate:foreign_keys off' instead",
        "002_py.py (up): ADD COLUMN ... NOT NULL without a DEFAULT fails once the table has "
        "rows; add a DEFAULT or rebuild the table",
        "003_drop.py (up): DROP TABLE devices deletes the rows of services (ON DELETE CASCADE) "
        "while foreign keys are on; declare '# migrate:foreign_keys off'",
    ]


def test_cascading_children_lists_only_cascade_references(make_migrations):
    migrations = make_migrations({"001_a.sql": (
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c1 (p INTEGER REFERENCES p (id) ON DELETE CASCADE);"
        "CREATE TABLE c2 (p INTEGER REFERENCES p (id) ON DELETE SET NULL);"
        "CREATE TABLE c3 (p INTEGER REFERENCES p (id) ON DELETE CASCADE);")})
    conn = Migrator(":memory:", str(migrations)).build_schema()
    assert cascading_children(conn, "p") == ["c1", "c3"]
    assert cascading_children(conn, "c2") == []
    # The shipped schema has no cascades: the dashboard's INSERT OR REPLACE deletes
    # and re-inserts devices and scans, and a cascade would delete their children.
    shipped = Migrator(":memory:", str(SHIPPED)).build_schema()
    assert cascading_children(shipped, "devices") == []
    assert cascading_children(shipped, "scans") == []


def test_dry_run_reports_lint_warnings_for_pending_migrations(tmp_path, make_migrations):
    migrations = make_migrations({"001_init.sql": PARENT_AND_CHILD})
    db = tmp_path / "d.db"
    Migrator(str(db), str(migrations)).up(backup=False)
    make_migrations({"002_drop.sql": "DROP TABLE devices;"})
    result = Migrator(str(db), str(migrations)).up(dry_run=True)
    assert [m.filename for m in result.planned] == ["002_drop.sql"]
    assert len(result.warnings) == 1 and "deletes the rows of services" in result.warnings[0]
