"""Numbered schema migrations for an SQLite database.

A migration is a file in the migrations directory:

* ``NNN_name.sql`` with ``-- migrate:up``, ``-- migrate:down`` and optional
  ``-- migrate:validate`` sections (no markers at all: the whole file is "up"),
  plus the directives ``-- migrate:foreign_keys off`` and ``-- migrate:no-transaction``;
* ``NNN_name.py`` defining ``up(conn)``, optionally ``down(conn)`` and
  ``validate(conn)``, with the same directives written as ``# migrate:...`` lines.

:class:`Migrator` plans, applies and reverts them. Each migration, its validation
and its ``schema_migrations`` row commit in one ``BEGIN IMMEDIATE`` transaction
(statements are split with :func:`sqlite3.complete_statement` and executed one by
one: never ``executescript()``, which commits first and stops half-way), under
the sqlite-ops lock shared with the backup, restore and maintenance scripts.

The ``up`` no-op runs on every deploy, so this module imports only what that
path needs; everything else is imported where it is used.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable

from .common import (
    EX_BUSY,
    EX_FAIL,
    EX_USAGE,
    EX_VERIFY,
    LOCK_HELD_ENV,
    REPO_ROOT_STR,
    OpsError,
    OpsLock,
    is_sqlite_file,
    quote_ident,
    readonly_uri,
    roll_back_hot_journal,
)

TABLE = "schema_migrations"
TABLE_SQL = (
    "CREATE TABLE schema_migrations (\n"
    "    version INTEGER PRIMARY KEY,\n"
    "    description TEXT NOT NULL,\n"
    "    checksum TEXT NOT NULL,\n"
    "    applied_at TEXT NOT NULL,\n"
    "    execution_ms INTEGER\n"
    ")"
)
SCHEMA_FILE = "schema.sql"
BACKUP_SCRIPT_ENV = "SQLITE_OPS_BACKUP_SCRIPT"
SECTIONS = ("up", "down", "validate")

# Layouts of the bookkeeping table that read_applied() recognises.
LAYOUT_CURRENT = "current"
LAYOUT_NONE = "none"
LAYOUT_LEGACY = "legacy"  # schema_migrations(id, version TEXT, applied_at, description)
LAYOUT_SCHEMA_VERSION = "schema_version"  # a schema_version table


class MigrationFailed(OpsError):
    """A migration's statement, code or validation failed; its transaction was rolled back."""

    def __init__(self, code: int, migration: Migration, where: str, detail: str,
                 rolled_back: bool = True) -> None:
        self.migration = migration
        self.where = where
        self.detail = detail
        self.rolled_back = rolled_back
        super().__init__(code, f"{migration.filename} failed {where}: {detail}")


# --------------------------------------------------------------------------- files


def file_checksum(data: bytes) -> str:
    """SHA-256 of a migration file with a UTF-8 BOM and CRLF/CR line endings normalised."""
    sha256 = _sha256()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return sha256(data).hexdigest()


_SHA256: Callable | None = None


def _sha256() -> Callable:
    """SHA-256 without loading OpenSSL when CPython's built-in module is there.

    ``hashlib`` costs more to import than the whole ``up`` no-op does otherwise;
    the digests are identical.
    """
    global _SHA256
    if _SHA256 is None:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            try:
                from _sha256 import sha256  # CPython 3.9-3.11
            except ImportError:
                from hashlib import sha256
        _SHA256 = sha256
    return _SHA256


def parse_filename(name: str) -> tuple[int, str] | None:
    """``003_add_vendor.sql`` -> ``(3, "add_vendor")``; None for any other file."""
    stem, dot, ext = name.rpartition(".")
    if not dot or ext not in ("sql", "py"):
        return None
    digits, sep, label = stem.partition("_")
    if not sep or not label or not digits.isdigit() or not digits.isascii():
        return None
    return int(digits), label


class Migration:
    """One migration file. Cheap until :meth:`load` is called (only the checksum reads it)."""

    def __init__(self, version: int, name: str, path: str) -> None:
        self.version = version
        self.name = name
        self.path = path
        self.filename = os.path.basename(path)
        self.kind = "py" if path.endswith(".py") else "sql"
        self._data: bytes | None = None
        self._checksum: str | None = None
        self._loaded = False
        self.statements: dict[str, list[str] | None] = {}
        self.foreign_keys_off = False
        self.no_transaction = False
        self._functions: dict[str, Callable] = {}

    def __repr__(self) -> str:
        return f"Migration({self.filename!r})"

    def read(self) -> bytes:
        if self._data is None:
            try:  # os.read: half the cost of open().read(), and up reads every file
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    chunks = [os.read(fd, 1 << 16)]
                    while len(chunks[-1]) == 1 << 16:  # a short read is the end of file
                        chunks.append(os.read(fd, 1 << 16))
                finally:
                    os.close(fd)
                self._data = b"".join(chunks)
            except OSError as exc:
                raise OpsError(EX_USAGE, f"cannot read {self.path}: {exc.strerror}") from None
        return self._data

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            self._checksum = file_checksum(self.read())
        return self._checksum

    @property
    def text(self) -> str:
        data = self.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise OpsError(EX_USAGE, f"{self.filename} is not UTF-8 text") from None
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def load(self) -> Migration:
        """Parse the file (SQL sections, or the Python module's functions) and its directives."""
        if self._loaded:
            return self
        text = self.text
        if self.kind == "sql":
            sections, directives = parse_sql_sections(text, self.filename)
            self.statements = {
                key: (split_statements(body) if body is not None else None)
                for key, body in sections.items()
            }
        else:
            directives = _directives(text, "#", self.filename)
            namespace: dict[str, object] = {"__name__": f"migration_{self.version}",
                                            "__file__": self.path}
            try:
                exec(compile(text, self.path, "exec"), namespace)  # noqa: S102 - migration code
            except Exception as exc:  # the migration's own code: report, don't crash
                raise OpsError(EX_USAGE, f"cannot load {self.filename}: "
                                         f"{type(exc).__name__}: {exc}") from None
            for key in SECTIONS:
                func = namespace.get(key)
                if func is not None and not callable(func):
                    raise OpsError(EX_USAGE, f"{self.filename}: {key} must be a function")
                if func is not None:
                    self._functions[key] = func  # type: ignore[assignment]
            if "up" not in self._functions:
                raise OpsError(EX_USAGE, f"{self.filename} defines no up(conn) function")
        self.foreign_keys_off = "foreign_keys off" in directives
        self.no_transaction = "no-transaction" in directives
        self._loaded = True
        return self

    @property
    def has_down(self) -> bool:
        self.load()
        if self.kind == "py":
            return "down" in self._functions
        return bool(self.statements.get("down"))

    def function(self, section: str) -> Callable | None:
        self.load()
        return self._functions.get(section)


def _directive_of(line: str, comment: str) -> str | None:
    stripped = line.strip()
    if not stripped.startswith(comment):
        return None
    body = stripped[len(comment):].strip()
    if not body.startswith("migrate:"):
        return None
    return " ".join(body[len("migrate:"):].split()).lower()


def _directives(text: str, comment: str, filename: str) -> set[str]:
    found = set()
    for number, line in enumerate(text.split("\n"), 1):
        directive = _directive_of(line, comment)
        if directive is None:
            continue
        if directive not in ("foreign_keys off", "no-transaction"):
            raise OpsError(EX_USAGE, f"{filename} line {number}: unknown directive "
                                     f"'{comment} migrate:{directive}'")
        found.add(directive)
    return found


def parse_sql_sections(text: str, filename: str = "migration") -> tuple[dict[str, str | None],
                                                                        set[str]]:
    """Split an SQL migration into its up/down/validate sections and its directives.

    A file without section markers is all "up". With markers, anything before the
    first one may only be comments and directives.
    """
    sections: dict[str, list[str]] = {}
    directives: set[str] = set()
    preamble: list[str] = []
    current: list[str] = preamble
    for number, line in enumerate(text.split("\n"), 1):
        directive = _directive_of(line, "--")
        if directive is None:
            current.append(line)
            continue
        if directive in SECTIONS:
            if directive in sections:
                raise OpsError(EX_USAGE, f"{filename} line {number}: a second "
                                         f"'-- migrate:{directive}' section")
            current = sections[directive] = []
        elif directive in ("foreign_keys off", "no-transaction"):
            directives.add(directive)
        else:
            raise OpsError(EX_USAGE, f"{filename} line {number}: unknown directive "
                                     f"'-- migrate:{directive}'")
    if not sections:
        return {"up": "\n".join(preamble), "down": None, "validate": None}, directives
    if has_code("\n".join(preamble)):
        raise OpsError(EX_USAGE, f"{filename}: SQL before the first '-- migrate:' section marker")
    result: dict[str, str | None] = {key: None for key in SECTIONS}
    for key, lines in sections.items():
        result[key] = "\n".join(lines)
    if result["up"] is None:
        raise OpsError(EX_USAGE, f"{filename} has section markers but no '-- migrate:up'")
    return result, directives


def has_code(text: str) -> bool:
    """True when ``text`` holds anything besides whitespace, semicolons and comments."""
    return _code_start(text) != -1


def _code_start(text: str) -> int:
    """Index of the first character that is not whitespace, ``;`` or comment; -1 if none."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace() or char == ";":
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            if end == -1:
                return -1
            i = end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end == -1:
                return -1
            i = end + 2
        else:
            return i
    return -1


def split_statements(sql: str) -> list[str]:
    """Split SQL into single statements at the semicolons SQLite itself would end them at.

    ``sqlite3.complete_statement`` decides, so a ``;`` inside a string literal, a
    comment or a ``CREATE TRIGGER ... BEGIN ...; END`` body does not split.
    """
    statements = []
    start = 0
    pos = sql.find(";")
    while pos != -1:
        chunk = sql[start:pos + 1]
        if sqlite3.complete_statement(chunk):
            begin = _code_start(chunk)
            if begin != -1:  # leading comments belong to no statement
                statements.append(chunk[begin:].strip())
            start = pos + 1
        pos = sql.find(";", pos + 1)
    rest = sql[start:]
    begin = _code_start(rest)
    if begin != -1:
        statements.append(rest[begin:].strip())
    return statements


def discover(migrations_dir: str) -> list[Migration]:
    """The migrations in a directory, in version order. Two files with one version: error."""
    try:
        entries = os.listdir(migrations_dir)
    except FileNotFoundError:
        raise OpsError(EX_USAGE, f"migrations directory {migrations_dir} does not exist; "
                                 "set --migrations or MIGRATIONS_DIR") from None
    except OSError as exc:
        raise OpsError(EX_USAGE, f"cannot read migrations directory {migrations_dir}: "
                                 f"{exc.strerror}") from None
    found: dict[int, Migration] = {}
    for entry in entries:
        parsed = parse_filename(entry)
        if parsed is None:
            continue
        version, name = parsed
        if version in found:
            first, second = sorted((found[version].filename, entry))
            raise OpsError(EX_USAGE, f"two migrations have version {version}: {first} and "
                                     f"{second}; renumber one of them")
        found[version] = Migration(version, name, os.path.join(migrations_dir, entry))
    return [found[v] for v in sorted(found)]


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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))]


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

    Current layout: one query. The older layouts (``schema_migrations(id, version
    TEXT, applied_at, description)``, or a ``schema_version`` table) are read as
    they are; :func:`upgrade_layout` rewrites them. Legacy rows have no checksum
    (``""``): the file's checksum is adopted when the table is upgraded. A
    ``schema_version`` table says "the database is at version N", so every one of
    ``migrations`` numbered up to N counts as applied.
    """
    try:
        rows = conn.execute("SELECT version, description, checksum, applied_at, execution_ms "
                            "FROM schema_migrations").fetchall()
    except sqlite3.OperationalError:
        pass
    else:
        return LAYOUT_CURRENT, {row[0]: Applied(*row) for row in rows}
    tables = _table_names(conn)
    if TABLE in tables:
        return LAYOUT_LEGACY, _read_versions_table(conn, TABLE)
    if "schema_version" in tables:
        applied = _read_versions_table(conn, "schema_version")
        through = max(applied, default=0)
        for m in migrations:
            if m.version <= through and m.version not in applied:
                applied[m.version] = Applied(m.version, m.name, "", "", None)
        return LAYOUT_SCHEMA_VERSION, applied
    return LAYOUT_NONE, {}


def _read_versions_table(conn: sqlite3.Connection, table: str) -> dict[int, Applied]:
    columns = _columns(conn, table)
    if "version" in columns:
        version_col = "version"
    elif len(columns) == 1:
        version_col = columns[0]
    else:
        raise OpsError(EX_USAGE, f"table {table} has no version column; move it aside and "
                                 "use 'migrate baseline V'")
    applied_col = "applied_at" if "applied_at" in columns else "NULL"
    desc_col = "description" if "description" in columns else "NULL"
    order = "rowid" if "id" not in columns else "id"
    sql = (f"SELECT {quote_ident(version_col)}, {desc_col}, {applied_col} "
           f"FROM {quote_ident(table)} ORDER BY {order}")
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


def upgrade_layout(conn: sqlite3.Connection, layout: str, applied: dict[int, Applied],
                   migrations: list[Migration]) -> dict[int, Applied]:
    """Create the table, or rewrite an older layout in place keeping every row.

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
    elif layout == LAYOUT_SCHEMA_VERSION:
        conn.execute("DROP TABLE schema_version")
    return rows


# ---------------------------------------------------------------------------- status


class Entry:
    """One line of ``status``: a migration file and/or a ``schema_migrations`` row."""

    __slots__ = ("version", "name", "filename", "state", "applied_at", "checksum",
                 "recorded_checksum", "execution_ms", "out_of_order")

    def __init__(self, version: int, name: str, filename: str | None, state: str,
                 applied_at: str | None = None, checksum: str | None = None,
                 recorded_checksum: str | None = None, execution_ms: int | None = None,
                 out_of_order: bool = False) -> None:
        self.version = version
        self.name = name
        self.filename = filename
        self.state = state  # applied | edited | missing | pending
        self.applied_at = applied_at
        self.checksum = checksum
        self.recorded_checksum = recorded_checksum
        self.execution_ms = execution_ms
        self.out_of_order = out_of_order

    def as_dict(self) -> dict[str, object]:
        return {key: getattr(self, key) for key in self.__slots__}


def compare(migrations: list[Migration], applied: dict[int, Applied]) -> list[Entry]:
    """Files against recorded rows, in version order."""
    highest = max(applied, default=None)
    files = {m.version: m for m in migrations}
    entries = []
    for version in sorted(set(files) | set(applied)):
        m = files.get(version)
        row = applied.get(version)
        if row is None:
            assert m is not None
            entries.append(Entry(version, m.name, m.filename, "pending", checksum=m.checksum,
                                 out_of_order=highest is not None and version < highest))
        elif m is None:
            entries.append(Entry(version, row.description, None, "missing", row.applied_at,
                                 None, row.checksum, row.execution_ms))
        else:
            state = "applied" if not row.checksum or row.checksum == m.checksum else "edited"
            entries.append(Entry(version, m.name, m.filename, state, row.applied_at,
                                 m.checksum, row.checksum, row.execution_ms))
    return entries


class Status:
    """What ``migrate status`` reports."""

    def __init__(self, db_path: str, migrations_dir: str, exists: bool, layout: str,
                 entries: list[Entry]) -> None:
        self.db_path = db_path
        self.migrations_dir = migrations_dir
        self.exists = exists
        self.layout = layout
        self.entries = entries

    @property
    def current_version(self) -> int | None:
        return max((e.version for e in self.entries if e.state != "pending"), default=None)

    def as_dict(self) -> dict[str, object]:
        files = [e.version for e in self.entries if e.filename]
        return {
            "database": self.db_path,
            "database_exists": self.exists,
            "migrations_dir": self.migrations_dir,
            "layout": self.layout,
            "current_version": self.current_version,
            "latest_version": max(files, default=None),
            "pending": [e.version for e in self.entries if e.state == "pending"],
            "edited": [e.version for e in self.entries if e.state == "edited"],
            "missing": [e.version for e in self.entries if e.state == "missing"],
            "migrations": [e.as_dict() for e in self.entries],
        }


# --------------------------------------------------------------------------- applying


class MigrationConnection:
    """The connection a Python migration gets: the runner's, minus transaction control.

    The runner owns the transaction that also records the migration, so
    ``commit()``, ``rollback()`` and ``executescript()`` (which commits first)
    raise instead of splitting it.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.last_sql: str | None = None

    def execute(self, sql: str, parameters: Iterable = ()) -> sqlite3.Cursor:
        self.last_sql = sql
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, seq: Iterable) -> sqlite3.Cursor:
        self.last_sql = sql
        return self._conn.executemany(sql, seq)

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise sqlite3.ProgrammingError(
            "a migration must not commit, roll back or call executescript(): the runner "
            "commits it together with its schema_migrations row")

    commit = rollback = executescript = _refuse

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def _snippet(sql: str | None) -> str:
    if not sql:
        return ""
    text = " ".join(sql.split())
    return text if len(text) <= 70 else text[:67] + "..."


def _run_sql(conn: sqlite3.Connection, m: Migration, section: str) -> None:
    statements = m.statements.get(section) or []
    for number, statement in enumerate(statements, 1):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationFailed(EX_FAIL, m, f"at statement {number} of its {section} section "
                                              f"({_snippet(statement)})", str(exc)) from None


def _run_python(conn: sqlite3.Connection, m: Migration, section: str) -> object:
    func = m.function(section)
    assert func is not None
    proxy = MigrationConnection(conn)
    try:
        return func(proxy)
    except Exception as exc:
        import traceback

        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if f.filename == m.path]
        where = f"in {section}()" + (f" at line {lines[-1]}" if lines else "")
        if proxy.last_sql:
            where += f" ({_snippet(proxy.last_sql)})"
        raise MigrationFailed(EX_FAIL, m, where, f"{type(exc).__name__}: {exc}") from None


def _validate(conn: sqlite3.Connection, m: Migration) -> None:
    if m.kind == "py":
        if m.function("validate") is None:
            return
        if not _run_python(conn, m, "validate"):
            raise MigrationFailed(EX_VERIFY, m, "validation", "validate(conn) returned false")
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


def apply_one(conn: sqlite3.Connection, m: Migration, direction: str = "up") -> int | None:
    """Apply (``up``) or revert (``down``) one migration and record it, atomically.

    Returns the milliseconds it took, or None when another run had already done it
    (the row is re-checked inside the transaction). ``conn`` must be in autocommit
    mode (``isolation_level=None``); it is left with its foreign_keys setting.
    """
    m.load()
    restore_fk = None
    if m.foreign_keys_off:
        restore_fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: do it first
    try:
        if m.no_transaction:
            return _apply_outside_transaction(conn, m, direction)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                (m.version,)).fetchone()
            if (direction == "up") == bool(done):
                conn.execute("ROLLBACK")
                return None
            _run_body(conn, m, direction)
            _finish(conn, m, direction, started)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int((time.perf_counter() - started) * 1000)
    finally:
        if restore_fk is not None:
            conn.execute(f"PRAGMA foreign_keys = {'ON' if restore_fk else 'OFF'}")


def _run_body(conn: sqlite3.Connection, m: Migration, direction: str) -> None:
    if m.kind == "py":
        _run_python(conn, m, direction)
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


def _apply_outside_transaction(conn: sqlite3.Connection, m: Migration, direction: str) -> int:
    started = time.perf_counter()
    try:
        _run_body(conn, m, direction)
    except MigrationFailed as exc:
        exc.rolled_back = False
        raise
    conn.execute("BEGIN IMMEDIATE")
    try:
        _finish(conn, m, direction, started)
        conn.execute("COMMIT")
    except MigrationFailed as exc:
        conn.execute("ROLLBACK")
        exc.rolled_back = False  # the body itself has run and cannot be undone
        raise
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int((time.perf_counter() - started) * 1000)


# ----------------------------------------------------------------------------- schema


_TYPE_ORDER = {"table": 0, "index": 1, "view": 2, "trigger": 3}


def schema_objects(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """(type, name, table, sql) of the user schema in a stable order; no bookkeeping."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND substr(name, 1, 7) != 'sqlite_' AND name != 'schema_migrations' "
        "AND tbl_name != 'schema_migrations'").fetchall()
    return sorted(rows, key=lambda r: (_TYPE_ORDER.get(r[0], 9), r[1]))


def render_schema(objects: list[tuple[str, str, str, str]], version: int | None) -> str:
    lines = [
        f"-- The schema the migrations in this directory produce (version {version}).",
        "-- Generated by 'migrate schema'; do not edit. 'migrate schema --check' compares",
        "-- a live database with it.",
        "",
    ]
    for _type, _name, _table, sql in objects:
        lines.append(sql.strip() + ";")
        lines.append("")
    return "\n".join(lines)


def memory_database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(TABLE_SQL)
    return conn


def normalise_sql(sql: str) -> str:
    text = " ".join(sql.replace('"', "").replace("`", "").split()).lower()
    for mark in "(),":
        text = text.replace(f" {mark}", mark).replace(f"{mark} ", mark)
    return text


def schema_drift(live: sqlite3.Connection, reference: sqlite3.Connection) -> list[str]:
    """Differences of the live schema from the reference one, object by object."""
    want = {(t, n): (tbl, sql) for t, n, tbl, sql in schema_objects(reference)}
    have = {(t, n): (tbl, sql) for t, n, tbl, sql in schema_objects(live)}
    drift = []
    for key in sorted(set(want) | set(have), key=lambda k: (_TYPE_ORDER.get(k[0], 9), k[1])):
        kind, name = key
        if key not in have:
            drift.append(f"{kind} {name}: missing from the database")
        elif key not in want:
            drift.append(f"{kind} {name}: not in schema.sql")
        elif kind == "table":
            details = _table_drift(live, reference, name)
            if not details and normalise_sql(have[key][1]) != normalise_sql(want[key][1]):
                details = ["definition differs (constraints or defaults)"]
            drift.extend(f"table {name}: {d}" for d in details)
        elif normalise_sql(have[key][1]) != normalise_sql(want[key][1]):
            drift.append(f"{kind} {name}: definition differs")
    return drift


def _table_drift(live: sqlite3.Connection, ref: sqlite3.Connection, table: str) -> list[str]:
    query = 'SELECT name, upper(type), "notnull", dflt_value, pk FROM pragma_table_xinfo(?)'
    have = {r[0]: r for r in live.execute(query, (table,))}
    want = {r[0]: r for r in ref.execute(query, (table,))}
    details = [f"column {c} missing" for c in want if c not in have]
    details += [f"column {c} not in schema.sql" for c in have if c not in want]
    for column in want:
        if column in have and have[column] != want[column]:
            details.append(f"column {column} differs (type/not null/default/key)")
    fk_query = ('SELECT "table", "from", "to", on_update, on_delete '
                "FROM pragma_foreign_key_list(?) ORDER BY id, seq")
    if live.execute(fk_query, (table,)).fetchall() != ref.execute(fk_query, (table,)).fetchall():
        details.append("foreign keys differ")
    return details


# --------------------------------------------------------------------------- migrator


class UpResult:
    def __init__(self) -> None:
        self.planned: list[Migration] = []
        self.applied: list[tuple[Migration, int]] = []
        self.backup: str | None = None
        self.warnings: list[str] = []
        self.upgraded_layout: str | None = None


class Migrator:
    """Migrations of one database from one directory.

    ``backup_script`` is run as ``SCRIPT --db DB --dir BACKUP_DIR --quiet`` before
    changes and must print ``Backup completed: <path>`` last.
    """

    def __init__(self, db_path: str, migrations_dir: str, *, lock_timeout: float = 0,
                 backup_dir: str | None = None, backup_script: str | None = None) -> None:
        self.db_path = os.fspath(db_path)
        self.migrations_dir = os.fspath(migrations_dir)
        self.lock_timeout = lock_timeout
        self.backup_dir = backup_dir
        self.backup_script = backup_script or os.environ.get(BACKUP_SCRIPT_ENV) or None
        self._migrations: list[Migration] | None = None

    # -- inputs

    @property
    def migrations(self) -> list[Migration]:
        if self._migrations is None:
            self._migrations = discover(self.migrations_dir)
        return self._migrations

    def _by_version(self) -> dict[int, Migration]:
        return {m.version: m for m in self.migrations}

    def _database_state(self) -> str:
        """"missing", "empty" (0 bytes: SQLite treats it as new) or "sqlite"; else exit 2."""
        path = self.db_path
        if not os.path.exists(path):
            return "missing"
        if os.path.isdir(path):
            raise OpsError(EX_USAGE, f"{path} is a directory, not an SQLite database")
        if os.path.getsize(path) == 0:
            return "empty"
        if not is_sqlite_file(path):
            raise OpsError(EX_USAGE, f"{path} is not an SQLite database; check --db / DB_PATH")
        return "sqlite"

    def connect(self, readonly: bool = False) -> sqlite3.Connection:
        """An autocommit connection (the runner issues BEGIN IMMEDIATE/COMMIT itself).

        Foreign keys are off, as SQLite opens every connection; ``up`` and ``down``
        turn them on before applying anything.
        """
        busy = max(float(self.lock_timeout), 5.0)
        try:
            if readonly:
                roll_back_hot_journal(self.db_path)
                conn = sqlite3.connect(readonly_uri(self.db_path), uri=True,
                                       isolation_level=None, timeout=busy)
            else:
                conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=busy)
        except sqlite3.Error as exc:
            raise OpsError(EX_USAGE, f"cannot open {self.db_path}: {exc}") from None
        return conn

    def _lock(self, what: str) -> OpsLock:
        return OpsLock(self.db_path, self.lock_timeout, what)

    def _read(self, conn: sqlite3.Connection) -> tuple[str, dict[int, Applied]]:
        try:
            return read_applied(conn, self.migrations)
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.db_path, exc) from None

    # -- read-only commands

    def status(self) -> Status:
        state = self._database_state()
        layout, applied = LAYOUT_NONE, {}
        if state == "sqlite":
            conn = self.connect(readonly=True)
            try:
                layout, applied = self._read(conn)
            finally:
                conn.close()
        return Status(self.db_path, self.migrations_dir, state != "missing", layout,
                      compare(self.migrations, applied))

    def validate(self, raise_on_edited: bool = True) -> list[Entry]:
        """Applied migrations against their files; exit 3 naming every edited one.

        A missing file is reported (state ``missing``) but is not a failure:
        squashing old migrations into a baseline removes files on purpose.
        """
        entries = [e for e in self.status().entries if e.state != "pending"]
        if raise_on_edited:
            refuse_edited(entries, changed="nothing was changed")
        return entries

    # -- up

    def plan_up(self, applied: dict[int, Applied], to: int | None = None,
                allow_out_of_order: bool = False) -> list[Migration]:
        if to is not None and to not in self._by_version() and to not in applied:
            raise OpsError(EX_USAGE, f"there is no migration {to} in {self.migrations_dir}")
        entries = compare(self.migrations, applied)
        refuse_edited(entries)
        pending = [e for e in entries if e.state == "pending"
                   and (to is None or e.version <= to)]
        late = [e for e in pending if e.out_of_order]
        if late and not allow_out_of_order:
            names = ", ".join(e.filename or str(e.version) for e in late)
            raise OpsError(EX_VERIFY, f"{names}: older than the newest applied migration "
                                      f"({max(applied)}) but never applied; renumber it, or "
                                      "run 'migrate up --allow-out-of-order' if it is "
                                      "independent of the later ones")
        by_version = self._by_version()
        return [by_version[e.version] for e in pending]

    def up(self, to: int | None = None, *, dry_run: bool = False, backup: bool = True,
           allow_out_of_order: bool = False,
           progress: Callable[[Migration, int | None], None] | None = None,
           notice: Callable[[str], None] | None = None,
           on_backup: Callable[[str], None] | None = None) -> UpResult:
        """Apply the pending migrations (up to ``to``), one transaction each."""
        result = UpResult()
        state = self._database_state()
        if dry_run:
            return self._dry_run_up(state, to, allow_out_of_order, result)
        if state == "missing":  # refuse a bad plan before creating anything
            self.plan_up({}, to, allow_out_of_order)
            parent = os.path.dirname(os.path.abspath(self.db_path))
            if not os.path.isdir(parent):  # a wrong DB_PATH, not a first deploy
                raise OpsError(EX_USAGE, f"directory {parent} does not exist: is --db "
                                         "(DB_PATH) right? Create it, owned by the "
                                         "application's user, and retry; nothing was changed")
            if notice:  # a mistyped --db must not pass unnoticed
                notice(f"{self.db_path} does not exist: creating a new database")
        elif self._up_to_date(to, allow_out_of_order):
            # The deploy-time no-op: one query, no lock (a backup running now is
            # no reason to fail a deploy that has nothing to do).
            return result
        with self._lock("migrate up"):
            conn = self.connect()
            try:
                layout, applied = self._read(conn)  # read again inside the lock
                plan = self.plan_up(applied, to, allow_out_of_order)
                result.planned = plan
                if not plan and layout == LAYOUT_CURRENT:
                    return result
                conn.execute("PRAGMA foreign_keys = ON")
                need_backup = backup or any(m.load().no_transaction for m in plan)
                if state == "sqlite" and need_backup:
                    if not backup and notice:
                        notice("taking a backup despite --no-backup: a migration runs "
                               "outside a transaction")
                    result.backup = self.take_backup()
                    if on_backup:
                        on_backup(result.backup)
                unadopted = layout == LAYOUT_NONE and bool(schema_objects(conn))
                self._ensure_layout(conn, layout, result)
                hint = ("; the database had tables but no migration history: if it was made "
                        "without migrations, adopt it with 'migrate baseline V'"
                        if unadopted else "")
                self._apply_plan(conn, plan, "up", result, progress, hint)
            finally:
                conn.close()
        return result

    def _apply_plan(self, conn: sqlite3.Connection, plan: list[Migration], direction: str,
                    result: UpResult, progress: Callable | None, hint: str = "") -> None:
        """Apply ``plan`` one migration at a time (each in its own transaction),
        recording each in ``result``. A failure says which migration and how to
        restore the backup; ``hint`` is added when nothing had been applied yet."""
        for m in plan:
            try:
                ms = apply_one(conn, m, direction)
            except MigrationFailed as exc:
                error = self._explain(exc, direction, result.applied, result.backup)
                if hint and not result.applied:
                    error.message += hint
                raise error from None
            except sqlite3.OperationalError as exc:
                raise _db_error(self.db_path, exc) from None
            if ms is not None:
                result.applied.append((m, ms))
            if progress:
                progress(m, ms)

    def _up_to_date(self, to: int | None, allow_out_of_order: bool) -> bool:
        """Nothing pending and nothing to upgrade (edited files still raise, exit 3)."""
        conn = self.connect()
        try:
            layout, applied = self._read(conn)
        finally:
            conn.close()
        return layout == LAYOUT_CURRENT and not self.plan_up(applied, to, allow_out_of_order)

    def _dry_run_up(self, state: str, to: int | None, allow_out_of_order: bool,
                    result: UpResult) -> UpResult:
        from .migration_lint import lint

        applied: dict[int, Applied] = {}
        base: list[str] = []
        if state == "sqlite":
            conn = self.connect(readonly=True)
            try:
                _, applied = self._read(conn)
                base = [row[3] for row in schema_objects(conn)]
            finally:
                conn.close()
        result.planned = self.plan_up(applied, to, allow_out_of_order)
        result.warnings = [str(w) for w in lint(result.planned, base_schema=base)]
        return result

    def _ensure_layout(self, conn: sqlite3.Connection, layout: str, result: UpResult) -> None:
        if layout == LAYOUT_CURRENT:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            layout, applied = read_applied(conn, self.migrations)
            if layout != LAYOUT_CURRENT:
                upgrade_layout(conn, layout, applied, self.migrations)
                if layout != LAYOUT_NONE:
                    result.upgraded_layout = layout
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _explain(self, exc: MigrationFailed, direction: str,
                 done: list[tuple[Migration, int]], backup: str | None) -> OpsError:
        verb = "applied" if direction == "up" else "reverted"
        parts = [exc.message]
        parts.append("it was rolled back" if exc.rolled_back
                     else "it ran outside a transaction and may be partly applied")
        parts.append(f"{verb} before it in this run: "
                     + (", ".join(m.filename for m, _ in done) if done else "none"))
        if backup:
            parts.append(f"to return to the state before this run: {self._undo(backup)}")
        else:
            parts.append("no backup was taken in this run")
        return OpsError(exc.code, "; ".join(parts))

    def _undo(self, backup: str) -> str:
        """The restore command for this run's backup, ready to paste: paths
        quoted, and --force when the backup holds foreign-key violations (the
        database had them; a restore would otherwise stop on them)."""
        import shlex

        from .catalog import MANIFEST_SUFFIX, read_manifest, records_fk_problems

        manifest, _ = read_manifest(backup + MANIFEST_SUFFIX)
        force = ["--force"] if records_fk_problems(manifest) else []
        script = os.path.join(REPO_ROOT_STR, "scripts", "restore_database.sh")
        words = [script, "--db", self.db_path, "--dir", os.path.dirname(backup), "--yes",
                 *force, backup]
        return " ".join(shlex.quote(word) for word in words)

    # -- down

    def plan_down(self, applied: dict[int, Applied], steps: int | None = None,
                  to: int | None = None) -> list[Migration]:
        if (steps is None) == (to is None):
            raise OpsError(EX_USAGE, "down needs exactly one of --steps N or --to V")
        rows = sorted(applied.values(),
                      key=lambda a: (a.applied_at, a.version), reverse=True)
        if steps is not None:
            if steps < 1:
                raise OpsError(EX_USAGE, "--steps must be at least 1")
            if steps > len(rows):
                raise OpsError(EX_USAGE, f"--steps {steps}: only {len(rows)} migration(s) "
                                         "are applied")
            targets = rows[:steps]
        else:
            assert to is not None
            if to < 0:
                raise OpsError(EX_USAGE, "--to must be 0 or more")
            targets = [a for a in rows if a.version > to]
        by_version = self._by_version()
        plan = []
        for row in targets:
            m = by_version.get(row.version)
            if m is None:
                raise OpsError(EX_FAIL, f"cannot revert migration {row.version} "
                                        f"({row.description}): its file is missing; nothing "
                                        "was reverted")
            if row.checksum and row.checksum != m.checksum:
                raise OpsError(EX_VERIFY, f"{m.filename} was edited after it was applied; "
                                          "nothing was reverted; restore the file first")
            if not m.has_down:
                raise OpsError(EX_FAIL, f"{m.filename} has no down section, so it cannot be "
                                        "reverted; nothing was reverted; restore a backup "
                                        "instead (scripts/restore_database.sh --list)")
            plan.append(m)
        return plan

    def down(self, steps: int | None = None, to: int | None = None, *, dry_run: bool = False,
             backup: bool = True,
             progress: Callable[[Migration, int | None], None] | None = None,
             on_backup: Callable[[str], None] | None = None) -> UpResult:
        """Revert the most recently applied migrations, newest first, one transaction each."""
        result = UpResult()
        if self._database_state() != "sqlite":
            raise OpsError(EX_USAGE, f"{self.db_path} does not exist; there is nothing to revert")
        if dry_run:
            conn = self.connect(readonly=True)
            try:
                _, applied = self._read(conn)
            finally:
                conn.close()
            result.planned = self.plan_down(applied, steps, to)
            return result
        with self._lock("migrate down"):
            conn = self.connect()
            try:
                layout, applied = self._read(conn)
                result.planned = self.plan_down(applied, steps, to)
                if not result.planned:
                    return result
                conn.execute("PRAGMA foreign_keys = ON")
                if backup or any(m.load().no_transaction for m in result.planned):
                    result.backup = self.take_backup()
                    if on_backup:
                        on_backup(result.backup)
                self._ensure_layout(conn, layout, result)
                self._apply_plan(conn, result.planned, "down", result, progress)
            finally:
                conn.close()
        return result

    # -- baseline, new

    def baseline(self, version: int) -> list[Migration]:
        """Record every migration up to ``version`` as applied, without running it."""
        if self._database_state() != "sqlite":
            raise OpsError(EX_USAGE, f"{self.db_path} does not exist or is empty; baseline "
                                     "adopts an existing database")
        if version not in self._by_version():
            raise OpsError(EX_USAGE, f"there is no migration {version} in {self.migrations_dir}")
        chosen = [m for m in self.migrations if m.version <= version]
        with self._lock("migrate baseline"):
            conn = self.connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    layout, applied = read_applied(conn, self.migrations)
                    if layout != LAYOUT_NONE and (layout != LAYOUT_CURRENT or applied):
                        raise OpsError(EX_USAGE, f"{self.db_path} already has migration "
                                                 f"history ({layout} layout, {len(applied)} "
                                                 "rows); see 'migrate status'")
                    if layout == LAYOUT_NONE:
                        conn.execute(TABLE_SQL)
                    stamp = now_iso()
                    conn.executemany(
                        "INSERT INTO schema_migrations (version, description, checksum, "
                        "applied_at, execution_ms) VALUES (?, ?, ?, ?, NULL)",
                        [(m.version, m.name, m.checksum, stamp) for m in chosen])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise _db_error(self.db_path, exc) from None
            finally:
                conn.close()
        return chosen

    def new(self, name: str, python: bool = False) -> str:
        """Create the next numbered migration file from a template; returns its path."""
        slug = "_".join(name.strip().lower().replace("-", " ").split())
        if not slug or not all(c.isascii() and (c.isalnum() or c == "_") for c in slug):
            raise OpsError(EX_USAGE, f"migration name {name!r}: use letters, digits, '_' or '-'")
        existing = self.migrations
        version = max((m.version for m in existing), default=0) + 1
        width = max([3] + [len(os.path.basename(m.path).partition("_")[0]) for m in existing])
        path = os.path.join(self.migrations_dir, f"{version:0{width}d}_{slug}."
                                                 f"{'py' if python else 'sql'}")
        text = (_PY_TEMPLATE if python else _SQL_TEMPLATE).format(name=name.strip())
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise OpsError(EX_FAIL, f"cannot create {path}: {exc.strerror}") from None
        self._migrations = None
        return path

    # -- schema

    def build_schema(self, through: int | None = None) -> sqlite3.Connection:
        """A fresh in-memory database with every migration (up to ``through``) applied."""
        conn = memory_database()
        for m in self.migrations:
            if through is not None and m.version > through:
                break
            try:
                apply_one(conn, m, "up")
            except MigrationFailed as exc:
                conn.close()
                raise OpsError(EX_FAIL, f"building the schema: {exc.message}") from None
        return conn

    @property
    def schema_path(self) -> str:
        return os.path.join(self.migrations_dir, SCHEMA_FILE)

    def render_schema(self) -> str:
        conn = self.build_schema()
        try:
            return render_schema(schema_objects(conn), max(
                (m.version for m in self.migrations), default=None))
        finally:
            conn.close()

    def write_schema(self) -> str:
        text = self.render_schema()
        tmp = self.schema_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.schema_path)
        return self.schema_path

    def check_schema(self) -> list[str]:
        """Drift of the live database from ``schema.sql``, one line per difference."""
        if self._database_state() != "sqlite":
            raise OpsError(EX_USAGE, f"{self.db_path} does not exist; nothing to check")
        try:
            with open(self.schema_path, encoding="utf-8") as handle:
                reference_sql = handle.read()
        except FileNotFoundError:
            raise OpsError(EX_USAGE, f"{self.schema_path} does not exist; run 'migrate schema' "
                                     "first") from None
        reference = sqlite3.connect(":memory:", isolation_level=None)
        live = self.connect(readonly=True)
        try:
            for statement in split_statements(reference_sql):
                reference.execute(statement)
            return schema_drift(live, reference)
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.db_path, exc) from None
        finally:
            reference.close()
            live.close()

    # -- backup

    def take_backup(self) -> str:
        """Run the backup script (the lock is inherited via SQLITE_OPS_LOCK_HELD)."""
        import subprocess

        from .common import REPO_ROOT_STR

        script = self.backup_script or os.path.join(REPO_ROOT_STR, "scripts",
                                                    "backup_database.sh")
        if not os.path.isfile(script):
            raise OpsError(EX_USAGE, f"backup script {script} not found; nothing was applied "
                                     "(set SQLITE_OPS_BACKUP_SCRIPT, or use --no-backup)")
        command = [script, "--db", self.db_path, "--quiet"]
        if self.backup_dir:
            command[3:3] = ["--dir", self.backup_dir]
        env = dict(os.environ)
        env.setdefault(LOCK_HELD_ENV, os.path.abspath(self.db_path) + ".sqlite-ops.lock")
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, env=env, check=False)
        except OSError as exc:
            raise OpsError(EX_FAIL, f"cannot run backup script {script}: {exc.strerror}; "
                                    "nothing was applied") from None
        lines = proc.stdout.strip().splitlines()
        prefix = "Backup completed: "
        if proc.returncode != 0 or not lines or not lines[-1].startswith(prefix):
            errors = proc.stderr.strip().splitlines()
            why = errors[-1] if errors else f"exit {proc.returncode}, no 'Backup completed' line"
            raise OpsError(EX_FAIL, f"the backup before migrating failed ({why}); nothing "
                                    "was changed")
        return lines[-1][len(prefix):].strip()


def refuse_edited(entries: list[Entry], changed: str = "nothing was applied") -> None:
    """Exit 3 naming every applied migration whose file changed since it ran."""
    edited = [e for e in entries if e.state == "edited"]
    if edited:
        names = ", ".join(e.filename or "" for e in edited)
        raise OpsError(EX_VERIFY, f"applied migration(s) edited since they ran: {names}; "
                                  "restore the original file(s) and put the change in a new "
                                  f"migration ('migrate new NAME'); {changed}")


def _db_error(path: str, exc: sqlite3.DatabaseError) -> OpsError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return OpsError(EX_BUSY, f"{path} is locked by another connection ({text}); retry later")
    if "not a database" in text or "malformed" in text:
        return OpsError(EX_USAGE, f"{path} is not a usable SQLite database ({text})")
    return OpsError(EX_FAIL, f"{path}: {text}")


_SQL_TEMPLATE = """\
-- {name}
-- migrate:up


-- migrate:down


-- migrate:validate
-- Optional: queries that must each return a true value before this commits.
"""

_PY_TEMPLATE = '''\
"""{name}"""

# Optional directives: "# migrate:foreign_keys off", "# migrate:no-transaction".


def up(conn):
    """Apply the change. Runs inside the runner's transaction: do not commit."""


def down(conn):
    """Undo up(). Delete this function if the change cannot be undone."""


def validate(conn):
    """Return a true value when up() did what it should (optional)."""
    return True
'''
