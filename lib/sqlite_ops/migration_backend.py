"""The backend: the ``schema_migrations`` records and the one transaction each
migration runs in (yoyo's ``backends/base.py``). Imports only ``.common`` and
the model (:mod:`.migration_files`, :mod:`.migration_schema`).

Each migration, its validation and its record commit in one ``BEGIN
IMMEDIATE`` transaction (:class:`Transaction`); the records table is created,
or sqlite-ops' older layout upgraded, inside the first migration's
transaction (:func:`prepare_records`), so a run that fails writes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable

from .common import EX_FAIL, EX_USAGE, EX_VERIFY, OpsError, quote_ident
from .migration_files import Migration, MigrationFailed, _snippet
from .migration_schema import TABLE, table_columns

TABLE_SQL = (
    "CREATE TABLE schema_migrations (\n"
    "    version INTEGER PRIMARY KEY,\n"
    "    description TEXT NOT NULL,\n"
    "    checksum TEXT NOT NULL,\n"
    "    applied_at TEXT NOT NULL,\n"
    "    execution_ms INTEGER\n"
    ")"
)

# Layouts of sqlite-ops' own bookkeeping table that read_applied() recognises.
LAYOUT_CURRENT = "current"
LAYOUT_NONE = "none"
LAYOUT_LEGACY = "legacy"  # schema_migrations(id, version TEXT, applied_at, description)
LEGACY_COLUMNS = {"id", "version", "applied_at"}

# ------------------------------------------------------------------ bookkeeping table


class Applied:
    """A ``schema_migrations`` row."""

    __slots__ = ("version", "description", "checksum", "applied_at", "execution_ms")

    def __init__(self, version: int, description: str, checksum: str, applied_at: str,
                 execution_ms: int | None) -> None:
        self.version = version
        self.description = description
        self.checksum = checksum
        self.applied_at = applied_at
        self.execution_ms = execution_ms



def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _legacy_version(value: object, table: str) -> int:
    text = str(value).strip()
    digits = ""
    for char in text:
        if not (char.isascii() and char.isdigit()):
            break
        digits += char
    if not digits:
        raise OpsError(EX_USAGE, f"{table} holds version {value!r}, which has no number; "
                                 "fix that row, then run migrate again")
    return int(digits)


def read_applied(conn: sqlite3.Connection, migrations: Iterable[Migration] = ()
                 ) -> tuple[str, dict[int, Applied]]:
    """The applied migrations and the layout they were found in (read-only).

    Current layout: one query. sqlite-ops' older layout
    (``schema_migrations(id, version TEXT, applied_at, description)``) is read as
    it is; :func:`upgrade_layout` rewrites it, inside the run's first
    transaction. Legacy rows have no checksum (``""``): the file's checksum is
    adopted when the table is upgraded. Another tool's history (a
    ``schema_version`` table, say) is never read as ours: its numbers belong to
    another sequence (see :func:`.migration_schema.foreign_history`).
    """
    try:
        rows = conn.execute("SELECT version, description, checksum, applied_at, execution_ms "
                            "FROM schema_migrations").fetchall()
    except sqlite3.OperationalError:
        pass
    else:
        return LAYOUT_CURRENT, {row[0]: Applied(*row) for row in rows}
    if TABLE in _table_names(conn):
        columns = table_columns(conn, TABLE)
        if not LEGACY_COLUMNS <= set(columns):
            raise OpsError(EX_USAGE, f"the table {TABLE} ({', '.join(columns)}) is not "
                                     "sqlite-ops' history but another tool's; sqlite-ops "
                                     "leaves it alone and cannot run beside it: rename it "
                                     "(ALTER TABLE ... RENAME TO ...) if that tool is gone")
        return LAYOUT_LEGACY, _read_versions_table(conn, TABLE)
    return LAYOUT_NONE, {}


def _read_versions_table(conn: sqlite3.Connection, table: str) -> dict[int, Applied]:
    columns = table_columns(conn, table)
    desc_col = "description" if "description" in columns else "NULL"
    sql = (f"SELECT version, {desc_col}, applied_at FROM {quote_ident(table)} ORDER BY id")
    result: dict[int, Applied] = {}
    for value, description, applied_at in conn.execute(sql):
        if value is None:
            continue
        version = _legacy_version(value, table)
        if version not in result:
            result[version] = Applied(version, description or "", "", applied_at or "", None)
    return result


def now_iso() -> str:
    """UTC time with microseconds, so applied order is also time order."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def prepare_records(conn: sqlite3.Connection, migrations: list[Migration],
                    adopt: list[Migration] = ()) -> str | None:  # type: ignore[assignment]
    """Make ``schema_migrations`` current, inside the caller's transaction.

    Creates it (recording ``adopt`` as applied: a verified adoption), or
    rewrites sqlite-ops' older layout in place keeping every row. Re-reads the
    layout first, so a run that lost a race to another one does nothing.
    Returns the layout that was upgraded ("legacy"), else None.
    """
    layout, applied = read_applied(conn, migrations)
    if layout == LAYOUT_CURRENT:
        return None
    rows = upgrade_layout(conn, layout, applied, migrations)
    if layout == LAYOUT_NONE and adopt:
        stamp = now_iso()
        conn.executemany(
            "INSERT INTO schema_migrations (version, description, checksum, applied_at, "
            "execution_ms) VALUES (?, ?, ?, ?, NULL)",
            [(m.version, m.name, m.checksum, stamp) for m in adopt if m.version not in rows])
    return layout if layout != LAYOUT_NONE else None


def upgrade_layout(conn: sqlite3.Connection, layout: str, applied: dict[int, Applied],
                   migrations: list[Migration]) -> dict[int, Applied]:
    """Create the table, or rewrite the older layout in place keeping every row.

    Must be called inside a transaction. Returns the rows as now recorded.
    """
    if layout == LAYOUT_CURRENT:
        return applied
    by_version = {m.version: m for m in migrations}
    stamp = now_iso()
    rows = {}
    for version in sorted(applied):
        old = applied[version]
        m = by_version.get(version)
        rows[version] = Applied(
            version,
            old.description or (m.name if m else f"migration {version}"),
            m.checksum if m else "",
            old.applied_at or stamp,
            None,
        )
    if layout == LAYOUT_LEGACY:
        conn.execute("ALTER TABLE schema_migrations RENAME TO _schema_migrations_legacy")
    conn.execute(TABLE_SQL)
    conn.executemany(
        "INSERT INTO schema_migrations (version, description, checksum, applied_at, "
        "execution_ms) VALUES (?, ?, ?, ?, ?)",
        [(r.version, r.description, r.checksum, r.applied_at, r.execution_ms)
         for r in rows.values()],
    )
    if layout == LAYOUT_LEGACY:
        conn.execute("DROP TABLE _schema_migrations_legacy")
    return rows


# --------------------------------------------------------------------------- applying


def _run_sql(conn: sqlite3.Connection, m: Migration, section: str) -> None:
    statements = m.statements.get(section) or []
    for number, statement in enumerate(statements, 1):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationFailed(EX_FAIL, m, f"at statement {number} of its {section} section "
                                              f"({_snippet(statement)})", str(exc)) from None


def _validate(conn: sqlite3.Connection, m: Migration) -> None:
    if m.kind == "py":
        if m.function("validate") is None:
            return
        if not m.call(conn, "validate"):
            raise MigrationFailed(EX_VERIFY, m, "validation", "validate() returned false")
        return
    for number, query in enumerate(m.statements.get("validate") or [], 1):
        try:
            row = conn.execute(query).fetchone()
        except sqlite3.Error as exc:
            raise MigrationFailed(EX_FAIL, m, f"at validate query {number} "
                                              f"({_snippet(query)})", str(exc)) from None
        if not row or not row[0]:
            raise MigrationFailed(EX_VERIFY, m, f"validation: query {number} "
                                                f"({_snippet(query)}) returned false", "")


def _foreign_key_problems(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("PRAGMA foreign_key_check").fetchall()


class Transaction:
    """``with Transaction(conn):`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back
    on any exception (the one place the runner opens and closes transactions).
    ``rollback()`` ends it early, without an error (nothing to do after all)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Transaction:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        if not self.conn.in_transaction:
            return False
        self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")
        return False


def apply_one(conn: sqlite3.Connection, m: Migration, direction: str = "up",
              prepare: Callable[[sqlite3.Connection], object] | None = None) -> int | None:
    """Apply (``up``) or revert (``down``) one migration and record it, atomically.

    Returns the milliseconds it took, or None when another run had already done it
    (the row is re-checked inside the transaction). ``conn`` must be in autocommit
    mode (``isolation_level=None``); it is left with its foreign_keys setting.
    ``prepare(conn)`` runs first inside the same transaction (it creates or
    upgrades the records table, so that a failure leaves no trace of it).
    """
    m.load()
    restore_fk = None
    if m.foreign_keys_off:
        restore_fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: do it first
    try:
        if m.no_transaction:
            return _apply_outside_transaction(conn, m, direction, prepare)
        started = time.perf_counter()
        with Transaction(conn) as transaction:
            if prepare is not None:
                prepare(conn)
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                (m.version,)).fetchone()
            if (direction == "up") == bool(done):
                transaction.rollback()  # another run did it meanwhile
                return None
            _run_body(conn, m, direction)
            _finish(conn, m, direction, started)
        return int((time.perf_counter() - started) * 1000)
    finally:
        if restore_fk is not None:
            conn.execute(f"PRAGMA foreign_keys = {'ON' if restore_fk else 'OFF'}")


def _run_body(conn: sqlite3.Connection, m: Migration, direction: str) -> None:
    if m.kind == "py":
        m.call(conn, direction)
    else:
        _run_sql(conn, m, direction)
    if not m.no_transaction and not conn.in_transaction:
        raise MigrationFailed(EX_FAIL, m, f"in its {direction} section",
                              "it ended the runner's transaction (COMMIT/ROLLBACK/BEGIN); "
                              "it may be partly applied", rolled_back=False)


def _finish(conn: sqlite3.Connection, m: Migration, direction: str, started: float) -> None:
    """Validation, the foreign-key check and the bookkeeping row: inside the transaction."""
    if direction == "up":
        _validate(conn, m)
    if m.foreign_keys_off:
        problems = _foreign_key_problems(conn)
        if problems:
            table, rowid, parent, _ = problems[0]
            raise MigrationFailed(
                EX_VERIFY, m, "the foreign-key check",
                f"{len(problems)} row(s) would break foreign keys (first: {table} rowid "
                f"{rowid} -> {parent})")
    if direction == "up":
        conn.execute(
            "INSERT INTO schema_migrations (version, description, checksum, applied_at, "
            "execution_ms) VALUES (?, ?, ?, ?, ?)",
            (m.version, m.name, m.checksum, now_iso(),
             int((time.perf_counter() - started) * 1000)))
    else:
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (m.version,))


def _apply_outside_transaction(conn: sqlite3.Connection, m: Migration, direction: str,
                               prepare: Callable[[sqlite3.Connection], object] | None) -> int:
    started = time.perf_counter()
    try:
        _run_body(conn, m, direction)
    except MigrationFailed as exc:
        exc.rolled_back = False
        raise
    try:
        with Transaction(conn):
            if prepare is not None:
                prepare(conn)
            _finish(conn, m, direction, started)
    except MigrationFailed as exc:
        exc.rolled_back = False  # the body itself has run and cannot be undone
        raise
    return int((time.perf_counter() - started) * 1000)


# ----------------------------------------------------------------------------- schema


def memory_database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(TABLE_SQL)
    return conn
