"""The ``migrate`` command line: parse arguments, call :class:`Migrator`, print results.

Results go to stdout; an expected failure is one ``migrate: ...`` line on stderr
and a contract exit code. The parser is a small table-driven one rather than
argparse: ``migrate up`` runs on every deploy, and its no-op should cost little
more than starting Python.
"""

from __future__ import annotations

import os
import sys

from .common import EX_OK, EX_USAGE, EX_VERIFY, OpsError, Settings, fail, require_regular_file

PROG = "migrate"

USAGE = """\
usage: migrate [--db PATH] [--migrations DIR] [--config FILE] [--lock-timeout N] COMMAND ...

Numbered schema migrations for an SQLite database.

commands:
  status [--json]          applied / pending / edited / missing file, one line each
  up [--to V] [--dry-run] [--no-backup] [--allow-out-of-order] [--create]
                           apply pending migrations (backup first)
  down (--steps N | --to V) [--dry-run] [--no-backup]
                           revert the most recently applied migrations (backup first)
  validate                 checksums of applied migrations vs their files (exit 3)
  new NAME [--python]      create the next numbered migration file
  baseline V [--force]     record migrations 1..V as applied without running them
  schema [--check]         write migrations/schema.sql, or compare --db with it (exit 3)

global options (before or after the command):
  --db PATH          the database (DB_PATH)
  --migrations DIR   migration files (MIGRATIONS_DIR)
  --config FILE      KEY=value configuration file (SQLITE_OPS_CONFIG)
  --lock-timeout N   seconds to wait for another run's lock (LOCK_TIMEOUT, default 0)
  -h, --help         this help; 'migrate COMMAND --help' for one command

exit codes: 0 done, 1 failed (the message says what changed), 2 usage or
configuration error, 3 verification failed (edited migration, validate section
false, schema drift), 4 the database is damaged, 75 busy (another run holds the
lock, or the database stayed locked).
"""

HELP = {
    "status": """\
usage: migrate status [--json]

One line per migration: applied (with time), pending, edited (applied, file
changed since) or missing file (applied, file gone). Then a note for a database
with tables but no history yet (the version its schema matches, which 'up'
would adopt, or how far it is from the closest), and for another tool's history
table (an application's schema_version, say): shown, never changed, never
mapped onto these files. --json prints the stable JSON document described in
docs/operations/database-management.md. Read-only.
""",
    "up": """\
usage: migrate up [--to V] [--dry-run] [--no-backup] [--allow-out-of-order] [--create]

Apply pending migrations in version order, each in one transaction together with
its validation and its schema_migrations row. Everything is checked before
anything is written; a verified backup (as scripts/backup_database.sh takes
it, in this process, under this run's lock) is taken only when a migration is
about to be applied to an existing database.

A database with tables but no migration history is adopted: its schema is
compared with what the migrations build, and where it matches a version, the
migrations up to it are recorded as applied (said on stdout); where it matches
none, up refuses (exit 3) listing the differences and writes nothing.

  --to V                 apply only migrations numbered V or lower
  --dry-run              print the plan and lint warnings; change nothing
  --no-backup            skip the backup (a no-transaction migration still gets one)
  --allow-out-of-order   apply a pending migration older than the newest applied one
  --create               create the database even though BACKUP_DIR holds backups
                         of it (without it, up refuses: the database was lost,
                         restore the newest backup instead; exit 2)

Exit 3 when an applied migration was edited, a validate section is false or the
schema of an unadopted database matches no version; nothing is applied then.
""",
    "down": """\
usage: migrate down (--steps N | --to V) [--dry-run] [--no-backup]

Revert applied migrations newest-applied first, each in one transaction. Refuses
before touching anything when one of them has no down section, is edited or its
file is missing. Takes a verified backup first unless --no-backup.

  --steps N     revert the N most recently applied migrations
  --to V        revert every applied migration numbered above V (0: all)
  --dry-run     print the plan; change nothing
""",
    "validate": """\
usage: migrate validate

Compare the checksum of every applied migration with its file. Exit 3 naming
each edited file. Read-only.
""",
    "new": """\
usage: migrate new NAME [--python]

Create the next numbered migration, NNN_NAME.sql (or .py with --python), from a
template, and print its path.
""",
    "baseline": """\
usage: migrate baseline V [--force]

Adopt a database created without migrations: record every migration numbered
up to V as applied, without running it. The database's schema is compared with
the one migrations 1..V build first: any difference is listed and nothing is
recorded (exit 3). --force records anyway and prints the differences. Refuses a
database that already has migration history. Another tool's history table
(schema_version, migrations...) is left as it is.
""",
    "schema": """\
usage: migrate schema [--check]

Apply every migration to a fresh in-memory database and write the resulting
schema to MIGRATIONS_DIR/schema.sql. With --check, compare the --db database
with schema.sql instead and print each difference (exit 3 on drift).
""",
}

GLOBAL_OPTIONS = {"--db": "DB_PATH", "--migrations": "MIGRATIONS_DIR", "--config": "config",
                  "--lock-timeout": "LOCK_TIMEOUT"}

# command -> (flags, options taking a value, number of positional arguments)
COMMANDS: dict[str, tuple[frozenset[str], frozenset[str], int]] = {
    "status": (frozenset({"--json"}), frozenset(), 0),
    "up": (frozenset({"--dry-run", "--no-backup", "--allow-out-of-order", "--create"}),
           frozenset({"--to"}), 0),
    "down": (frozenset({"--dry-run", "--no-backup"}), frozenset({"--steps", "--to"}), 0),
    "validate": (frozenset(), frozenset(), 0),
    "new": (frozenset({"--python"}), frozenset(), 1),
    "baseline": (frozenset({"--force"}), frozenset(), 1),
    "schema": (frozenset({"--check"}), frozenset(), 0),
}


class Args:
    def __init__(self) -> None:
        self.command: str | None = None
        self.settings: dict[str, str] = {}
        self.options: dict[str, str | bool] = {}
        self.positional: list[str] = []
        self.help = False


def usage_error(message: str, command: str | None = None) -> OpsError:
    hint = f"'migrate {command} --help'" if command else "'migrate --help'"
    return OpsError(EX_USAGE, f"{message}; see {hint}")


def parse_args(argv: list[str]) -> Args:
    """Global options anywhere, one command, its options and positionals."""
    args = Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            args.help = True
            continue
        if arg == "help" and args.command is None:
            args.help = True
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flags, valued, _ = COMMANDS.get(args.command or "", (frozenset(), frozenset(), 0))
        if name in GLOBAL_OPTIONS or name in valued:
            if not eq:
                if i >= len(argv):
                    raise usage_error(f"{name} needs a value", args.command)
                value = argv[i]
                i += 1
            if name in GLOBAL_OPTIONS:
                args.settings[GLOBAL_OPTIONS[name]] = value
            else:
                args.options[name] = value
        elif name in flags:
            if eq:
                raise usage_error(f"{name} takes no value", args.command)
            args.options[name] = True
        elif arg.startswith("-") and arg != "-":
            where = f" for '{args.command}'" if args.command else ""
            raise usage_error(f"unknown option {name}{where}", args.command)
        elif args.command is None:
            if arg not in COMMANDS:
                raise usage_error(f"unknown command {arg!r}")
            args.command = arg
        else:
            args.positional.append(arg)
    if args.help:
        return args
    if args.command is None:
        raise usage_error("no command given")
    wanted = COMMANDS[args.command][2]
    if len(args.positional) != wanted:
        if wanted:
            raise usage_error(f"'{args.command}' needs exactly one argument", args.command)
        raise usage_error(f"unexpected argument {args.positional[0]!r}", args.command)
    return args


def _int(value: str | bool | None, what: str, command: str) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise usage_error(f"{what} must be a whole number, not {value!r}", command) from None


def _say(line: str) -> None:
    print(line, flush=True)


def _notice(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def run(args: Args) -> int:
    from .migration_manager import Migrator

    settings = Settings(
        {k: v for k, v in args.settings.items() if k != "config"},
        config_path=args.settings.get("config"), prog=PROG,
    )
    require_regular_file(settings.get("DB_PATH"))
    migrator = Migrator(
        settings.get("DB_PATH"),
        settings.get("MIGRATIONS_DIR"),
        lock_timeout=settings.get_int("LOCK_TIMEOUT"),
        backup_dir=settings.get("BACKUP_DIR") or None,
    )
    command = args.command
    opts = args.options
    if command == "up":
        return cmd_up(migrator, opts)
    if command == "status":
        return cmd_status(migrator, bool(opts.get("--json")))
    if command == "down":
        return cmd_down(migrator, opts)
    if command == "validate":
        return cmd_validate(migrator)
    if command == "new":
        _say(migrator.new(args.positional[0], python=bool(opts.get("--python"))))
        return EX_OK
    if command == "baseline":
        version = _int(args.positional[0], "V", "baseline")
        assert version is not None
        chosen, drift = migrator.baseline(version, force=bool(opts.get("--force")))
        for m in chosen:
            _say(f"recorded {m.filename} as applied (not run)")
        if drift:
            _notice(f"recorded despite {len(drift)} difference(s) from the schema the "
                    "migrations build (--force):")
            for line in drift:
                _say(f"difference: {line}")
        return EX_OK
    if command == "schema":
        return cmd_schema(migrator, bool(opts.get("--check")))
    raise AssertionError(command)


def cmd_up(migrator, opts: dict) -> int:  # noqa: ANN001 - Migrator, imported lazily
    to = _int(opts.get("--to"), "--to", "up")
    dry_run = bool(opts.get("--dry-run"))

    def progress(m, ms: int | None) -> None:  # noqa: ANN001
        if ms is None:
            _say(f"skipped {m.filename} (applied by another run)")
        else:
            _say(f"applied {m.filename} ({ms} ms)")

    if dry_run:
        result = migrator.up(to, dry_run=True, create=bool(opts.get("--create")),
                             allow_out_of_order=bool(opts.get("--allow-out-of-order")))
        if result.adopted:
            _say(f"would adopt the database: {_adopted(result.adopted, dry_run=True)}")
        for m in result.planned:
            _say(f"would apply {m.filename}")
        for warning in result.warnings:
            _say(f"warning: {warning}")
        if not result.planned:
            _say("nothing to apply")
        return EX_OK
    result = migrator.up(
        to,
        backup=not opts.get("--no-backup"),
        allow_out_of_order=bool(opts.get("--allow-out-of-order")),
        create=bool(opts.get("--create")),
        progress=progress,
        notice=_notice,
        on_backup=lambda path: _say(f"backup: {path}"),
        on_adopt=lambda adopted: _say(f"adopting the database: {_adopted(adopted)}"),
    )
    if result.upgraded_layout:
        _say(f"upgraded schema_migrations from the {result.upgraded_layout} layout")
    if not result.planned:
        _say("up to date")
    return EX_OK


def _adopted(adopted: list, dry_run: bool = False) -> str:
    last = adopted[-1]
    verb = "would be recorded" if dry_run else "recorded"
    return (f"its schema is the one migrations {adopted[0].version}..{last.version} build; "
            f"{len(adopted)} migration(s) through {last.filename} {verb} as applied (not run)")


def cmd_down(migrator, opts: dict) -> int:  # noqa: ANN001
    steps = _int(opts.get("--steps"), "--steps", "down")
    to = _int(opts.get("--to"), "--to", "down")
    if (steps is None) == (to is None):
        raise usage_error("down needs exactly one of --steps N or --to V", "down")
    if opts.get("--dry-run"):
        result = migrator.down(steps, to, dry_run=True)
        for m in result.planned:
            _say(f"would revert {m.filename}")
        if not result.planned:
            _say("nothing to revert")
        return EX_OK
    result = migrator.down(
        steps, to, backup=not opts.get("--no-backup"),
        progress=lambda m, ms: _say(f"reverted {m.filename} ({ms} ms)"),
        on_backup=lambda path: _say(f"backup: {path}"),
    )
    if not result.planned:
        _say("nothing to revert")
    return EX_OK


def _entry_line(entry) -> str:  # noqa: ANN001
    label = entry.filename or f"({entry.name})"
    state = entry.state
    if state == "applied":
        text = f"applied {entry.applied_at}"
    elif state == "pending":
        text = "pending (out of order)" if entry.out_of_order else "pending"
    elif state == "edited":
        text = f"EDITED: applied {entry.applied_at}, file changed since"
    else:
        text = f"MISSING FILE: applied {entry.applied_at}"
    return f"{entry.version:03d}  {label:<40} {text}"


def cmd_status(migrator, as_json: bool) -> int:  # noqa: ANN001
    status = migrator.status()
    if as_json:
        import json

        _say(json.dumps(status.as_dict(), indent=2))
        return EX_OK
    for entry in status.entries:
        _say(_entry_line(entry))
    if not status.entries:
        _say(f"no migrations in {migrator.migrations_dir}")
    if status.unadopted:
        _say(_unadopted_note(status.adoption or {}))
    for history in status.foreign:
        _say(f"note: {history.describe()} is another tool's migration history; it is left "
             "as it is and its numbers are not mapped onto these files")
    return EX_OK


def _unadopted_note(adoption: dict) -> str:
    note = "note: the database has tables but no sqlite-ops history"
    if adoption.get("matches") is not None:
        return (f"{note}; its schema is the one migrations 1..{adoption['matches']} build: "
                "'migrate up' records them as applied and applies the rest")
    differences = adoption.get("differences") or []
    closest = adoption.get("closest")
    where = f"closest: {closest}, " if closest else ""
    return (f"{note}, and its schema is not one the migrations build ({where}"
            f"{len(differences)} difference(s), listed by 'migrate up --dry-run'): 'migrate "
            "up' refuses it; record the version it is at with 'migrate baseline V'")


def cmd_validate(migrator) -> int:  # noqa: ANN001
    from .migration_manager import refuse_edited

    entries = migrator.validate(raise_on_edited=False)
    for entry in entries:
        _say(_entry_line(entry))
    refuse_edited(entries, changed="nothing")
    return EX_OK


def cmd_schema(migrator, check: bool) -> int:  # noqa: ANN001
    if not check:
        _say(migrator.write_schema())
        return EX_OK
    drift = migrator.check_schema()
    for line in drift:
        _say(line)
    if drift:
        raise OpsError(EX_VERIFY, f"{len(drift)} difference(s) between {migrator.db_path} and "
                                  f"{migrator.schema_path}; apply pending migrations or put "
                                  "the manual change into a migration")
    _say(f"no drift: {migrator.db_path} matches {migrator.schema_path}")
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.help:
            print(HELP.get(args.command or "", USAGE), end="")
            return EX_OK
        return run(args)
    except OpsError as error:
        return fail(PROG, error)
    except KeyboardInterrupt:
        _notice("interrupted")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
