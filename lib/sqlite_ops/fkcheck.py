"""Foreign-key violations, counted fast, with exactly PRAGMA foreign_key_check's answer.

``PRAGMA foreign_key_check`` walks every child table in rowid order and seeks
the parent key of each row: where the child rows are not stored in their
parents' order, that is one random seek per row, nearly all of them missing a
small page cache (tests/perf/bench_fk.py: 5.5x slower than this, warm, on 3
million such rows). ``check()`` asks the same question with one
anti-join per foreign key,

    SELECT count(*) FROM child AS c
      LEFT JOIN parent AS p ON p.pk1 = +c.k1 AND ...
     WHERE c.k1 IS NOT NULL AND ... AND p.pk1 IS NULL

which the planner runs over the child's index on the key columns where there
is one (a covering index: small, and in key order, so the parent seeks come in
order too), and runs ``PRAGMA foreign_key_check(child)`` only for a table
where it found something, to name the exact rows.

Why it is the same answer: the PRAGMA skips a child row with a NULL in any key
column, applies the parent column's affinity to the child value and compares
with the parent column's collation (SQLite only uses a parent index whose
collations are the columns' own). In ``p.pk = +c.k`` the unary ``+`` strips the
child value's affinity, so SQLite applies the parent column's affinity to it,
and a comparison takes the collation of its left-hand column. A parent table
that does not exist makes every non-NULL child key a violation, as in the
PRAGMA. A foreign key whose parent columns have no unique index ("foreign key
mismatch") makes the PRAGMA fail as a whole; ``EXPLAIN PRAGMA
foreign_key_check(child)`` reports that without reading any row, and so does
``check()``. tests/python/test_fkcheck.py holds the property test against the
PRAGMA.

Accepted orphans (``FK_ACCEPT``): an application can orphan child rows by
design (nMapping+'s ``INSERT OR REPLACE INTO scans`` gives a replaced scan a
new id, and the ``network_changes`` rows of the old one keep pointing at it).
``FK_ACCEPT`` lists those child tables, comma-separated, each optionally with a
ceiling: ``network_changes`` (any number of its rows) or
``network_changes:5000`` (up to 5000). Violations in any other table, or more
than the ceiling, are still problems.

CLI (``maintain_database.sh check``): ``python3 -m sqlite_ops.fkcheck
[--accept FK_ACCEPT] [--busy-timeout-ms N] DB`` prints the rows of the problems
(``table|rowid|parent|fkid``, as the sqlite3 CLI prints the PRAGMA) and exits
4 when there is any; else it exits 0, printing the line on the orphans it
accepted, if any. When SQLite stops it, it prints ``Error: `` and SQLite's
message, and exits
4 for a damaged file, 75 for a lock held past the timeout, 1 for anything
else (the check could not run: nothing found, nothing ruled out).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any

from sqlite_ops.common import (
    EX_INTEGRITY,
    EX_OK,
    EX_USAGE,
    OpsError,
    fail,
    quote_ident,
    sqlite_error_code,
)

PROG = "maintain_database.sh"


@dataclass
class ForeignKeyReport:
    """What the check found. ``count`` is None when it cannot run (``error`` says why)."""

    count: int | None
    by_table: dict[str, int] = field(default_factory=dict)  # child table -> violating rows
    # child table -> the PRAGMA's first row for it: (table, rowid, parent, fkid)
    firsts: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    error: str | None = None

    @property
    def first(self) -> tuple[Any, ...] | None:
        """The first row PRAGMA foreign_key_check reports, or None."""
        return next(iter(self.firsts.values()), None)


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]


def _foreign_keys(conn: sqlite3.Connection, table: str) -> dict[int, dict[str, Any]]:
    keys: dict[int, dict[str, Any]] = {}
    for fk_id, _seq, parent, child_col, parent_col, *_ in conn.execute(
            "SELECT * FROM pragma_foreign_key_list(?) ORDER BY id, seq", (table,)):
        key = keys.setdefault(fk_id, {"parent": parent, "child": [], "to": []})
        key["child"].append(child_col)
        key["to"].append(parent_col)
    return keys


def _parent_exists(conn: sqlite3.Connection, parent: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') "
                        "AND name = ? COLLATE NOCASE", (parent,)).fetchone() is not None


def _parent_columns(conn: sqlite3.Connection, parent: str, n: int) -> list[str]:
    """The parent key a foreign key that names no parent columns refers to:
    the parent's primary key, in its declared order (the rowid alias for an
    INTEGER PRIMARY KEY)."""
    pk = sorted((row[5], row[1]) for row in conn.execute(
        "SELECT * FROM pragma_table_info(?)", (parent,)) if row[5])
    return [name for _, name in pk][:n]


def _violations(conn: sqlite3.Connection, table: str, key: dict[str, Any]) -> int:
    child = [quote_ident(c) for c in key["child"]]
    not_null = " AND ".join(f"c.{col} IS NOT NULL" for col in child)
    if not _parent_exists(conn, key["parent"]):
        sql = f"SELECT count(*) FROM {quote_ident(table)} AS c WHERE {not_null}"
        return conn.execute(sql).fetchone()[0]
    to = key["to"]
    if any(col is None for col in to):
        to = _parent_columns(conn, key["parent"], len(child))
    match = " AND ".join(f"p.{quote_ident(p)} = +c.{c}" for p, c in zip(to, child))
    # A matched parent has a non-NULL key (it equals a non-NULL child value),
    # so "no parent" is its first key column being NULL after the LEFT JOIN: a
    # plain join loop, several times faster than a NOT EXISTS subquery per row.
    sql = (f"SELECT count(*) FROM {quote_ident(table)} AS c "
           f"LEFT JOIN {quote_ident(key['parent'])} AS p ON {match} "
           f"WHERE {not_null} AND p.{quote_ident(to[0])} IS NULL")
    return conn.execute(sql).fetchone()[0]


def check(conn: sqlite3.Connection) -> ForeignKeyReport:
    """Count the rows ``PRAGMA foreign_key_check`` would report, per child table."""
    keyed = [(table, keys) for table in _tables(conn) if (keys := _foreign_keys(conn, table))]
    for table, _ in keyed:
        try:  # prepares the PRAGMA (where SQLite looks for the parent indexes); reads no row
            conn.execute(f"EXPLAIN PRAGMA foreign_key_check({quote_ident(table)})").fetchall()
        except sqlite3.OperationalError as exc:
            if "foreign key mismatch" not in str(exc):
                raise
            return ForeignKeyReport(count=None, error=str(exc))
    report = ForeignKeyReport(count=0)
    for table, keys in keyed:
        found = sum(_violations(conn, table, key) for key in keys.values())
        if found:
            report.by_table[table] = found
            report.count = (report.count or 0) + found
            report.firsts[table] = tuple(conn.execute(
                f"PRAGMA foreign_key_check({quote_ident(table)})").fetchone())
    return report


# ---------------------------------------------------------------------------
# Accepted orphans (FK_ACCEPT)
# ---------------------------------------------------------------------------


def parse_accept(text: str | None) -> dict[str, int | None]:
    """``"network_changes, other:10"`` -> ``{"network_changes": None, "other": 10}``
    (None: any number). OpsError(EX_USAGE) for a malformed entry."""
    accepted: dict[str, int | None] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, ceiling = entry.rpartition(":")
        if not sep:
            name, ceiling = entry, ""
        name = name.strip()
        if sep and not ceiling.strip().isdigit() or not name:
            raise OpsError(EX_USAGE, f"FK_ACCEPT entry {entry!r} is not TABLE or TABLE:N "
                                     "(N: the most orphaned rows accepted in TABLE)")
        accepted[name] = int(ceiling) if sep else None
    return accepted


def unaccepted(report: ForeignKeyReport, accepted: dict[str, int | None]) -> dict[str, int]:
    """The violations FK_ACCEPT does not cover: {child table: rows}. A table over
    its ceiling counts with all its rows."""
    return unaccepted_rows(report.by_table, accepted)


def unaccepted_rows(by_table: dict[str, int], accepted: dict[str, int | None]) -> dict[str, int]:
    """:func:`unaccepted` of a count per child table (a manifest's
    ``foreign_key_violations_by_table``)."""
    problems = {}
    for table, rows in by_table.items():
        if table in accepted:
            ceiling = accepted[table]
            if ceiling is None or rows <= ceiling:
                continue
        problems[table] = rows
    return problems


def manifest_fields(report: ForeignKeyReport, accepted: dict[str, int | None]) -> dict[str, Any]:
    """What a backup's manifest records of ``report`` (catalog.FK_FIELDS): the
    count (None: the check cannot run, with the error); with violations, the
    rows per child table and how many of them ``accepted`` (FK_ACCEPT) covers."""
    found: dict[str, Any] = {"foreign_key_violations": report.count}
    if report.count is None:
        found["foreign_key_check_error"] = report.error
    elif report.count:
        found["foreign_key_violations_by_table"] = report.by_table
        found["foreign_key_violations_accepted"] = (
            report.count - sum(unaccepted(report, accepted).values()))
    return found


def describe_accepted(report: ForeignKeyReport, accepted: dict[str, int | None]) -> str | None:
    """One line on the orphans FK_ACCEPT accepted, or None."""
    problems = unaccepted(report, accepted)
    taken = {t: n for t, n in report.by_table.items() if t not in problems}
    if not taken:
        return None
    parts = ", ".join(f"{n} in {quote_ident(t)}" for t, n in sorted(taken.items()))
    return f"foreign_key_check: accepted orphaned rows (FK_ACCEPT): {parts}"


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m sqlite_ops.fkcheck",
                                     description="Foreign-key check with accepted orphans.")
    parser.add_argument("db")
    parser.add_argument("--accept", default="", help="FK_ACCEPT: TABLE[:N],...")
    parser.add_argument("--prog", default=PROG)
    parser.add_argument("--busy-timeout-ms", type=int, default=5000,
                        help="how long to wait for a lock (SQLITE_BUSY_TIMEOUT_MS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from sqlite_ops.common import readonly_uri

    args = _parser().parse_args(argv)
    problems: dict[str, int] = {}
    try:
        accepted = parse_accept(args.accept)
        conn = sqlite3.connect(readonly_uri(args.db), uri=True, isolation_level=None,
                               timeout=args.busy_timeout_ms / 1000)
        try:
            report = check(conn)
            if report.count is None:
                print(report.error)
                return EX_INTEGRITY
            problems = unaccepted(report, accepted)
            for table in sorted(problems):
                for row in conn.execute(f"PRAGMA foreign_key_check({quote_ident(table)})"):
                    print("|".join("" if v is None else str(v) for v in row))
        finally:
            conn.close()
    except OpsError as exc:
        return fail(args.prog, exc)
    except sqlite3.Error as exc:  # damaged: 4; locked past the timeout: 75; else 1
        print(f"Error: {exc}")  # as the sqlite3 CLI says it: no row of the check
        # Violations counted before the error stopped their listing stand.
        return EX_INTEGRITY if problems else sqlite_error_code(exc)
    note = describe_accepted(report, accepted)
    if problems:
        if note:
            print(f"{args.prog}: {note}", file=sys.stderr)
        return EX_INTEGRITY
    if note:
        print(note)
    return EX_OK


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
