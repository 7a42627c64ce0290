"""Warnings about migrations that will fail, or do harm, on this SQLite.

Run by ``migrate up --dry-run`` on the pending migrations (against the live
schema) and by the test suite on every shipped migration (up, then down). The
checks:

* ``ALTER TABLE ... DROP COLUMN`` before SQLite 3.35, ``RENAME COLUMN`` before 3.25;
* ``PRAGMA foreign_keys`` inside a migration: a no-op inside the runner's
  transaction (declare ``-- migrate:foreign_keys off`` instead);
* ``ADD COLUMN ... NOT NULL`` without a ``DEFAULT`` (SQLite refuses it);
* ``DROP TABLE`` of a table other tables reference ``ON DELETE CASCADE`` while
  foreign keys are on: the drop deletes their rows (a table rebuild needs
  ``-- migrate:foreign_keys off``);
* a statement that fails against an empty copy of the planned schema.

The planned schema is tracked by replaying each migration on an in-memory
database holding the current schema and no rows.
"""

from __future__ import annotations

import re
import sqlite3

from .migration_files import Migration
from .sqltext import sql_pieces

_DROP_COLUMN = re.compile(r"\bALTER\s+TABLE\s+\S+\s+DROP\s+(?!CONSTRAINT\b)", re.I)
_RENAME_COLUMN = re.compile(r"\bALTER\s+TABLE\s+\S+\s+RENAME\s+(?!TO\b)", re.I)
_PRAGMA_FK = re.compile(r"\bPRAGMA\s+(?:\w+\s*\.\s*)?foreign_keys\b", re.I)
_ADD_COLUMN = re.compile(r"\bALTER\s+TABLE\s+\S+\s+ADD\s", re.I)
_NOT_NULL = re.compile(r"\bNOT\s+NULL\b", re.I)
_DEFAULT = re.compile(r"\bDEFAULT\b", re.I)
_DROP_TABLE = re.compile(
    r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:(?:\"[^\"]+\"|\w+)\s*\.\s*)?(\"(?:[^\"]|\"\")+\"|`[^`]+`|\[[^\]]+\]|\w+)",
    re.I)


class LintWarning:
    """One finding: which file, which statement, what is wrong."""

    def __init__(self, filename: str, section: str, statement: int | None, message: str) -> None:
        self.filename = filename
        self.section = section
        self.statement = statement
        self.message = message

    def __str__(self) -> str:
        where = f" statement {self.statement}" if self.statement else ""
        return f"{self.filename} ({self.section}{where}): {self.message}"

    def __repr__(self) -> str:
        return f"LintWarning({str(self)!r})"


def code_only(sql: str) -> str:
    """The statement with each comment replaced by one space and string literals
    emptied; quoted names are kept whole (a ``--`` or a ``'`` inside one is part
    of the name)."""
    return "".join("''" if kind == "string" else " " if kind == "comment" else text
                   for kind, text in sql_pieces(sql))


def _unquote(name: str) -> str:
    if name[:1] in "\"`[" and len(name) >= 2:
        return name[1:-1].replace('""', '"')
    return name


def text_warnings(statement: str, version: tuple[int, ...]) -> list[str]:
    """Checks that need only the statement's text."""
    code = code_only(statement)
    found = []
    if _DROP_COLUMN.search(code) and version < (3, 35, 0):
        found.append(f"ALTER TABLE ... DROP COLUMN needs SQLite 3.35+, this is "
                     f"{_dotted(version)}; rebuild the table instead")
    if _RENAME_COLUMN.search(code) and version < (3, 25, 0):
        found.append(f"ALTER TABLE ... RENAME COLUMN needs SQLite 3.25+, this is "
                     f"{_dotted(version)}; rebuild the table instead")
    if _PRAGMA_FK.search(code):
        found.append("PRAGMA foreign_keys does nothing inside the migration's transaction; "
                     "declare '-- migrate:foreign_keys off' instead")
    if _ADD_COLUMN.search(code) and _NOT_NULL.search(code) and not _DEFAULT.search(code):
        found.append("ADD COLUMN ... NOT NULL without a DEFAULT fails once the table has rows; "
                     "add a DEFAULT or "
                     "rebuild the table")
    return found


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def cascading_children(conn: sqlite3.Connection, table: str) -> list[str]:
    """Tables whose foreign keys reference ``table`` with ON DELETE CASCADE."""
    children = []
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for child in names:
        for row in conn.execute('SELECT "table", on_delete FROM pragma_foreign_key_list(?)',
                                (child,)):
            if row[0].lower() == table.lower() and row[1].upper() == "CASCADE" \
                    and child.lower() != table.lower():
                children.append(child)
                break
    return children


def _drop_table_warning(conn: sqlite3.Connection, statement: str) -> str | None:
    match = _DROP_TABLE.match(code_only(statement))
    if not match:
        return None
    table = _unquote(match.group(1))
    children = cascading_children(conn, table)
    if not children:
        return None
    return (f"DROP TABLE {table} deletes the rows of {', '.join(children)} (ON DELETE "
            "CASCADE) while foreign keys are on; declare '-- migrate:foreign_keys off'")


def lint(migrations: list[Migration], base_schema: list[str] = (),  # type: ignore[assignment]
         sqlite_version: tuple[int, ...] | None = None,
         include_down: bool = False) -> list[LintWarning]:
    """Lint ``migrations`` in order against ``base_schema`` (CREATE statements).

    With ``include_down`` the down sections are then linted in reverse order,
    against the schema the up sections produced.
    """
    version = tuple(sqlite_version or sqlite3.sqlite_version_info)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    warnings: list[LintWarning] = []
    try:
        for sql in base_schema:
            try:
                conn.execute(sql)
            except sqlite3.Error:
                pass  # e.g. a view over a table that did not make it: lint what we can
        replay = True
        for m in migrations:
            replay = _lint_one(conn, m, "up", version, warnings, replay)
        if include_down:
            for m in reversed(migrations):
                if m.has_down:
                    replay = _lint_one(conn, m, "down", version, warnings, replay)
    finally:
        conn.close()
    return warnings


def _lint_one(conn: sqlite3.Connection, m: Migration, section: str, version: tuple[int, ...],
              warnings: list[LintWarning], replay: bool) -> bool:
    """Lint one section of one migration; replay it on ``conn``. False once replay fails."""
    m.load()
    if m.kind == "py":
        return _lint_python(conn, m, section, version, warnings, replay)
    for number, statement in enumerate(m.statements.get(section) or [], 1):
        def warn(message: str, number: int = number) -> None:
            warnings.append(LintWarning(m.filename, section, number, message))

        for message in text_warnings(statement, version):
            warn(message)
        if not replay:
            continue
        if not m.foreign_keys_off:
            message = _drop_table_warning(conn, statement)
            if message:
                warn(message)
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            warn(f"fails against the planned schema: {exc}")
            replay = False
    return replay


def _lint_python(conn: sqlite3.Connection, m: Migration, section: str,
                 version: tuple[int, ...], warnings: list[LintWarning], replay: bool) -> bool:
    """Python migrations: check the SQL they run (traced) on an empty copy of the schema."""
    if _PRAGMA_FK.search(m.text):
        warnings.append(LintWarning(m.filename, section, None, text_warnings(
            "PRAGMA foreign_keys", version)[0].replace("'-- migrate:", "'# migrate:")))
    if not replay:
        return False
    func = m.function(section)
    if func is None:
        return replay
    before = {name: cascading_children(conn, name) for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    conn.execute("SAVEPOINT lint")
    try:
        m.call(conn, section)
        conn.execute("RELEASE lint")
    except Exception as exc:
        conn.execute("ROLLBACK TO lint")
        conn.execute("RELEASE lint")
        detail = getattr(exc, "detail", None) or exc
        warnings.append(LintWarning(m.filename, section, None,
                                    f"{section}() fails against the planned schema: {detail}"))
        replay = False
    finally:
        conn.set_trace_callback(None)
    for statement in traced:
        if statement.strip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            continue
        for message in text_warnings(statement, version):
            if "PRAGMA foreign_keys" not in message:
                warnings.append(LintWarning(m.filename, section, None, message))
        match = _DROP_TABLE.match(code_only(statement))
        if match and not m.foreign_keys_off:
            children = before.get(_unquote(match.group(1)))
            if children:
                warnings.append(LintWarning(
                    m.filename, section, None,
                    f"DROP TABLE {_unquote(match.group(1))} deletes the rows of "
                    f"{', '.join(children)} (ON DELETE CASCADE) while foreign keys are on; "
                    "declare '# migrate:foreign_keys off'"))
    return replay
