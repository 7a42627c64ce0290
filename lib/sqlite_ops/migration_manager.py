"""Numbered schema migrations for an SQLite database: the public entry.

The pieces, along yoyo's lines (this module re-exports their public names):

* :mod:`.migration_files`: the model (a migration file, its sections, its
  Python shapes) and the directory loader;
* :mod:`.migration_schema`: a database's schema and how two differ (drift,
  adoption; ``db_metrics`` uses it directly);
* :mod:`.migration_backend`: the ``schema_migrations`` records and the one
  transaction each migration runs in;
* this module: status, the planner and :class:`Migrator`, which plans and
  verifies a run (edited files, adoption, a lost database) before anything is
  written, takes the backup, and drives the backend; the CLI only wires
  arguments (:mod:`.migrate_cli`).

A database with tables but no history is adopted only when its schema is the
one the migrations build (compared by :func:`.migration_schema.schema_drift`);
another tool's history table is read and shown, never changed or mapped.

The ``up`` no-op runs on every deploy, so this module imports only what that
path needs; everything else is imported where it is used.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable

from .common import (
    EX_BUSY,
    EX_FAIL,
    EX_INTEGRITY,
    EX_USAGE,
    EX_VERIFY,
    HOT_JOURNAL_ROLLED_BACK,
    OpsError,
    OpsLock,
    is_sqlite_file,
    readonly_uri,
    roll_back_hot_journal,
    sqlite_error_code,
)
from .migration_backend import (  # noqa: F401 - re-exported: the public entry
    LAYOUT_CURRENT,
    LAYOUT_LEGACY,
    LAYOUT_NONE,
    TABLE_SQL,
    Applied,
    Transaction,
    apply_one,
    memory_database,
    now_iso,
    prepare_records,
    read_applied,
    upgrade_layout,
)
from .migration_files import (  # noqa: F401 - re-exported: the public entry
    SECTIONS,
    Migration,
    MigrationConnection,
    MigrationFailed,
    _snippet,
    discover,
    file_checksum,
    has_code,
    parse_filename,
    parse_sql_sections,
    split_statements,
)
from .migration_schema import (  # noqa: F401 - re-exported: the public entry
    TABLE,
    ForeignHistory,
    drift_from_file,
    foreign_history,
    normalise_sql,
    render_schema,
    schema_drift,
    schema_objects,
    user_tables,
)

SCHEMA_FILE = "schema.sql"


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
                 entries: list[Entry], foreign: list[ForeignHistory] = (),  # type: ignore
                 unadopted: bool = False, adoption: dict[str, object] | None = None) -> None:
        self.db_path = db_path
        self.migrations_dir = migrations_dir
        self.exists = exists
        self.layout = layout
        self.entries = entries
        self.foreign = list(foreign)
        self.unadopted = unadopted  # tables, but no sqlite-ops history yet
        # For an unadopted database: the version its schema matches, or the
        # closest one and the differences ({"matches", "closest", "differences"}).
        self.adoption = adoption

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
            "unadopted": self.unadopted,
            "adoption": self.adoption,
            "foreign_history": [h.as_dict() for h in self.foreign],
            "migrations": [e.as_dict() for e in self.entries],
        }




# --------------------------------------------------------------------------- migrator


class UpResult:
    def __init__(self) -> None:
        self.planned: list[Migration] = []
        self.applied: list[tuple[Migration, int]] = []
        self.backup: str | None = None
        self.warnings: list[str] = []
        self.upgraded_layout: str | None = None
        self.adopted: list[Migration] = []  # recorded as applied: the schema matched


class Migrator:
    """Migrations of one database from one directory.

    Before changes it takes a verified backup into ``backup_dir`` (default
    BACKUP_DIR) with :func:`sqlite_ops.backup.backup_with_lock_held`.
    """

    def __init__(self, db_path: str, migrations_dir: str, *, lock_timeout: float = 0,
                 backup_dir: str | None = None) -> None:
        self.db_path = os.fspath(db_path)
        self.migrations_dir = os.fspath(migrations_dir)
        self.lock_timeout = lock_timeout
        self.backup_dir = backup_dir
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
                if roll_back_hot_journal(self.db_path):  # said, as backup and restore say it
                    print(f"migrate: warning: {HOT_JOURNAL_ROLLED_BACK.format(db=self.db_path)}",
                          file=sys.stderr)
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
        foreign: list[ForeignHistory] = []
        unadopted = False
        adoption = None
        if state == "sqlite":
            conn = self.connect(readonly=True)
            try:
                layout, applied = self._read(conn)
                foreign = foreign_history(conn)
                unadopted = layout == LAYOUT_NONE and bool(user_tables(conn))
                adoption = self._adoption_verdict(conn) if unadopted else None
            except sqlite3.DatabaseError as exc:
                raise _db_error(self.db_path, exc) from None
            finally:
                conn.close()
        return Status(self.db_path, self.migrations_dir, state != "missing", layout,
                      compare(self.migrations, applied), foreign, unadopted, adoption)

    def _adoption_verdict(self, conn: sqlite3.Connection) -> dict[str, object]:
        """What ``up`` would find adopting this database (for ``status``; read-only)."""
        if not self.migrations:
            return {"matches": None, "closest": None, "differences": []}
        matched, closest, drift = self.adoption(conn)
        return {"matches": matched, "closest": closest.filename if closest else None,
                "differences": drift}

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
           allow_out_of_order: bool = False, create: bool = False,
           progress: Callable[[Migration, int | None], None] | None = None,
           notice: Callable[[str], None] | None = None,
           on_backup: Callable[[str], None] | None = None,
           on_adopt: Callable[[list[Migration]], None] | None = None) -> UpResult:
        """Apply the pending migrations (up to ``to``), one transaction each.

        Plans and verifies everything first (an edited file, a database whose
        schema the migrations do not build, a lost database with backups), so a
        run that is refused writes nothing and takes no backup; the backup is
        taken only when a migration will be applied.
        """
        result = UpResult()
        state = self._database_state()
        if state != "sqlite":  # refuse a bad plan before creating anything
            self.plan_up({}, to, allow_out_of_order)
            self._check_new_database(state, create)
        if dry_run:
            return self._dry_run_up(state, to, allow_out_of_order, result)
        if state == "missing" and notice:  # a mistyped --db must not pass unnoticed
            notice(f"{self.db_path} does not exist: creating a new database")
        if state == "sqlite" and self._up_to_date(to, allow_out_of_order):
            # The deploy-time no-op: one query, no lock (a backup running now is
            # no reason to fail a deploy that has nothing to do).
            return result
        with self._lock("migrate up"):
            conn = self.connect()
            try:
                layout, applied, adopt = self._read_for_up(conn)  # again, inside the lock
                plan = self.plan_up(applied, to, allow_out_of_order)
                result.planned, result.adopted = plan, adopt
                if not plan and not adopt and layout != LAYOUT_LEGACY:
                    return result
                if adopt and on_adopt:
                    on_adopt(adopt)
                if plan and state == "sqlite" and (
                        backup or any(m.load().no_transaction for m in plan)):
                    if not backup and notice:
                        notice("taking a backup despite --no-backup: a migration runs "
                               "outside a transaction")
                    conn, result.backup = self._backup_between(conn)
                    if on_backup:
                        on_backup(result.backup)
                conn.execute("PRAGMA foreign_keys = ON")

                def prepare(c: sqlite3.Connection) -> None:
                    result.upgraded_layout = prepare_records(c, self.migrations, adopt)

                if plan:
                    self._apply_plan(conn, plan, "up", result, progress, prepare)
                else:
                    self._in_transaction(conn, prepare)
            finally:
                conn.close()
        return result

    def _read_for_up(self, conn: sqlite3.Connection
                     ) -> tuple[str, dict[int, Applied], list[Migration]]:
        """The records, plus the migrations a verified adoption records (read-only)."""
        layout, applied = self._read(conn)
        adopt: list[Migration] = []
        if layout == LAYOUT_NONE:
            try:
                adopt = self.verify_adoption(conn)
            except sqlite3.DatabaseError as exc:
                raise _db_error(self.db_path, exc) from None
            applied = {m.version: Applied(m.version, m.name, m.checksum, "", None)
                       for m in adopt}
        return layout, applied, adopt

    def _in_transaction(self, conn: sqlite3.Connection,
                        work: Callable[[sqlite3.Connection], object]) -> None:
        try:
            with Transaction(conn):
                work(conn)
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.db_path, exc) from None

    def _check_new_database(self, state: str, create: bool) -> None:
        """Before ``up`` creates a database: the directory exists, and no backup
        says the database was lost (then a new one would become "latest")."""
        if state == "missing":
            parent = os.path.dirname(os.path.abspath(self.db_path))
            if not os.path.isdir(parent):  # a wrong DB_PATH, not a first deploy
                raise OpsError(EX_USAGE, f"directory {parent} does not exist: is --db "
                                         "(DB_PATH) right? Create it, owned by the "
                                         "application's user, and retry; nothing was changed")
        if create or not self.backup_dir:
            return
        from .catalog import db_name, fk_count_pending, list_backups

        backups = list_backups(self.backup_dir, db_name(self.db_path), source=self.db_path)
        if not backups:
            return
        newest = backups[0]
        what = "does not exist" if state == "missing" else "is empty (0 bytes)"
        pending = (" (its foreign-key count was left to a drill that has not run: if that "
                   "restore stops at foreign-key violations the database already had, add "
                   "--force)" if fk_count_pending(newest.manifest) else "")
        raise OpsError(EX_USAGE, f"{self.db_path} {what}, but {self.backup_dir} holds "
                                 f"{len(backups)} backup(s) of it (newest: {newest.path.name}, "
                                 f"taken {newest.created_iso}): if it was lost, restore it: "
                                 f"{self._restore_command(str(newest.path), yes=False)}"
                                 f"{pending}; to start a new, empty database instead, run "
                                 "'migrate up --create'; nothing was changed")

    def verify_adoption(self, conn: sqlite3.Connection) -> list[Migration]:
        """A database with tables but no history: the migrations its schema already has.

        Its live schema is compared with what the migrations build, one version
        at a time; the lowest version that matches exactly is the database's
        (the lowest, so a migration that changes only data is run, never
        assumed). No tables: nothing to adopt. No match: exit 3 listing the
        differences from the closest version.
        """
        if not user_tables(conn) or not self.migrations:
            return []
        matched, closest, drift = self.adoption(conn)
        if matched is not None:
            return [m for m in self.migrations if m.version <= matched]
        if closest is None:  # not even the first migration builds on an empty database
            raise OpsError(EX_VERIFY, f"{self.db_path} has tables but no migration history, "
                                      "and the migrations cannot be built on an empty "
                                      f"database to compare it with ({drift[0]}); nothing was "
                                      "written; record the version it is at with 'migrate "
                                      "baseline V'")
        shown = "; ".join(drift[:12]) + (f"; and {len(drift) - 12} more" if len(drift) > 12
                                         else "")
        foreign = foreign_history(conn)
        other = ("; its own history (" + ", ".join(h.describe() for h in foreign)
                 + ") is another tool's numbering and is not mapped onto these files, and "
                 "is left as it is" if foreign else "")
        where = f"closest: {closest.filename}, " if closest else ""
        raise OpsError(EX_VERIFY, f"{self.db_path} has tables but no migration history, and "
                                  "its schema is not one the migrations in "
                                  f"{self.migrations_dir} build ({where}{len(drift)} "
                                  f"difference(s): {shown}){other}; nothing was written; if "
                                  "it is the right database, change it (or the migrations) "
                                  "until they match, or record the version it is at anyway "
                                  "with 'migrate baseline V --force'")

    def adoption(self, conn: sqlite3.Connection
                 ) -> tuple[int | None, Migration | None, list[str]]:
        """(lowest version the live schema matches or None, the closest migration,
        the differences from it)."""
        reference = memory_database()
        matched: int | None = None
        closest: tuple[Migration, list[str]] | None = None
        try:
            for m in self.migrations:
                try:
                    apply_one(reference, m, "up")
                except OpsError as exc:  # it needs what an empty database lacks
                    if closest is None:
                        return None, None, [exc.message]
                    break  # nothing later can match
                drift = schema_drift(conn, reference, f"the migrations through {m.filename}")
                if not drift:
                    matched = m.version
                    break
                if closest is None or len(drift) < len(closest[1]):
                    closest = (m, drift)
        finally:
            reference.close()
        if matched is not None:
            return matched, None, []
        return None, closest[0] if closest else None, closest[1] if closest else []

    def _apply_plan(self, conn: sqlite3.Connection, plan: list[Migration], direction: str,
                    result: UpResult, progress: Callable | None,
                    prepare: Callable[[sqlite3.Connection], object] | None = None) -> None:
        """Apply ``plan`` one migration at a time (each in its own transaction),
        recording each in ``result``. ``prepare`` (the records table) runs in the
        first transaction. A failure says which migration, what changed, and how
        to get back to the state before the run when something did."""
        for m in plan:
            try:
                ms = apply_one(conn, m, direction, prepare)
            except MigrationFailed as exc:
                raise self._explain(exc, direction, result.applied, result.backup) from None
            except sqlite3.OperationalError as exc:
                raise _db_error(self.db_path, exc) from None
            if ms is not None:
                result.applied.append((m, ms))
                prepare = None  # committed with this migration
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
                _, applied, result.adopted = self._read_for_up(conn)
                base = [row[3] for row in schema_objects(conn)]
            finally:
                conn.close()
        result.planned = self.plan_up(applied, to, allow_out_of_order)
        result.warnings = [str(w) for w in lint(result.planned, base_schema=base)]
        return result

    def _explain(self, exc: MigrationFailed, direction: str,
                 done: list[tuple[Migration, int]], backup: str | None) -> OpsError:
        verb = "applied" if direction == "up" else "reverted"
        parts = [exc.message]
        parts.append("it was rolled back" if exc.rolled_back
                     else "it ran outside a transaction and may be partly applied")
        parts.append(f"{verb} before it in this run: "
                     + (", ".join(m.filename for m, _ in done) if done else "none"))
        if not done and exc.rolled_back:
            # Nothing changed: a restore would only throw away writes made since.
            parts.append("the database is as it was before this run; fix the migration "
                         f"and run 'migrate {direction}' again")
        elif backup:
            parts.append(f"to return to the state before this run: {self._undo(backup)}")
        else:
            parts.append("no backup was taken in this run")
        return OpsError(exc.code, "; ".join(parts))

    def _undo(self, backup: str) -> str:
        """The restore command for this run's backup, ready to paste."""
        return self._restore_command(backup, yes=True)

    def _restore_command(self, backup: str, yes: bool) -> str:
        """restore_database.sh for ``backup`` (catalog.restore_command), judged
        by this run's migrations and the FK_ACCEPT its backups use."""
        from .catalog import restore_command
        from .common import Settings

        fk_accept = Settings({}, prog="migrate").get("FK_ACCEPT")
        return restore_command(self.db_path, os.path.dirname(backup), backup,
                               migrations=self.migrations_dir, fk_accept=fk_accept, yes=yes)

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
                if backup or any(m.load().no_transaction for m in result.planned):
                    conn, result.backup = self._backup_between(conn)
                    if on_backup:
                        on_backup(result.backup)
                conn.execute("PRAGMA foreign_keys = ON")
                def prepare(c: sqlite3.Connection) -> None:
                    result.upgraded_layout = prepare_records(c, self.migrations)

                self._apply_plan(conn, result.planned, "down", result, progress, prepare)
            finally:
                conn.close()
        return result

    # -- baseline, new

    def baseline(self, version: int, force: bool = False) -> tuple[list[Migration], list[str]]:
        """Record every migration up to ``version`` as applied, without running it.

        Verified first: the live schema must be the one migrations 1..``version``
        build (another tool's history table aside). With ``force`` it is recorded
        anyway. Returns the migrations recorded and the differences found.
        """
        if self._database_state() != "sqlite":
            raise OpsError(EX_USAGE, f"{self.db_path} does not exist or is empty; baseline "
                                     "adopts an existing database")
        if version not in self._by_version():
            raise OpsError(EX_USAGE, f"there is no migration {version} in {self.migrations_dir}")
        chosen = [m for m in self.migrations if m.version <= version]
        reference = self.build_schema(through=version)
        try:
            with self._lock("migrate baseline"):
                conn = self.connect()
                try:
                    with Transaction(conn):
                        drift = self._baseline_in_transaction(conn, chosen, reference, force)
                except sqlite3.DatabaseError as exc:
                    raise _db_error(self.db_path, exc) from None
                finally:
                    conn.close()
        finally:
            reference.close()
        return chosen, drift

    def _baseline_in_transaction(self, conn: sqlite3.Connection, chosen: list[Migration],
                                 reference: sqlite3.Connection, force: bool) -> list[str]:
        layout, applied = read_applied(conn, self.migrations)
        if layout != LAYOUT_NONE and (layout != LAYOUT_CURRENT or applied):
            raise OpsError(EX_USAGE, f"{self.db_path} already has migration history "
                                     f"({layout} layout, {len(applied)} rows); see "
                                     "'migrate status'")
        last = chosen[-1]
        drift = schema_drift(conn, reference, f"the migrations through {last.filename}")
        if drift and not force:
            shown = "; ".join(drift[:12]) + (f"; and {len(drift) - 12} more"
                                             if len(drift) > 12 else "")
            raise OpsError(EX_VERIFY, f"{self.db_path} does not have the schema migrations "
                                      f"1..{last.version} build ({len(drift)} difference(s): "
                                      f"{shown}); nothing was recorded; pick the version it "
                                      f"is at, or record {last.version} anyway with 'migrate "
                                      f"baseline {last.version} --force'")
        if layout == LAYOUT_NONE:
            conn.execute(TABLE_SQL)
        stamp = now_iso()
        conn.executemany(
            "INSERT INTO schema_migrations (version, description, checksum, applied_at, "
            "execution_ms) VALUES (?, ?, ?, ?, NULL)",
            [(m.version, m.name, m.checksum, stamp) for m in chosen])
        return drift

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
        live = self.connect(readonly=True)
        try:
            return drift_from_file(live, reference_sql)
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.db_path, exc) from None
        finally:
            live.close()

    # -- backup

    def _backup_between(self, conn: sqlite3.Connection) -> tuple[sqlite3.Connection, str]:
        """The pre-migration backup with ``conn`` closed while it runs; a new
        connection, and the backup's path. POSIX locks belong to the process:
        the backup opens and closes the database's files, which would silently
        drop the locks ``conn`` holds, and another process could then delete the
        WAL under it (the migration's commits lost with it)."""
        conn.close()
        path = self.take_backup()
        return self.connect(), path

    def take_backup(self) -> str:
        """The pre-migration backup (sqlite_ops.backup), taken under this run's
        lock, with the backup's own settings (COMPRESS, FK_ACCEPT, ...)."""
        from . import backup
        from .common import Settings

        try:
            settings = backup.settings_from(Settings({}, prog="migrate"), self.db_path,
                                            self.backup_dir, prog="migrate")
            settings.always_count_fks = True  # the undo command's --force is decided by it
            result = backup.backup_with_lock_held(settings, backup.Log("migrate", quiet=True))
        except OpsError as error:
            raise OpsError(EX_FAIL, f"the backup before migrating failed ({error.message}); "
                                    "nothing was changed") from None
        return result.path


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
    kind = sqlite_error_code(exc)
    if kind == EX_BUSY:
        return OpsError(EX_BUSY, f"{path} is locked by another connection ({text}); retry later")
    if kind == EX_INTEGRITY:
        return OpsError(EX_INTEGRITY, f"{path} is damaged ({text}); nothing was changed; run "
                                      "maintain_database.sh check")
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

