"""``db_metrics``: print, publish or serve the metrics of one SQLite database.

    db_metrics [--db PATH] [--config FILE] [--format prometheus|json]
               [--exact-counts] [--table-sizes] [--queries FILE]
               [--time-queries] [--query-runs N] [--textfile DIR]
               [--integrity-check] [--metrics-dir DIR]
               [--dir BACKUP_DIR] [--migrations DIR]
    db_metrics serve [--listen 127.0.0.1:9560] [same options]

``serve`` answers ``GET /metrics`` (Prometheus text), ``GET /health`` (JSON; 200
or 503; ``?quick_check=1`` adds PRAGMA quick_check) and 404 elsewhere, bound to
127.0.0.1 unless told otherwise. Settings: flag > environment > config file >
default (DB_PATH, BACKUP_DIR, MIGRATIONS_DIR, METRICS_LISTEN).

Every scrape checks the pages it reads (header, schema, each table's first
and last row); ``--integrity-check`` adds PRAGMA quick_check (every page).
``sqlite_integrity_ok`` also reflects the last full check on record
(maintain_database.sh's in METRICS_DIR, or the previous --integrity-check).

Exit codes: 0 done, 1 failed, 2 usage (bad option, missing or non-SQLite
database), 4 the database is damaged (metrics still printed or written), 75 the
database stayed locked.
"""

from __future__ import annotations

import os
import sys

from .common import EX_FAIL, EX_INTEGRITY, EX_OK, EX_USAGE, SOPS_DEFAULTS, OpsError, Settings, fail
from .metrics import DEFAULT_QUERY_RUNS, Options, collect, render_json, render_prometheus

PROG = "db_metrics"


def build_parser():  # -> argparse.ArgumentParser (imported here: start-up cost)
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROG, description="Metrics of an SQLite database for Prometheus.", allow_abbrev=False,
        epilog="Exit codes: 0 done, 1 failed, 2 usage or not an SQLite database (a wrong --db, "
               "or page 1 destroyed), 4 damaged database, 75 locked. With --textfile a failed "
               "scrape still writes the file: sqlite_metrics_scrape_success 0.")
    parser.add_argument("command", nargs="?", choices=["serve"],
                        help="serve: answer GET /metrics and GET /health over HTTP")
    parser.add_argument("--db", help="the database (DB_PATH)")
    parser.add_argument("--config", help="KEY=value settings file")
    parser.add_argument("--format", choices=["prometheus", "json"], default="prometheus")
    parser.add_argument("--exact-counts", action="store_true",
                        help="count rows with SELECT count(*) (full scans) instead of "
                             "sqlite_stat1 estimates")
    parser.add_argument("--table-sizes", action="store_true",
                        help="bytes per table and index from dbstat (reads every page)")
    parser.add_argument("--queries", metavar="FILE",
                        help="queries to plan, one per line (default: "
                             "MIGRATIONS_DIR/queries.sql when present)")
    parser.add_argument("--time-queries", action="store_true",
                        help="also run each query and report the median time")
    parser.add_argument("--query-runs", type=int, default=DEFAULT_QUERY_RUNS, metavar="N",
                        help=f"runs per timed query (default {DEFAULT_QUERY_RUNS})")
    parser.add_argument("--textfile", metavar="DIR",
                        help="write DIR/sqlite_ops_<name>.prom atomically instead of stdout")
    parser.add_argument("--integrity-check", action="store_true",
                        help="also run PRAGMA quick_check (reads every page: from a cron job, "
                             "not every scrape); exit 4 when it fails")
    parser.add_argument("--metrics-dir", metavar="DIR",
                        help="where maintenance records its checks (METRICS_DIR; default: "
                             "--textfile's DIR)")
    parser.add_argument("--dir", metavar="BACKUP_DIR", help="backup directory (BACKUP_DIR)")
    parser.add_argument("--migrations", metavar="DIR", help="migrations (MIGRATIONS_DIR)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="serve: address (METRICS_LISTEN, default "
                             f"{SOPS_DEFAULTS['METRICS_LISTEN']})")
    return parser


class UsageError(Exception):
    pass


def attach_values(parser, argv: list[str]) -> list[str]:
    """``--opt VALUE`` as ``--opt=VALUE`` for the options that take a value, so
    the word after ``--db`` is its value even when it starts with "-" (a
    database named ``-lead.db``), as in the bash scripts."""
    valued = {opt for action in parser._actions if action.nargs is None  # noqa: SLF001
              for opt in action.option_strings if opt.startswith("--")}
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] in valued and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def parse_args(argv: list[str]):
    parser = build_parser()
    parser.error = _raise_usage  # one line and exit 2, from main()
    args = parser.parse_args(attach_values(parser, argv))
    if args.query_runs < 1:
        raise UsageError("--query-runs must be at least 1")
    return args


def _raise_usage(message: str) -> None:
    raise UsageError(message)


def options_from(args, settings: Settings) -> Options:
    migrations = settings.get("MIGRATIONS_DIR")
    queries = args.queries
    if queries is not None and not os.path.isfile(queries):
        raise OpsError(EX_USAGE, f"queries file not found: {queries}")
    if queries is None and migrations:
        queries = os.path.join(migrations, "queries.sql")
    return Options(exact_counts=args.exact_counts, table_sizes=args.table_sizes,
                   queries_file=queries, time_queries=args.time_queries,
                   query_runs=args.query_runs, migrations_dir=migrations,
                   backup_dir=settings.get("BACKUP_DIR"), integrity_check=args.integrity_check,
                   records_dir=args.textfile or settings.get("METRICS_DIR") or None)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise OpsError(EX_USAGE, f"--listen needs HOST:PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def render(report, fmt: str) -> str:
    return render_json(report) if fmt == "json" else render_prometheus(report)


def run_once(db_path: str, args, options: Options) -> int:
    try:
        report = collect(db_path, options)
    except OpsError as exc:
        if args.textfile:  # never leave the last good scrape standing for this one
            from .metrics import failed_scrape, write_textfile

            failed = failed_scrape(db_path, exc, args.textfile)
            try:
                write_textfile(args.textfile, failed.name, render_prometheus(failed))
            except OpsError as unwritten:  # the scrape's own error is the one to exit with
                print(f"{PROG}: warning: {unwritten.message}", file=sys.stderr)
        raise
    text = render(report, args.format)
    if args.textfile:
        from .metrics import write_textfile

        print(write_textfile(args.textfile, report.name, render_prometheus(report)))
    else:
        sys.stdout.write(text)
    if report.damage:
        damage = report.damage.replace("\n", " ")
        print(f"{PROG}: {report.db_path} is damaged: {damage}; run "
              "maintain_database.sh check, then see the incident runbook", file=sys.stderr)
        return EX_INTEGRITY
    return EX_OK


def serve(db_path: str, address: tuple[str, int], options: Options) -> int:
    """Answer /metrics and /health until interrupted."""
    from .metrics_server import make_server

    try:
        server = make_server(db_path, address, options)
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot listen on {address[0]}:{address[1]}: "
                                f"{exc.strerror}") from None
    host, port = server.server_address[:2]
    print(f"Listening on http://{host}:{port}/metrics", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        settings = Settings({
            "DB_PATH": args.db, "BACKUP_DIR": args.dir, "MIGRATIONS_DIR": args.migrations,
            "METRICS_LISTEN": args.listen, "METRICS_DIR": args.metrics_dir}, args.config,
            prog=PROG)
        db_path = settings.get("DB_PATH")
        options = options_from(args, settings)
        if args.command == "serve":
            address = parse_listen(settings.get("METRICS_LISTEN"))
            return serve(db_path, address, options)
        return run_once(db_path, args, options)
    except UsageError as exc:
        print(f"{PROG}: {exc} (see --help)", file=sys.stderr)
        return EX_USAGE
    except OpsError as exc:
        return fail(PROG, exc)
    except BrokenPipeError:
        return EX_OK


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
