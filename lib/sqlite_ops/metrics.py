"""Metrics of one SQLite database, for Prometheus (text format) or as JSON.

:func:`collect` reads a database and returns a :class:`Report`; :func:`render_prometheus`
and :func:`render_json` print it; :func:`write_textfile` publishes it for the
node_exporter textfile collector; :func:`health` answers ``GET /health``.

Cheap and harmless by default, because a scrape runs every few seconds against a
database an application is using:

* one read-only connection (``file:...?mode=ro``, path percent-encoded), in
  autocommit mode (no transaction is held between statements) with a short busy
  timeout, so a scrape never blocks the application and never writes;
* no full-table scans: row counts are estimates from ``sqlite_stat1`` unless
  ``exact_counts``; table and index sizes (``dbstat`` reads every page) only
  with ``table_sizes``; the queries of ``queries.sql`` are only planned
  (``EXPLAIN QUERY PLAN``), and executed and timed only with ``time_queries``;
* "is a write lock held" is read with ``fcntl(F_GETLK)`` on SQLite's lock bytes,
  which asks the kernel about locks without taking one (a ``BEGIN IMMEDIATE``
  probe would take the write lock for an instant and could make a writer without
  a busy timeout fail);
* imports beyond the standard library's ``sqlite3`` happen where they are used.

Every sample carries a ``db`` label: the database file name without its
extension, the same ``<name>`` the backup files and the ``.prom`` files carry.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable

from .common import (
    EX_BUSY,
    EX_FAIL,
    EX_INTEGRITY,
    EX_USAGE,
    RESERVED_BYTE,
    WAL_WRITE_LOCK_BYTE,
    OpsError,
    check_rows,
    dir_problem,
    holders,
    hot_journal,
    is_sqlite_file,
    locks_held,
    quote_ident,
    readonly_uri,
    require_database,
    sqlite_error_code,
    sqlite_locks_held,
)
from .promfile import escape_label, family

# name: (type, help). The reference table in docs/operations/database-management.md (Monitoring)
# lists the same names.
METRICS: dict[str, tuple[str, str]] = {
    "sqlite_info": ("gauge", "Always 1; labels carry the path, journal mode and SQLite version."),
    "sqlite_file_size_bytes": ("gauge", "Size of the database file."),
    "sqlite_wal_size_bytes": ("gauge", "Size of the -wal file (0 when there is none)."),
    "sqlite_page_size_bytes": ("gauge", "Page size."),
    "sqlite_pages": ("gauge", "Pages in the database (PRAGMA page_count)."),
    "sqlite_freelist_pages": ("gauge", "Unused pages a VACUUM would give back."),
    "sqlite_freelist_ratio": ("gauge", "Freelist pages as a fraction of all pages."),
    "sqlite_table_rows_estimate": (
        "gauge", "Rows per table as of the last ANALYZE (sqlite_stat1); tables without "
        "statistics are absent."),
    "sqlite_table_rows": ("gauge", "Exact rows per table (only with --exact-counts)."),
    "sqlite_table_size_bytes": ("gauge", "Bytes of a table's b-tree (dbstat; --table-sizes)."),
    "sqlite_index_size_bytes": ("gauge", "Bytes of an index's b-tree (dbstat; --table-sizes)."),
    "sqlite_index_has_stats": ("gauge", "1 when ANALYZE has statistics for the index."),
    "sqlite_index_used_by_queries": (
        "gauge", "How many of the checked queries use the index (EXPLAIN QUERY PLAN); "
        "0 means none of them does."),
    "sqlite_queries_checked": ("gauge", "Queries read from the queries file and planned."),
    "sqlite_query_duration_seconds": (
        "gauge", "Median run time of a query from the queries file (--time-queries)."),
    "sqlite_open_processes": (
        "gauge", "Processes with the database, its -wal or its -shm open (/proc scan)."),
    "sqlite_write_lock_held": ("gauge", "1 when a connection holds the write lock right now."),
    "sqlite_schema_migration_version": ("gauge", "Highest applied migration version."),
    "sqlite_schema_drift": ("gauge", "1 when the schema differs from migrations/schema.sql."),
    "sqlite_backup_latest_timestamp_seconds": (
        "gauge", "Time the newest backup was taken (its manifest's created_at; "
                 "backups dated in the future left out)."),
    "sqlite_backup_latest_verified_timestamp_seconds": (
        "gauge", "Time the newest verified backup was taken (what restore latest picks)."),
    "sqlite_backup_catalog_files": ("gauge", "Backup files of this database in the directory."),
    "sqlite_backup_catalog_verified_files": (
        "gauge", "Backup files of this database with a verified manifest."),
    "sqlite_backup_catalog_suspect_files": (
        "gauge", "Backup files of this database whose manifest is unreadable or whose "
                 "time is in the future (see restore_database.sh --list)."),
    "sqlite_metrics_scrape_duration_seconds": ("gauge", "How long collecting these took."),
    "sqlite_metrics_scrape_success": (
        "gauge", "1 when the database could be read for these metrics; 0: the scrape failed "
                 "(see the note) and this file holds nothing else from it."),
    # Not maintain_database.sh's sqlite_integrity_ok: no name is written to two
    # .prom files of one textfile directory.
    "sqlite_integrity_probe_ok": (
        "gauge", "0 when this scrape met damage in the pages it read, or the newest full "
        "check on record failed; else 1."),
    "sqlite_integrity_check_age_seconds": (
        "gauge", "Seconds since the last full check that read every page (maintain check or "
        "quick-check, db_metrics --integrity-check)."),
    "sqlite_integrity_check_timestamp_seconds": (
        "gauge", "When db_metrics --integrity-check last ran PRAGMA quick_check."),
    "sqlite_integrity_quick_check_ok": (
        "gauge", "1 when the last db_metrics --integrity-check passed, 0 when it did not."),
}

DEFAULT_QUERY_RUNS = 3
DEFAULT_QUERY_TIME_LIMIT = 2.0  # seconds per query run; a slower run is cut short
BUSY_TIMEOUT = 1.0


class Options:
    """What to collect beyond the cheap default."""

    def __init__(self, *, exact_counts: bool = False, table_sizes: bool = False,
                 queries_file: str | None = None, time_queries: bool = False,
                 query_runs: int = DEFAULT_QUERY_RUNS,
                 query_time_limit: float = DEFAULT_QUERY_TIME_LIMIT,
                 migrations_dir: str | None = None, backup_dir: str | None = None,
                 busy_timeout: float = BUSY_TIMEOUT, integrity_check: bool = False,
                 records_dir: str | None = None) -> None:
        self.exact_counts = exact_counts
        self.table_sizes = table_sizes
        self.queries_file = queries_file
        self.time_queries = time_queries
        self.query_runs = query_runs
        self.query_time_limit = query_time_limit
        self.migrations_dir = migrations_dir
        self.backup_dir = backup_dir
        self.busy_timeout = busy_timeout
        self.integrity_check = integrity_check  # PRAGMA quick_check: reads every page
        self.records_dir = records_dir  # where the last full checks' results are


class Report:
    """Samples by metric name, plus notes on what was skipped and why."""

    def __init__(self, db_path: str, name: str) -> None:
        self.db_path = db_path
        self.name = name
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.notes: list[str] = []
        self.schema_version: int | None = None
        self.drift: list[str] | None = None
        self.damage: str | None = None  # what the integrity probe or check found
        self.journal_mode = ""

    def add(self, metric: str, value: float, **labels: str) -> None:
        if metric not in METRICS:
            raise KeyError(f"undocumented metric {metric}")
        self.samples.setdefault(metric, []).append(({"db": self.name, **labels}, value))

    def value(self, metric: str, **labels: str) -> float | None:
        """The value of one sample (for tests and /health), or None."""
        for sample_labels, value in self.samples.get(metric, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None


# ---------------------------------------------------------------------------
# Opening the database
# ---------------------------------------------------------------------------


def db_name(db_path: str) -> str:
    """The database's name: its file name without extension, the rule of
    ``catalog.db_name`` (not imported here: it costs a third of a scrape)."""
    return os.path.splitext(os.path.basename(db_path))[0]



def connect_readonly(path: str, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """A read-only, autocommit connection that waits at most ``busy_timeout`` seconds.

    With cell_size_check, each page read is checked whole as SQLite first
    decodes it (its cell pointers and cell sizes inside the page). Without
    it, a cell pointer that damage put past the page is masked back into it,
    and a read returns whatever bytes it then lands on: the probe saw damaged
    cell pointers only some of the time, depending on the memory beside the
    page buffer."""
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=busy_timeout,
                           isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cell_size_check = 1")
    return conn


def database_error(path: str, exc: sqlite3.Error) -> OpsError:
    """The contract's exit code for an SQLite error: busy 75, damaged 4, else 1."""
    text = str(exc)
    kind = sqlite_error_code(exc)
    if kind == EX_BUSY:
        return OpsError(EX_BUSY, f"{path} is locked: {text}; retry later")
    if kind == EX_INTEGRITY:
        return OpsError(EX_INTEGRITY, f"cannot read {path}: {text} (run maintain_database.sh "
                                      "check)")
    if "readonly" in text and hot_journal(path):
        return OpsError(EX_FAIL, f"cannot read {path}: a writer was killed mid-transaction "
                                 "and left a hot rollback journal, which a read-only reader "
                                 "cannot roll back; run maintain_database.sh quick-check (or "
                                 "the next backup) to roll it back")
    return OpsError(EX_FAIL, f"cannot read {path}: {text}")




# ---------------------------------------------------------------------------
# Collecting
# ---------------------------------------------------------------------------


def collect(db_path: str, options: Options | None = None) -> Report:
    """Every metric of the database at ``db_path``; OpsError when it cannot be read."""
    options = options or Options()
    started = time.perf_counter()
    require_database(db_path)
    report = Report(db_path, db_name(db_path))
    # Lock probes and the /proc scan come before our own connection exists:
    # closing a probe descriptor would drop any POSIX lock this process held.
    collect_processes(report)
    collect_write_lock(report)
    header = read_header(db_path)
    try:
        conn = connect_readonly(db_path, options.busy_timeout)
    except sqlite3.Error as exc:
        raise database_error(db_path, exc) from None
    damage = None
    try:
        collect_file(report, conn)
        tables, indexes = schema_objects(conn)
        damage = header_problem(header, report.journal_mode) or probe_pages(conn, tables)
        if damage is None:
            collect_rows(report, conn, tables, options.exact_counts)
            collect_index_stats(report, conn, indexes)
            if options.table_sizes:
                collect_sizes(report, conn, tables, indexes)
            queries = read_queries(options.queries_file, report)
            if queries:
                collect_query_plans(report, conn, queries, indexes)
                if options.time_queries:
                    collect_query_times(report, conn, queries, options)
            collect_schema_version(report, conn)
        collect_integrity(report, conn, options, damage)
    except sqlite3.Error as exc:
        error = database_error(db_path, exc)
        if error.code != EX_INTEGRITY:
            raise error from None
        # Damaged beyond the probe (the schema itself): still say so as a metric.
        collect_integrity(report, None, options, str(exc))
    finally:
        conn.close()
    collect_drift(report, options.migrations_dir)
    collect_backups(report, options.backup_dir)
    report.add("sqlite_metrics_scrape_duration_seconds", round(time.perf_counter() - started, 6))
    report.add("sqlite_metrics_scrape_success", 1)
    return report


def failed_scrape(db_path: str, error: OpsError, records_dir: str | None = None) -> Report:
    """What a textfile says after a failed scrape, in place of the last good
    one, whose values would go on saying all is well:
    sqlite_metrics_scrape_success 0, and sqlite_integrity_probe_ok 0 when what
    failed is the file itself (SQLite calls it damaged, or a file that is
    there and not empty no longer starts with SQLite's header). From
    ``records_dir``'s previous textfile, the last --integrity-check is kept on,
    and so is a probe verdict of 0: a damaged database that a scrape found
    locked is still damaged, and its alert must not resolve."""
    report = Report(db_path, db_name(db_path))
    report.notes.append(f"the scrape failed: {error.message}")
    report.add("sqlite_metrics_scrape_success", 0)
    previous_damage = False
    if records_dir:
        for when, ok in own_check(records_dir, report):
            report.add("sqlite_integrity_check_timestamp_seconds", when)
            if ok is not None:
                report.add("sqlite_integrity_quick_check_ok", int(ok))
        previous_damage = previous_value(records_dir, report, "sqlite_integrity_probe_ok") == 0
    if error.code == EX_INTEGRITY or lost_header(db_path) or previous_damage:
        report.add("sqlite_integrity_probe_ok", 0)
    return report


def lost_header(path: str) -> bool:
    """A regular, non-empty file that is not (or no longer) an SQLite database."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return (os.path.isfile(path) and size > 0 and os.access(path, os.R_OK)
            and not is_sqlite_file(path))


def collect_file(report: Report, conn: sqlite3.Connection) -> None:
    path = report.db_path
    page_count, page_size, freelist = conn.execute(
        "SELECT page_count, page_size, freelist_count FROM pragma_page_count(), "
        "pragma_page_size(), pragma_freelist_count()").fetchone()
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    report.journal_mode = str(journal_mode).lower()
    try:
        wal_bytes = os.stat(path + "-wal").st_size
    except OSError:
        wal_bytes = 0
    report.add("sqlite_info", 1, path=os.path.abspath(path), journal_mode=journal_mode,
               sqlite_version=sqlite3.sqlite_version)
    report.add("sqlite_file_size_bytes", os.stat(path).st_size)
    report.add("sqlite_wal_size_bytes", wal_bytes)
    report.add("sqlite_page_size_bytes", page_size)
    report.add("sqlite_pages", page_count)
    report.add("sqlite_freelist_pages", freelist)
    report.add("sqlite_freelist_ratio", round(freelist / page_count, 6) if page_count else 0.0)


def schema_objects(conn: sqlite3.Connection) -> tuple[list[str], dict[str, str]]:
    """(user table names, {index name: its table}); SQLite's internal ones excluded."""
    tables: list[str] = []
    indexes: dict[str, str] = {}
    for kind, name, table in conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"):
        if kind == "table":
            tables.append(name)
        else:
            indexes[name] = table
    return tables, indexes


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def stat1_rows(conn: sqlite3.Connection) -> list[tuple[str, str | None, str]]:
    if not has_table(conn, "sqlite_stat1"):
        return []
    return conn.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall()


def is_empty(conn: sqlite3.Connection, table: str) -> bool:
    """The table has no row (reads at most one); False when it cannot be read."""
    try:
        return conn.execute(f"SELECT 1 FROM {quote_ident(table)} LIMIT 1").fetchone() is None
    except sqlite3.OperationalError:  # e.g. a virtual table's module missing
        return False


def collect_rows(report: Report, conn: sqlite3.Connection, tables: list[str],
                 exact: bool) -> None:
    estimates: dict[str, int] = {}
    for table, _index, stat in stat1_rows(conn):
        try:
            rows = int((stat or "").split()[0])
        except (IndexError, ValueError):
            continue
        estimates[table] = max(rows, estimates.get(table, 0))
    missing = []
    for table in tables:
        if table not in estimates and is_empty(conn, table):
            estimates[table] = 0  # ANALYZE records nothing for an empty table
        if table in estimates:
            report.add("sqlite_table_rows_estimate", estimates[table], table=table)
        else:
            missing.append(table)
    if missing:
        report.notes.append(f"{len(missing)} tables have no statistics (run "
                            "maintain_database.sh analyze): no row estimate for them")
    if exact:
        for table in tables:
            try:
                count = conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0]
            except sqlite3.OperationalError as exc:  # e.g. a virtual table's module missing
                report.notes.append(f"cannot count rows of {table!r}: {exc}")
                continue
            report.add("sqlite_table_rows", count, table=table)


def collect_index_stats(report: Report, conn: sqlite3.Connection,
                        indexes: dict[str, str]) -> None:
    analysed = {index for _table, index, _stat in stat1_rows(conn) if index}
    for index, table in indexes.items():
        report.add("sqlite_index_has_stats", int(index in analysed), table=table, index=index)


def collect_sizes(report: Report, conn: sqlite3.Connection, tables: list[str],
                  indexes: dict[str, str]) -> None:
    """Bytes per b-tree from dbstat (reads every page: opt-in)."""
    if sqlite3.sqlite_version_info >= (3, 31, 0):
        sql = "SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE"
    else:
        sql = "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"
    try:
        sizes = dict(conn.execute(sql).fetchall())
    except sqlite3.OperationalError as exc:
        report.notes.append(f"table sizes skipped: dbstat is not available ({exc})")
        return
    for table in tables:
        if table in sizes:
            report.add("sqlite_table_size_bytes", sizes[table], table=table)
    for index, table in indexes.items():
        if index in sizes:
            report.add("sqlite_index_size_bytes", sizes[index], table=table, index=index)


def read_queries(path: str | None, report: Report) -> list[str]:
    """Queries from ``path``: one per line; blank lines and ``--`` comments skipped."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        report.notes.append(f"no queries file {path}: index usage not checked")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsError(EX_USAGE, f"cannot read queries file {path}: {exc}") from None
    return [line.strip() for line in lines
            if line.strip() and not line.lstrip().startswith("--")]


def plan_uses(detail: str, index: str) -> bool:
    """True when a query-plan line names ``index`` (names may hold spaces or parens)."""
    marker = f"INDEX {index}"
    return detail.endswith(marker) or f"{marker} (" in detail


def collect_query_plans(report: Report, conn: sqlite3.Connection, queries: list[str],
                        indexes: dict[str, str]) -> None:
    uses = dict.fromkeys(indexes, 0)
    planned = 0
    for query in queries:
        try:
            details = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}")]
        except sqlite3.Error as exc:
            report.notes.append(f"cannot plan query {query!r}: {exc}")
            continue
        planned += 1
        for index in indexes:
            if any(plan_uses(detail, index) for detail in details):
                uses[index] += 1
    report.add("sqlite_queries_checked", planned)
    for index, table in indexes.items():
        report.add("sqlite_index_used_by_queries", uses[index], table=table, index=index)


def collect_query_times(report: Report, conn: sqlite3.Connection, queries: list[str],
                        options: Options) -> None:
    """Median of ``query_runs`` runs of each query; a run past the limit is cut short."""
    for query in queries:
        times = []
        for _ in range(max(options.query_runs, 1)):
            deadline = time.perf_counter() + options.query_time_limit
            conn.set_progress_handler(lambda end=deadline: time.perf_counter() > end, 10000)
            started = time.perf_counter()
            try:
                for _row in conn.execute(query):
                    pass
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    report.notes.append(f"query cut short after {options.query_time_limit}s: "
                                        f"{query!r}")
                else:
                    report.notes.append(f"cannot run query {query!r}: {exc}")
                times = []
                break
            finally:
                conn.set_progress_handler(None, 0)
            times.append(time.perf_counter() - started)
        if times:
            times.sort()
            report.add("sqlite_query_duration_seconds", round(times[len(times) // 2], 6),
                       query=query)


def collect_schema_version(report: Report, conn: sqlite3.Connection) -> None:
    if not has_table(conn, "schema_migrations"):
        return
    version = conn.execute(
        "SELECT max(CAST(version AS INTEGER)) FROM schema_migrations").fetchone()[0]
    if version is not None:
        report.schema_version = int(version)
        report.add("sqlite_schema_migration_version", report.schema_version)


def collect_drift(report: Report, migrations_dir: str | None) -> None:
    """Drift against ``<migrations_dir>/schema.sql``, by the migrations' own comparison
    (:mod:`.migration_schema`, called directly: no migration files are loaded)."""
    if not migrations_dir:
        return
    if not os.path.isfile(os.path.join(migrations_dir, "schema.sql")):
        report.notes.append(f"no schema.sql in {migrations_dir}: schema drift not checked")
        return
    from .migration_schema import drift_from_file

    try:
        with open(os.path.join(migrations_dir, "schema.sql"), encoding="utf-8") as handle:
            reference = handle.read()
        conn = connect_readonly(report.db_path)
        try:
            report.drift = drift_from_file(conn, reference)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        report.notes.append(f"schema drift not checked: {exc}")
        return
    report.add("sqlite_schema_drift", int(bool(report.drift)))


def collect_backups(report: Report, backup_dir: str | None) -> None:
    if not backup_dir:
        return
    if not os.path.isdir(backup_dir):
        report.notes.append(f"no backup directory {backup_dir}: backup metrics skipped")
        return
    from .catalog import list_backups

    now = time.time()
    backups = list_backups(backup_dir, report.name, report.db_path)
    dated = [b for b in backups if not b.in_future(now)]
    verified = [b for b in backups if b.verified]
    usable = [b for b in dated if b.verified]
    suspect = [b for b in backups if b.in_future(now) or (
        b.manifest is None and b.manifest_error != "no manifest")]
    report.add("sqlite_backup_catalog_files", len(backups))
    report.add("sqlite_backup_catalog_verified_files", len(verified))
    report.add("sqlite_backup_catalog_suspect_files", len(suspect))
    if dated:
        report.add("sqlite_backup_latest_timestamp_seconds", dated[0].created_at)
    if usable:
        report.add("sqlite_backup_latest_verified_timestamp_seconds", usable[0].created_at)


# ---------------------------------------------------------------------------
# Integrity: what a cheap scrape can see, and the last full check's verdict
# ---------------------------------------------------------------------------
#
# A default scrape reads the header, the schema and sqlite_stat1, and probes
# each table's first and last row (the pages on its leftmost and rightmost
# b-tree path): damage there, or a file shorter than its header says, sets
# sqlite_integrity_probe_ok 0. Damage anywhere else (a leaf in the middle of a table,
# an index that disagrees with its table) needs every page read: that is
# `--integrity-check` (PRAGMA quick_check) or maintain_database.sh check, whose
# last verdicts and times are read from the metrics directory.

def probe_pages(conn: sqlite3.Connection, tables: list[str]) -> str | None:
    """The first damage met reading each table's first and last row, or None."""
    for table in tables:
        name = quote_ident(table)
        for sql in (f"SELECT * FROM {name} LIMIT 1",
                    f"SELECT * FROM {name} ORDER BY rowid DESC LIMIT 1"):
            try:
                conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                continue  # no rowid (WITHOUT ROWID), a virtual table's module missing
            except sqlite3.DatabaseError as exc:
                return f"reading {table}: {exc}"
    return None


def read_header(path: str) -> tuple[bytes, int] | None:
    """The file's first 100 bytes (its SQLite header) and its size; None when
    it cannot be read. Read before this process connects: closing a descriptor
    of the file would drop the POSIX locks a connection of it holds."""
    try:
        with open(path, "rb") as handle:
            return handle.read(100), os.fstat(handle.fileno()).st_size
    except OSError:
        return None


def header_problem(header: tuple[bytes, int] | None, journal_mode: str) -> str | None:
    """A rollback-journal file shorter than the page count its header
    (``read_header``) claims, when that count is valid: truncated. WAL files
    may lag their header."""
    if journal_mode == "wal" or header is None:
        return None
    head, size = header
    if len(head) < 100:
        return "the header is incomplete"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]
    if valid and pages and page_size and size < pages * page_size:
        return f"the file has {size} bytes; its header says {pages} pages of {page_size}"
    return None


def recorded_checks(report: Report, directory: str) -> list[tuple[float | None, bool | None]]:
    """(time, passed) of the last maintain_database.sh check/quick-check recorded
    in ``directory`` (db_metrics' own last --integrity-check is :func:`own_check`)."""
    from .promfile import read_values

    label = f'db="{escape_label(report.name)}"'
    found: list[tuple[float | None, bool | None]] = []
    maintenance = os.path.join(directory, textfile_name(report.name).replace(
        "sqlite_ops_", "sqlite_ops_maintenance_", 1))
    ok = read_values(maintenance, "sqlite_integrity_ok").get(f"sqlite_integrity_ok{{{label}}}")
    success = "sqlite_maintenance_last_success_timestamp_seconds"
    stamps = read_values(maintenance, success)
    times = [stamps.get(f'{success}{{{label},task="{task}"}}') for task in ("check", "quick-check")]
    when = max((t for t in times if t is not None), default=None)
    if ok is not None or when is not None:
        found.append((when, None if ok is None else ok == 1))
    return found


def previous_value(directory: str, report: Report, metric: str) -> float | None:
    """``metric``'s value for this database in db_metrics' previous .prom file
    in ``directory``; None when it has none."""
    from .promfile import read_values

    path = os.path.join(directory, textfile_name(report.name))
    return read_values(path, metric).get(f'{metric}{{db="{escape_label(report.name)}"}}')


def own_check(directory: str, report: Report) -> list[tuple[float, bool | None]]:
    """db_metrics' own last --integrity-check, kept in its previous .prom file."""
    when = previous_value(directory, report, "sqlite_integrity_check_timestamp_seconds")
    ok = previous_value(directory, report, "sqlite_integrity_quick_check_ok")
    return [] if when is None else [(when, None if ok is None else ok == 1)]


def _quick_check(conn: sqlite3.Connection | None, report: Report) -> list[str] | None:
    """PRAGMA quick_check's rows; SQLite calling the file damaged is a row too.
    None, with a note, when it could not run (a lock held past the busy
    timeout, an I/O error): no verdict either way, so the last one stands."""
    assert conn is not None
    try:
        return check_rows(conn)
    except sqlite3.Error as exc:
        report.notes.append(f"PRAGMA quick_check could not run ({exc}): no verdict this time")
        return None


def collect_integrity(report: Report, conn: sqlite3.Connection | None, options: Options,
                      damage: str | None) -> None:
    """sqlite_integrity_probe_ok (this scrape's probe, this run's quick_check, and the
    recorded verdicts) and sqlite_integrity_check_age_seconds."""
    checking = options.integrity_check and conn is not None and damage is None
    checks = recorded_checks(report, options.records_dir) if options.records_dir else []
    now = time.time()
    rows = _quick_check(conn, report) if checking else None
    if rows is not None:
        passed = rows == ["ok"]
        if not passed:
            lines = [line for row in rows for line in str(row).splitlines()
                     if line.strip() and not line.startswith("***")]
            damage = "PRAGMA quick_check: " + "; ".join(lines[:3])
        checks.append((now, passed))
        report.add("sqlite_integrity_check_timestamp_seconds", round(now, 3))
        report.add("sqlite_integrity_quick_check_ok", int(passed))
    elif options.records_dir:
        for when, ok in own_check(options.records_dir, report):  # kept until the next check
            checks.append((when, ok))
            report.add("sqlite_integrity_check_timestamp_seconds", when)
            if ok is not None:
                report.add("sqlite_integrity_quick_check_ok", int(ok))
    # The newest full check decides; the probe's damage overrides any of them.
    dated = sorted((c for c in checks if c[0] is not None), key=lambda c: c[0])
    verdict = dated[-1][1] if dated else next((c[1] for c in checks), None)
    if damage is not None:
        report.damage = damage
        report.notes.append(f"damage found: {damage} (run maintain_database.sh check)")
        verdict = False
    report.add("sqlite_integrity_probe_ok", int(verdict is not False))
    if dated:
        report.add("sqlite_integrity_check_age_seconds", round(max(now - dated[-1][0], 0), 3))
    elif not options.integrity_check:
        report.notes.append("no full integrity check on record (maintain_database.sh check, "
                            "or db_metrics --integrity-check): only the pages this scrape "
                            "reads were checked")


# ---------------------------------------------------------------------------
# Who has the database open, and is a write lock held (no locks taken)
# ---------------------------------------------------------------------------


def collect_processes(report: Report) -> None:
    if not os.path.isdir("/proc/self/fd"):
        report.notes.append("no /proc: open processes not counted")
        return
    db = os.path.realpath(report.db_path)
    found, complete = holders([db, db + "-wal", db + "-shm", db + "-journal"])
    report.add("sqlite_open_processes", len(found))
    if not complete:
        report.notes.append("processes of other users could not be inspected "
                            "(run as the application's user or root to count them)")
    if not found and sqlite_locks_held(db):
        who = "in another PID namespace (a container)" if complete else "this scrape cannot see"
        report.notes.append(f"a process {who} holds the database's SQLite locks: "
                            "sqlite_open_processes counts only the processes it can see")


def write_lock_held(db_path: str) -> bool | None:
    """A writer is active: the WAL write lock (-shm) or the RESERVED byte is
    held. None when it cannot be told: either answer unknown and neither
    held (a WAL writer takes no lock on the database file, so the database's
    "no" says nothing of an -shm that could not be asked)."""
    shm = locks_held(db_path + "-shm", [(WAL_WRITE_LOCK_BYTE, 1, False)])
    if shm:
        return True
    held = locks_held(db_path, [(RESERVED_BYTE, 1, False)])
    return None if held is None or (shm is None and not held) else held


def collect_write_lock(report: Report) -> None:
    held = write_lock_held(report.db_path)
    if held is None:
        report.notes.append("write lock not probed: /proc/locks cannot be read, or the "
                            "database or its -shm cannot be opened or is no regular file")
        return
    report.add("sqlite_write_lock_held", int(held))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))


def render_prometheus(report: Report) -> str:
    lines = [f"# {note}" for note in _comment_safe(report.notes)]
    for metric, samples in report.samples.items():
        kind, text = METRICS[metric]
        lines += family(metric, text, kind=kind, samples=(
            (",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()),
             format_value(value)) for labels, value in samples))
    return "\n".join(lines) + "\n"


def _comment_safe(notes: Iterable[str]) -> list[str]:
    # A note becomes a comment line; it must not look like HELP/TYPE or span lines.
    return [" ".join(("note: " + note).split()) for note in notes]


def render_json(report: Report) -> str:
    import json

    metrics: dict[str, list[dict[str, object]]] = {}
    for metric, samples in report.samples.items():
        metrics[metric] = [{"labels": labels, "value": value} for labels, value in samples]
    return json.dumps({
        "db": report.name,
        "path": os.path.abspath(report.db_path),
        "schema_version": report.schema_version,
        "schema_drift": report.drift,
        "notes": report.notes,
        "metrics": metrics,
    }, indent=2, ensure_ascii=False) + "\n"


def textfile_name(name: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in name)
    return f"sqlite_ops_{safe}.prom"


def write_textfile(directory: str, name: str, text: str,
                   warn: Callable[[str], None] | None = None) -> str:
    """Publish ``text`` as ``<directory>/sqlite_ops_<name>.prom`` (temp file, fsync, rename).
    ``warn`` is told about a directory owned by another user (still written)."""
    import tempfile

    target = os.path.join(directory, textfile_name(name))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot write metrics to {directory}: {exc.strerror}") from None
    problem = dir_problem(directory)
    if problem.startswith("writable"):
        raise OpsError(EX_FAIL, f"not writing metrics into {directory}: it is {problem}, so anyone "
                                "could replace them or plant files there; chmod go-w it")
    if problem and warn is not None:
        warn(f"metrics directory {directory} is {problem}; chown it")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{textfile_name(name)}.tmp.")
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot write metrics to {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # by descriptor: a name could be swapped
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        os.unlink(tmp)
        raise OpsError(EX_FAIL, f"cannot publish {target}: {exc.strerror}") from None
    return target


# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------


def health(db_path: str, quick_check: bool = False,
           busy_timeout: float = BUSY_TIMEOUT) -> tuple[bool, dict[str, object]]:
    """(healthy, details): the database opens read-only and its schema parses;
    with ``quick_check`` also ``PRAGMA quick_check`` is exactly ``ok`` (reads every page)."""
    info: dict[str, object] = {"db": os.path.abspath(db_path)}
    try:
        require_database(db_path)
        conn = connect_readonly(db_path, busy_timeout)
        try:
            info["tables"] = conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
            info["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if quick_check:
                rows = check_rows(conn)
                info["quick_check"] = rows[:10]
                if rows != ["ok"]:
                    info["status"] = "error"
                    info["error"] = "quick_check found a problem"
                    return False, info
        finally:
            conn.close()
    except OpsError as exc:
        info.update(status="error", error=exc.message)
        return False, info
    except sqlite3.Error as exc:
        info.update(status="error", error=database_error(db_path, exc).message)
        return False, info
    info["status"] = "ok"
    return True, info
