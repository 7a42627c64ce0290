"""Migration files: the model and its loader (imports nothing but ``.common``
and ``.sqltext``).

A migration is a file in the migrations directory:

* ``NNN_name.sql`` with ``-- migrate:up``, ``-- migrate:down`` and optional
  ``-- migrate:validate`` sections (no markers at all: the whole file is "up"),
  plus the directives ``-- migrate:foreign_keys off`` and ``-- migrate:no-transaction``;
* ``NNN_name.py`` in any of the shapes projects already write, run as written:

  - module functions ``up(conn)``, ``down(conn)``, ``validate(conn)`` (or
    ``apply(conn)`` / ``rollback(conn)``);
  - one class defined in the file with those methods (``up(self, cursor)``...),
    for instance on a base class imported with ``from .base import ...`` (the
    migrations directory is a package for the file's relative imports);
  - any of these ``async``: run to completion on a private event loop, with an
    awaitable connection (``await conn.execute(...)``, ``await cur.fetchall()``).

  ``up``/``down`` either execute their statements or *return* them (a list of
  SQL strings, or one string); the runner executes what is returned, in the
  same transaction. ``validate`` returns a true value when the change is right.
  A returned value of any other kind, or a coroutine left un-awaited, refuses
  the migration (exit 2): nothing is recorded.

The connection a Python migration gets is the runner's, minus transaction
control: ``commit()`` is a no-op (the runner commits the migration together
with its ``schema_migrations`` row), ``rollback()`` fails the migration (the
runner rolls it all back), and ``executescript()`` runs its statements one by
one inside the transaction. It is also a cursor: ``execute()`` then
``fetchall()`` works on it, as does ``conn.cursor()``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterable

from .common import EX_FAIL, EX_USAGE, OpsError
from .sqltext import has_code, split_statements

SECTIONS = ("up", "down", "validate")
# Names a section's function or method may have, first match wins.
SECTION_NAMES = {"up": ("up", "apply"), "down": ("down", "rollback"), "validate": ("validate",)}
PACKAGE_PREFIX = "sqlite_ops_migrations_"


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
        """Parse the file (SQL sections, or the Python module's shape) and its directives."""
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
            self._functions = _load_python(self, text)
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

    def call(self, conn: sqlite3.Connection, section: str) -> object:
        """Run the Python section ``section`` on ``conn`` in whatever shape it has.

        Returns what ``validate`` returned (None for up/down). Statements that
        up/down return are executed here, in the caller's transaction. Raises
        :class:`MigrationFailed` (exit 1 for an error in the migration, exit 2
        for a shape the runner does not understand).
        """
        func = self.function(section)
        assert func is not None
        return _call(self, func, conn, section)


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


# ----------------------------------------------------------------- Python shapes


def _package_for(directory: str) -> str:
    """A package standing for the migrations directory, so that a migration's
    ``from .base import X`` finds ``base.py`` beside it (files without a number
    are not migrations)."""
    name = PACKAGE_PREFIX + _sha256()(os.path.abspath(directory).encode()).hexdigest()[:16]
    if name not in sys.modules:
        import types

        package = types.ModuleType(name)
        package.__path__ = [directory]
        package.__package__ = name
        sys.modules[name] = package
    return name


def _load_python(m: Migration, text: str) -> dict[str, Callable]:
    """Execute the file as a module of that package; its section callables by shape."""
    import types

    package = _package_for(os.path.dirname(os.path.abspath(m.path)))
    module = types.ModuleType(f"{package}.m{os.path.splitext(m.filename)[0]}")
    module.__file__ = m.path
    module.__package__ = package
    sys.modules[module.__name__] = module  # dataclasses and pickling look it up
    try:
        exec(compile(text, m.path, "exec"), module.__dict__)  # noqa: S102 - migration code
    except Exception as exc:  # the migration's own code: report, don't crash
        sys.modules.pop(module.__name__, None)
        raise OpsError(EX_USAGE, f"cannot load {m.filename}: "
                                 f"{type(exc).__name__}: {exc}") from None
    return _shape(m, module)


def _shape(m: Migration, module: object) -> dict[str, Callable]:
    namespace = vars(module)
    functions: dict[str, Callable] = {}
    for section, names in SECTION_NAMES.items():
        for name in names:
            value = namespace.get(name)
            if value is None or isinstance(value, type):
                continue
            if not callable(value):
                raise OpsError(EX_USAGE, f"{m.filename}: {name} must be a function")
            functions[section] = value
            break
    if "up" in functions:
        return functions
    own = getattr(module, "__name__", "")
    classes = [value for value in namespace.values()
               if isinstance(value, type) and value.__module__ == own
               and any(callable(getattr(value, n, None)) for n in SECTION_NAMES["up"])]
    if not classes:
        raise OpsError(EX_USAGE, f"{m.filename} defines no up(conn) function and no migration "
                                 "class with an up() or apply() method")
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise OpsError(EX_USAGE, f"{m.filename} defines {len(classes)} migration classes "
                                 f"({names}); keep one per file")
    cls = classes[0]
    try:
        instance = cls()
    except Exception as exc:
        raise OpsError(EX_USAGE, f"cannot create {cls.__name__}() in {m.filename}: "
                                 f"{type(exc).__name__}: {exc}") from None
    for section, names in SECTION_NAMES.items():
        method = _most_derived(cls, instance, names)
        if method is not None:
            functions[section] = method
    return functions


def _most_derived(cls: type, instance: object, names: tuple[str, ...]) -> Callable | None:
    """The method among ``names`` that the most derived class defines (a subclass's
    ``apply`` wins over its base class's placeholder ``up``)."""
    best: tuple[int, Callable] | None = None
    for name in names:
        for depth, klass in enumerate(cls.__mro__):
            if name in vars(klass):
                method = getattr(instance, name)
                if callable(method) and (best is None or depth < best[0]):
                    best = (depth, method)
                break
    return best[1] if best else None


def _snippet(sql: object) -> str:
    if not sql:
        return ""
    text = " ".join(str(sql).split())
    return text if len(text) <= 70 else text[:67] + "..."


def _call(m: Migration, func: Callable, conn: sqlite3.Connection, section: str) -> object:
    import inspect
    import warnings

    is_async = inspect.iscoroutinefunction(func)
    proxy = MigrationConnection(conn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            result = func(AsyncMigrationConnection(proxy) if is_async else proxy)
            if inspect.isawaitable(result):
                if not is_async:
                    getattr(result, "close", lambda: None)()
                    raise MigrationFailed(
                        EX_USAGE, m, f"in {section}()", "it returned a coroutine without "
                        f"awaiting it; declare it 'async def {func.__name__}' (the runner then "
                        "runs it to completion) or await what it calls; nothing was recorded")
                result = _run_coroutine(result)
        except MigrationFailed:
            raise
        except Exception as exc:
            raise _failure(m, section, exc, proxy.last_sql) from None
        finally:
            del proxy  # drop the migration's leftovers now, so un-awaited calls warn here
        import gc

        gc.collect()
    unawaited = [w for w in caught if issubclass(w.category, RuntimeWarning)
                 and "never awaited" in str(w.message)]
    for w in caught:
        if w not in unawaited:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if unawaited:
        raise MigrationFailed(EX_USAGE, m, f"in {section}()",
                              f"{unawaited[0].message}: a call it did not await never ran; "
                              "await it; nothing was recorded")
    if section == "validate":
        return result
    for number, statement in enumerate(_returned_statements(m, section, result), 1):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationFailed(EX_FAIL, m, f"at statement {number} that {section}() returned "
                                              f"({_snippet(statement)})", str(exc)) from None
    return None


def _failure(m: Migration, section: str, exc: BaseException, last_sql: str | None
             ) -> MigrationFailed:
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == m.path]
    where = f"in {section}()" + (f" at line {lines[-1]}" if lines else "")
    if last_sql:
        where += f" ({_snippet(last_sql)})"
    return MigrationFailed(EX_FAIL, m, where, f"{type(exc).__name__}: {exc}")


def _run_coroutine(coroutine: object) -> object:
    """Run an async migration to completion on a private event loop."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)  # type: ignore[arg-type]
    finally:
        loop.close()


def _returned_statements(m: Migration, section: str, result: object) -> list[str]:
    """What up/down returned, as statements to execute: None, an SQL string or a list of them."""
    if result is None:
        return []
    if isinstance(result, str):
        items = [result]
    elif isinstance(result, (list, tuple)) and all(isinstance(i, str) for i in result):
        items = list(result)
    else:
        raise MigrationFailed(
            EX_USAGE, m, f"in {section}()",
            f"it returned {type(result).__name__} {_snippet(repr(result))}, which the runner "
            "does not understand: return nothing (having executed the statements) or a list "
            "of SQL statements to execute; nothing was recorded")
    return [statement for item in items for statement in split_statements(item)]


class MigrationConnection:
    """The connection a Python migration gets: the runner's, minus transaction control.

    The runner owns the transaction that also records the migration:
    ``commit()`` does nothing, ``rollback()`` raises (failing the migration, which
    the runner then rolls back whole), ``executescript()`` runs statement by
    statement (sqlite3's own would commit first) and ``with conn:`` neither
    commits nor rolls back. The cursor methods work on the connection too (on
    the last statement's cursor), so code written for a cursor runs as is.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._last: sqlite3.Cursor | None = None
        self.last_sql: str | None = None

    def execute(self, sql: str, parameters: Iterable = ()) -> MigrationCursor:
        self.last_sql = sql
        self._last = self._conn.execute(sql, parameters)
        return MigrationCursor(self._last, self)

    def executemany(self, sql: str, seq: Iterable) -> MigrationCursor:
        self.last_sql = sql
        self._last = self._conn.executemany(sql, seq)
        return MigrationCursor(self._last, self)

    def executescript(self, script: str) -> MigrationCursor:
        cursor = MigrationCursor(self._conn.cursor(), self)
        for statement in split_statements(script):
            cursor.execute(statement)
        return cursor

    def cursor(self, *args: object) -> MigrationCursor:
        return MigrationCursor(self._conn.cursor(), self)

    def commit(self) -> None:
        """Nothing: the runner commits the migration with its record."""

    def rollback(self) -> None:
        raise sqlite3.OperationalError(
            "a migration cannot roll back the runner's transaction; raise an exception "
            "instead (the runner then rolls the whole migration back)")

    def close(self) -> None:
        """Nothing: the connection is the runner's."""

    def __enter__(self) -> MigrationConnection:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def _cursor(self) -> sqlite3.Cursor:
        if self._last is None:
            raise sqlite3.ProgrammingError("no statement has been executed yet")
        return self._last

    def fetchone(self) -> object:
        return self._cursor().fetchone()

    def fetchall(self) -> list:
        return self._cursor().fetchall()

    def fetchmany(self, size: int = 1) -> list:
        return self._cursor().fetchmany(size)

    @property
    def rowcount(self) -> int:
        return self._cursor().rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor().lastrowid

    @property
    def description(self) -> object:
        return self._cursor().description

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


class MigrationCursor:
    """A cursor on the runner's connection whose ``connection`` is the migration's."""

    def __init__(self, cursor: sqlite3.Cursor, owner: MigrationConnection) -> None:
        self._cursor = cursor
        self.connection = owner

    def execute(self, sql: str, parameters: Iterable = ()) -> MigrationCursor:
        self.connection.last_sql = sql
        self._cursor.execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq: Iterable) -> MigrationCursor:
        self.connection.last_sql = sql
        self._cursor.executemany(sql, seq)
        return self

    def executescript(self, script: str) -> MigrationCursor:
        for statement in split_statements(script):
            self.execute(statement)
        return self

    def __iter__(self) -> object:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> object:
        return getattr(self._cursor, name)


class _Pending:
    """An awaitable call that also works as ``async with conn.execute(...) as cur``."""

    __slots__ = ("_coroutine",)

    def __init__(self, coroutine: object) -> None:
        self._coroutine = coroutine

    def __await__(self) -> object:
        return self._coroutine.__await__()  # type: ignore[attr-defined]

    async def __aenter__(self) -> object:
        return await self._coroutine  # type: ignore[misc]

    async def __aexit__(self, *exc: object) -> bool:
        return False


class AsyncMigrationConnection:
    """The awaitable face of :class:`MigrationConnection` (aiosqlite's calls)."""

    def __init__(self, sync: MigrationConnection) -> None:
        self._sync = sync

    def execute(self, sql: str, parameters: Iterable = ()) -> _Pending:
        return _Pending(self._wrap(self._sync.execute, sql, parameters))

    def executemany(self, sql: str, seq: Iterable) -> _Pending:
        return _Pending(self._wrap(self._sync.executemany, sql, seq))

    def executescript(self, script: str) -> _Pending:
        return _Pending(self._wrap(self._sync.executescript, script))

    def cursor(self) -> _Pending:
        return _Pending(self._wrap(self._sync.cursor))

    async def execute_fetchall(self, sql: str, parameters: Iterable = ()) -> list:
        return self._sync.execute(sql, parameters).fetchall()

    async def _wrap(self, method: Callable, *args: object) -> AsyncMigrationCursor:
        return AsyncMigrationCursor(method(*args))

    async def commit(self) -> None:
        """Nothing: the runner commits the migration with its record."""

    async def rollback(self) -> None:
        self._sync.rollback()

    async def close(self) -> None:
        """Nothing: the connection is the runner's."""

    def __getattr__(self, name: str) -> object:
        return getattr(self._sync, name)


class AsyncMigrationCursor:
    """The awaitable face of :class:`MigrationCursor`."""

    def __init__(self, cursor: MigrationCursor) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, parameters: Iterable = ()) -> AsyncMigrationCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq: Iterable) -> AsyncMigrationCursor:
        self._cursor.executemany(sql, seq)
        return self

    async def fetchone(self) -> object:
        return self._cursor.fetchone()

    async def fetchall(self) -> list:
        return self._cursor.fetchall()

    async def fetchmany(self, size: int = 1) -> list:
        return self._cursor.fetchmany(size)

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> AsyncMigrationCursor:
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False

    def __aiter__(self) -> AsyncMigrationCursor:
        return self

    async def __anext__(self) -> object:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    def __getattr__(self, name: str) -> object:
        return getattr(self._cursor, name)
