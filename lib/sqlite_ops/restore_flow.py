"""One restore, read top to bottom: every action of ``restore_database.sh``.

The script parses the command line and settles the settings (flag >
environment > config file > default), then starts this module once::

    python3 -m sqlite_ops.restore_flow ACTION [SETTINGS...] -- [BACKUP]

ACTION is ``list``, ``verify``, ``drill``, ``to`` or ``restore``. Each is one
function below that reads as a list of steps, one comment and one call each
(the steps themselves live in :mod:`sqlite_ops.restore`); its state (the
backup chosen, the verified work file, the safety backup) stays in memory from
the first step to the receipt. The safety backup is a library call
(:func:`sqlite_ops.backup.take_backup`) under the restore's own lock.

Interruptions (Ctrl-C, SIGTERM, SIGHUP) say what the step they cut left, from
``Run.step``: nothing changed (before the database is touched), the safety
backup cut short (the database was not touched), the state the write left in
the database (found out, never guessed: ``restore.interrupted_state``), or,
once the restore was written and checked, the receipt first and then the
signal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_ops import catalog, integrity, promfile, restore
from sqlite_ops.backup import Interrupted, prepare_dir, sweep_temps, take_backup
from sqlite_ops.common import (
    EX_BUSY,
    EX_FAIL,
    EX_INTEGRITY,
    EX_INTERRUPTED,
    EX_OK,
    EX_USAGE,
    EX_VERIFY,
    HOT_JOURNAL_ROLLED_BACK,
    Log,
    OpsError,
    OpsLock,
    fail,
    fsync_path,
    hold,
    is_sqlite_file,
    roll_back_hot_journal,
    shell_command,
    sweep_own_temps,
)
from sqlite_ops.start import SIGNALS, on_stop_signals

PROG = restore.PROG
CONFIRMED_LOCK_WAIT = 300  # seconds to wait for the lock once a person said yes
RECORD_LOCK_WAIT = 10  # seconds a drill waits for the lock to record its integrity_check
OFFSITE_CACHE = ".offsite-cache"  # in BACKUP_DIR: where --from downloads

# The restore's gauges, name then help, in file order.
RESTORE_METRICS = (
    ("sqlite_restore_last_success_timestamp_seconds",
     "Time of the last successful restore of this database."),
    ("sqlite_restore_last_duration_seconds",
     "Duration of the last successful restore (verify, safety backup, replace, check)."),
    ("sqlite_restore_drill_last_success_timestamp_seconds",
     "Time of the last successful restore drill."),
    ("sqlite_restore_drill_duration_seconds",
     "Recovery time measured by the last successful drill (verify, restore, check)."),
    ("sqlite_restore_drill_last_run_success", "1 when the last restore drill succeeded, else 0."),
)


# ---------------------------------------------------------------------------
# Settings and state
# ---------------------------------------------------------------------------


@dataclass
class Options:
    """What restore_database.sh settled: the command line and the settings."""

    action: str
    spec: str = ""
    db: str = ""
    backup_dir: str = ""
    migrations: str = ""
    metrics_dir: str = ""
    lock_timeout: int = 0
    fk_accept: str = ""
    busy_timeout_ms: int = 5000
    compression: str = "zstd"  # the safety backup's (COMPRESS)
    host: str = ""  # OFFSITE_HOST ("": the short host name)
    remote: str = ""  # --from
    to: str = ""
    yes: bool = False
    force: bool = False
    json: bool = False
    quiet: bool = False
    syslog: bool = False
    configured_db: str = ""  # DB_PATH as configured, when --db overrode it
    script: str = ""  # restore_database.sh itself, for the undo command
    started: float | None = None  # when the script started: the time taken counts from it


@dataclass
class Run:
    """One run's state, in memory from the first step to the receipt."""

    opts: Options
    start: float = field(default_factory=time.time)
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d_%H%M%S", time.gmtime()))
    step: str = "plan"  # plan, prompt, safety, replace, finished (written and checked)
    target: str = ""
    backup: str = ""
    work_dir: str = ""
    held: list[int] = field(default_factory=list)  # descriptors holding its temp dirs
    prompt_seconds: float = 0.0  # spent waiting for the operator's yes
    report: restore.Report | None = None
    safety: str = ""
    rolled_back: bool = False  # the safety backup first rolled back a hot journal
    safety_manifest: dict[str, Any] | None = None
    raw_copy: str = ""
    applied: restore.ApplyState | None = None
    pending: int | None = None  # a signal held once the restore was written and checked
    lock: OpsLock | None = None
    remote_name: str = ""  # with --from: REMOTE/<host>/<name>/<file>
    cleanup: list[str] = field(default_factory=list)  # temp directories, removed at the end

    @property
    def name(self) -> str:
        return catalog.db_name(self.opts.db)

    @property
    def pre_dir(self) -> str:
        return os.path.join(self.opts.backup_dir, restore.PRE_RESTORE_DIR)

    @property
    def work_file(self) -> str:
        return os.path.join(self.work_dir, "restore.db")

    def seconds(self) -> float:
        """The run's time so far, but for the time a person took to answer."""
        return round(time.time() - self.start - self.prompt_seconds, 3)


# ---------------------------------------------------------------------------
# Logging: the lines lib/common.sh's log_info and log_warn write
# ---------------------------------------------------------------------------


def _log(opts: Options) -> Log:
    return Log(PROG, opts.quiet, opts.syslog, one_line=True)


def info(opts: Options, message: str) -> None:
    _log(opts).info(message)


def warn(opts: Options, message: str) -> None:
    _log(opts).warn(message)


# ---------------------------------------------------------------------------
# The actions, each a list of steps
# ---------------------------------------------------------------------------


def action_list(run: Run) -> None:
    opts = run.opts
    if opts.remote:
        from sqlite_ops import offsite

        remote, host = offsite_place(opts)
        with tempfile.TemporaryDirectory() as tmp:
            copies = offsite.remote_copies(offsite.Rclone(), remote, host, run.name, Path(tmp))
        offsite.print_copies(copies, offsite.remote_dir(remote, host, run.name), opts.json)
        return
    restore.print_list(opts.backup_dir, opts.db, opts.json, opts.fk_accept)


def action_verify(run: Run) -> None:
    # 1. which backup (with --from: downloaded first), into a work dir in TMPDIR
    run.work_dir = private_dir_in(run, tmp_root())
    resolve(run)
    # 2. verify it (nothing is restored: where the manifest's records stand for
    #    the bytes, they are only hashed, never written), and say what was checked
    verify(run, announce=True, keep=False)


def action_drill(run: Run) -> None:
    opts = run.opts
    opts.spec = "latest"
    try:
        # 1. `latest`, verified in a work dir in TMPDIR
        run.work_dir = private_dir_in(run, tmp_root())
        resolve(run)
        verify(run, show_warnings=True)  # what --force accepted must reach the cron log
        # 2. restored into a temp file and checked there
        replace(run, os.path.join(run.work_dir, "drill.db"), os.path.join(run.work_dir, "aside"),
                scratch=True)
    except BaseException as exc:
        write_metrics(run, {"sqlite_restore_drill_last_run_success": 0})
        if isinstance(exc, restore.Forceable) and exc.report is not None:
            # Failed on the database's own orphans: the check it ran and the
            # count it made still stand for the bytes (listings, printed
            # commands and the next restore read them).
            run.report = exc.report
            record_refused_drill(run)
        raise
    seconds = run.seconds()
    # 3. a full integrity_check it ran itself (INTEGRITY_CHECK=drill) recorded in the manifest
    record_drill_check(run)
    # 4. the recovery time it measured, for the metrics
    write_metrics(run, {"sqlite_restore_drill_last_success_timestamp_seconds": int(time.time()),
                        "sqlite_restore_drill_duration_seconds": f"{seconds:.3f}",
                        "sqlite_restore_drill_last_run_success": 1})
    print(f"Drill passed: {shown_backup(run)} verified, restored into a temp file and checked in "
          f"{seconds:.3f} s (removed)")


def action_restore_to(run: Run) -> None:
    opts = run.opts
    target = opts.to
    # 1. the target's directory exists; its lock; a work dir beside it
    require_dir_of(target, opts)
    take_lock(run, target, opts.lock_timeout)
    run.work_dir = work_dir_beside(run, target)
    # 2. which backup, verified
    resolve(run)
    verify(run)
    # 3. put it into the target and check it; the receipt
    replace(run, target, f"{target}.stale.{run.stamp}")
    run.step = "finished"
    print_receipt(run, target)


def action_restore(run: Run) -> None:
    opts = run.opts
    # 1. someone can be asked (or --yes), the database's directory exists
    can_confirm(opts)
    require_dir_of(opts.db, opts)
    # 2. the lock (only while nobody reads the plan) and a work dir beside the database
    take_lock(run, opts.db, opts.lock_timeout)
    run.work_dir = work_dir_beside(run, opts.db)
    if not opts.yes:
        release_lock(run)  # nobody waits on a person reading the plan
    # 3. which backup, verified; the plan against the current database
    resolve(run)
    planned_db = db_identity(opts.db)
    verify(run, enforce_schema=True, target=opts.db, plan=not (opts.quiet and opts.yes),
           count_rows=True)  # every table read before the live database is touched
    # 4. ask; after yes, the lock again, and the plan must still hold
    confirm(run)
    lock_after_confirm(run, planned_db)
    try:
        # 5. a safety backup of the current database (a raw copy when too damaged)
        take_safety_backup(run)
        prune_safety_copies(run)
        # 6. put the backup into the live database and check it; the receipt
        aside = run.raw_copy or os.path.join(run.pre_dir, f"{run.name}_{run.stamp}.raw")
        replace(run, opts.db, aside)
    except BaseException:
        keep_safety_note(run)
        raise
    run.step = "finished"
    print_receipt(run, opts.db)
    # 7. the metrics
    write_metrics(run, {"sqlite_restore_last_success_timestamp_seconds": int(time.time()),
                        "sqlite_restore_last_duration_seconds": f"{run.seconds():.3f}"})


def record_drill_check(run: Run, wait: float | None = None) -> None:
    """When the drill ran the full integrity_check itself (the local backup
    had no record that stood for its bytes: INTEGRITY_CHECK=drill, or an older
    backup) and it said ok, add that record to the backup's manifest, as the
    backup would have, with the foreign-key count when the backup left it to
    the drill (also when the drill then fails on violations FK_ACCEPT does
    not cover: they are facts about the bytes, not a verdict on them;
    catalog.add_drill_records: only if the backup and its manifest
    are still the ones verified), under the database's lock after a short
    wait (``RECORD_LOCK_WAIT``). Busy, or anything else in the way: a
    warning, no record, never a failed drill. --verify and restores never
    write: they check and leave the manifest as it is."""
    opts, report = run.opts, run.report
    if opts.remote or report is None or not report.checked_now or report.manifest is None:
        return
    assert report.identity is not None
    manifest = run.backup + catalog.MANIFEST_SUFFIX
    records = {"integrity_check": integrity.record(report.db_sha256, checked_by="drill"),
               **report.fk_record}
    recorded, are, them = (("integrity_check and the foreign-key count", "are", "them")
                           if report.fk_record else ("integrity_check", "is", "it"))
    try:
        with OpsLock(opts.db, RECORD_LOCK_WAIT if wait is None else wait, what="drill"):
            why = catalog.add_drill_records(run.backup, report.manifest, report.identity,
                                            records)
    except OpsError as exc:
        why = (f"another run held the lock on {opts.db}" if exc.code == EX_BUSY
               else exc.message)
    except OSError as exc:
        why = f"cannot write it: {exc.strerror or exc}"
    if why:
        warn(opts, f"the {recorded} this drill ran {are} not recorded in {manifest} ({why}); "
                   f"a restore of that backup runs {them} itself")
        return
    # A count of violations is counted again (restore.verify_backup trusts
    # only a clean one), for the rows to name and for FK_ACCEPT to judge.
    trusted = (them if report.fk_record.get("foreign_key_violations", 0) == 0
               else "the integrity_check and count the foreign-key violations again")
    info(opts, f"{recorded} recorded in {manifest} (checked_by drill, same bytes): "
               f"--verify and restores of this backup trust {trusted}")


def record_refused_drill(run: Run) -> None:
    """:func:`record_drill_check` for a drill refused on orphans. An interrupt
    while it waits for the lock ends the wait, never the refusal (exit 3 stays
    the answer); whether the record was written before it came is found out
    from the manifest, not guessed."""
    try:
        record_drill_check(run)
    except KeyboardInterrupt:
        ignore_signals()  # the refusal is said to its end
        assert run.report is not None
        manifest = run.backup + catalog.MANIFEST_SUFFIX
        written = integrity.trusted(catalog.read_manifest(manifest)[0], run.report.db_sha256)[0]
        warn(run.opts, f"interrupted while recording the check this drill ran: "
                       f"{'it is recorded' if written else 'not recorded'} in {manifest}")


ACTIONS = {"list": action_list, "verify": action_verify, "drill": action_drill,
           "to": action_restore_to, "restore": action_restore}


# ---------------------------------------------------------------------------
# Steps shared by verify, restore and drill
# ---------------------------------------------------------------------------


def tmp_root() -> str:
    return os.environ.get("TMPDIR") or "/tmp"


def private_dir_in(run: Run, directory: str, prefix: str = ".sqlite-ops.tmp.") -> str:
    """A new private temp directory in ``directory``, held (common.hold) and
    removed when the run ends."""
    try:
        path = tempfile.mkdtemp(prefix=prefix, dir=directory)
    except OSError:
        raise OpsError(EX_FAIL, f"cannot create a temp directory in {directory}") from None
    held = hold(path)
    if held is not None:
        run.held.append(held)
    return path


def work_dir_beside(run: Run, target: str) -> str:
    """A private temp directory beside ``target`` (same file system, so the
    verified file can be renamed into place), named ``.<name>.tmp.XXXXXX``,
    after removing what a killed run left there (never what a live run, one
    waiting at its prompt, holds). Call with the lock held."""
    directory, base = os.path.split(target)
    prefix = f".{base}.tmp."
    sweep_own_temps(directory, lambda entry: entry.startswith(prefix))
    return private_dir_in(run, directory, prefix)


def require_dir_of(path: str, opts: Options) -> None:
    """``path``'s directory exists; a missing one is most often a typo in --db,
    so the error names the nearest existing path and DB_PATH's configured value."""
    if not os.path.isdir(os.path.dirname(path)):
        raise OpsError(EX_USAGE, restore.missing_dir_message(path, opts.configured_db or None))


def take_lock(run: Run, db: str, timeout: float) -> None:
    lock = OpsLock(db, timeout, what="restore")
    lock.__enter__()
    run.lock = lock


def release_lock(run: Run) -> None:
    if run.lock is not None:
        run.lock.__exit__(None, None, None)
        run.lock = None


def offsite_place(opts: Options) -> tuple[str, str]:
    """(remote, host) of --from REMOTE [--host H], checked."""
    from sqlite_ops import offsite
    from sqlite_ops.common import short_host_name

    return offsite.check_remote(opts.remote), offsite.check_host(opts.host or short_host_name())


def resolve(run: Run) -> None:
    """``run.backup``: the absolute path BACKUP names (with --from, of the local
    copy downloaded for it)."""
    opts = run.opts
    if opts.remote:
        fetch_backup(run)
        return
    run.backup = str(restore.resolve_backup(opts.spec, opts.backup_dir, opts.db))


def fetch_backup(run: Run) -> None:
    """Download BACKUP and its manifest from the remote into a private directory
    (removed when the run ends); from here on it is a local backup like any."""
    from sqlite_ops import offsite

    opts = run.opts
    root = tmp_root()
    if os.path.isdir(opts.backup_dir):
        root = os.path.join(opts.backup_dir, OFFSITE_CACHE)
        prepare_dir(root, _log(opts))
    into = private_dir_in(run, root)
    run.cleanup.append(into)
    remote, host = offsite_place(opts)
    local = offsite.fetch(offsite.Rclone(quiet=opts.quiet, prog=PROG), remote, host, run.name,
                          opts.spec, Path(into))
    run.backup = str(local)
    run.remote_name = f"{offsite.remote_dir(remote, host, run.name)}/{local.name}"
    info(opts, f"fetched {local.name} from {opts.remote}; verifying it like a local backup")


def shown_backup(run: Run) -> str:
    """The backup as the operator knows it: with --from, the remote copy, not
    the temporary download."""
    return run.remote_name or run.backup


def verify(run: Run, *, announce: bool = False, show_warnings: bool = False,
           enforce_schema: bool = False, target: str = "", plan: bool = False,
           count_rows: bool = False, keep: bool = True) -> None:
    """Decompress the backup into the work file and prove it sound (exit 3 if
    not); ``run.report`` is what the later steps restore, so the file that was
    verified is the very one that gets restored. ``count_rows``: count every
    table even where the manifest's counts stand for these bytes; ``keep``
    false: no work file is kept where only the hash is needed
    (restore.verify_backup)."""
    opts = run.opts
    other = restore.other_source(run.backup, target) if target else None
    if other and not opts.force:
        state = "exists" if os.path.lexists(target) else "does not exist"
        raise OpsError(EX_USAGE, f"{run.backup} was taken from {other}, not from {target} "
                                 f"(which {state}): is --db (DB_PATH) mistyped? To restore it "
                                 f"into {target} anyway, pass --force{restore.NOTHING_CHANGED}")
    info(opts, f"verifying {shown_backup(run)}")
    report = verified_report(run, count_rows, keep)
    if target:
        later = restore.later_versions(report.backup, target, opts.backup_dir)
        report.undone = restore.undone_migrations(report, opts.migrations, later)
    if opts.spec == "latest" and not opts.remote:
        shrunk = restore.shrink_warning(report.backup, opts.backup_dir, opts.db)
        if shrunk:
            report.warnings.append(shrunk)
    note = restore.check_schema(report, opts.migrations, opts.force or not enforce_schema)
    if note:
        report.warnings.append(note)
    if other:
        report.warnings.append(f"a backup of another database, {other}, accepted with --force")
    run.report = report
    info(opts, f"integrity: {report.integrity}")  # the verify's lines, then the plan
    if report.fk_note:
        info(opts, report.fk_note)
    if plan:
        print(restore.format_plan(report, opts.db), file=sys.stderr, flush=True)
    if announce:
        print(verified_line(report, shown_backup(run)), flush=True)
    if announce or show_warnings:
        for warning in report.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)


def verified_report(run: Run, count_rows: bool = False, keep: bool = True) -> restore.Report:
    """restore.verify_backup; a damaged backup's refusal names the next older
    one to try (not a forceable refusal: older backups hold the same data
    problem, and less data)."""
    opts = run.opts
    try:
        return restore.verify_backup(run.backup, run.work_file, force=opts.force,
                                     fk_accept=opts.fk_accept, quiet=opts.quiet,
                                     count_rows=count_rows, keep=keep)
    except OpsError as exc:
        damaged = exc.code == EX_VERIFY and not isinstance(exc, restore.Forceable)
        older = (restore.next_older(run.backup, opts.backup_dir, opts.db)
                 if damaged and not opts.remote else None)
        if older is None:
            raise
        hint = f"; the next older backup is {older.name} (--verify {older.name})"
        raise OpsError(exc.code, exc.message.removesuffix(restore.NOTHING_CHANGED) + hint
                       + restore.NOTHING_CHANGED) from None


def verified_line(report: restore.Report, shown: str) -> str:
    """The one line --verify prints: what was checked, and that it passed."""
    fks = ("foreign_key_check clean" if report.fk_violations == 0
           else "foreign-key problems accepted (--force)")
    if report.fk_recorded:
        fks = "foreign_key_check clean as recorded (same bytes)"
    if report.fk_violations == 0 and report.fk_note:
        fks = "foreign_key_check clean but for the orphans FK_ACCEPT lists"
    version = "-" if report.schema_version is None else report.schema_version
    counts = ""
    if report.rows_recorded:
        counts = ", row counts as recorded (same bytes)"
    elif report.has_manifest:
        counts = ", row counts match the manifest"
    return (f"Backup verified: {shown} ({restore.when_taken(report)}; {len(report.tables)} "
            f"tables, {report.rows} rows; schema version {version}; integrity: "
            f"{report.integrity}; {fks}{counts})")


def replace(run: Run, target: str, aside: str, scratch: bool = False) -> None:
    """Put the verified content into ``target`` and check exactly what was
    written (exit 4 when wrong). Interrupted, the state it left in ``target``
    is found out and said (exit 130)."""
    assert run.report is not None
    opts = run.opts
    info(opts, f"restoring into {target}")
    run.step, run.target = "replace", target
    run.report.applied = apply(run.report, target, aside, opts.busy_timeout_ms, opts.quiet,
                               scratch, run)


def apply(report: restore.Report, target: str, aside: str, busy_ms: int = 5000,
          quiet: bool = True, scratch: bool = False, run: Run | None = None) -> dict[str, Any]:
    """restore.apply_restore, with an interruption turned into what it left:
    OpsError(130) whose message says the state of ``target``."""
    progress = restore.ApplyState()
    if run is not None:
        run.applied = progress
    try:
        return restore.apply_restore(report, target, aside, busy_ms, progress=progress,
                                     quiet=quiet)
    except KeyboardInterrupt:
        ignore_signals()  # whatever arrives now, the state below is found out before it is said
        if scratch:
            state = "interrupted; the drill's temp file is removed, nothing else was touched"
        else:
            state = restore.interrupted_state(report, target, progress)
        raise OpsError(EX_INTERRUPTED, state) from None


# ---------------------------------------------------------------------------
# Restore: confirmation
# ---------------------------------------------------------------------------


def can_confirm(opts: Options) -> None:
    """Refuse at once when nobody can be asked and --yes is missing."""
    if not opts.yes and not os.isatty(0):
        raise OpsError(EX_USAGE, f"refusing to restore over {opts.db} without confirmation: no "
                                 "terminal to ask on; check the backup with --verify, then pass "
                                 "--yes")


def db_is_empty(db: str) -> bool:
    """DB exists with no content at all (0 bytes, no -wal with frames): what
    `sqlite3 DB` or an application starting leaves after the database was lost."""
    def size(path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0
    return os.path.isfile(db) and size(db) == 0 and size(db + "-wal") == 0


def db_identity(db: str) -> str:
    """"missing", or the device and inode of DB (a file put in its place is
    another file, even with the same rows)."""
    try:
        st = os.stat(db)
    except FileNotFoundError:
        return "missing"
    return f"{st.st_dev}:{st.st_ino}"


def question(db: str) -> str:
    if db_is_empty(db):
        return (f"Restore this backup into {db}? It is empty (0 bytes), so there is nothing to "
                "keep. Type yes to continue: ")
    if os.path.lexists(db):
        return (f"Replace {db} with this backup? A safety backup of it is taken first (a raw "
                "copy of its files if it is too damaged for one). Type yes to continue: ")
    return (f"Restore this backup into {db}? It does not exist, so there is nothing to keep. "
            "Type yes to continue: ")


def confirm(run: Run) -> None:
    """On a terminal, the operator types yes (exactly that). No lock is held
    meanwhile, so backups and maintenance keep running while a person reads."""
    if run.opts.yes:
        return
    run.step = "prompt"
    sys.stderr.write("\n" + question(run.opts.db))
    sys.stderr.flush()
    asked = time.time()
    answer = sys.stdin.readline().rstrip("\n")
    run.prompt_seconds = time.time() - asked  # a person reading: not the restore's time
    if answer != "yes":
        if answer.lower() in ("y", "yes"):
            raise OpsError(EX_FAIL, "restore cancelled: type yes in full to restore (you typed "
                                    f"'{answer}'); nothing was changed")
        raise OpsError(EX_FAIL, "restore cancelled; nothing was changed")
    run.step = "plan"


def lock_after_confirm(run: Run, planned_db: str) -> None:
    """Take the lock again after the question, then make sure the plan the
    operator agreed to still holds: the same database file and the same
    backup. Anything else changed while they read: exit 1, nothing changed."""
    opts = run.opts
    if run.lock is not None:
        return
    wait = max(opts.lock_timeout, CONFIRMED_LOCK_WAIT)
    try:
        take_lock(run, opts.db, 0)
    except OpsError as exc:
        if exc.code != EX_BUSY:
            raise
        info(opts, f"another run (a backup, maintenance?) holds the lock on {opts.db}; waiting "
                   f"up to {wait} s for it")
        take_lock(run, opts.db, wait)
    if db_identity(opts.db) != planned_db:
        raise OpsError(EX_FAIL, f"{opts.db} was created, removed or replaced while the plan was "
                                "shown; nothing was changed; run the restore again to see a new "
                                "plan")
    if not os.path.isfile(run.work_file):
        raise OpsError(EX_FAIL, f"the verified copy in {run.work_dir} was removed while the plan "
                                "was shown (another restore?); nothing was changed; run the "
                                "restore again")
    # (--from: the copy shown was fetched and verified; the remote is not asked again.)
    if opts.spec == "latest" and not opts.remote:
        planned = run.backup
        now = str(restore.resolve_backup("latest", opts.backup_dir, opts.db))
        if now != planned:
            raise OpsError(EX_FAIL, f"'latest' is now {now}, taken while the plan was shown; "
                                    "nothing was changed; run the restore again, naming the "
                                    f"backup you mean ({os.path.basename(planned)} is the one "
                                    "you were shown)")


# ---------------------------------------------------------------------------
# Restore: the safety backup
# ---------------------------------------------------------------------------


def take_safety_backup(run: Run) -> None:
    """A verified backup of the current database into BACKUP_DIR/pre-restore/
    (outside BACKUP_DIR's root, so `latest` never picks it), taken under this
    run's lock; a raw copy of its files when it is too damaged for that. Its
    integrity check is quick_check: the full integrity_check runs when (if
    ever) it is restored, so the incident does not wait for it."""
    opts = run.opts
    db = opts.db
    if not os.path.lexists(db):
        warn(opts, f"{db} does not exist: there is nothing to keep; restoring into a new file")
        return
    if db_is_empty(db):
        warn(opts, f"{db} is empty (0 bytes): there is nothing to keep; restoring into it")
        return
    prepare_dir(run.pre_dir, _log(opts))
    sweep_temps(run.pre_dir, run.name)  # what a restore killed during its safety backup left
    info(opts, f"safety backup of {db} into {run.pre_dir}")
    run.step = "safety"
    try:
        if roll_back_hot_journal(db, opts.busy_timeout_ms):  # (the plan only looked)
            run.rolled_back = True
            warn(opts, HOT_JOURNAL_ROLLED_BACK.format(db=db))
        result = take_backup(db, run.pre_dir, compression=opts.compression,
                                    fk_accept=opts.fk_accept, host=opts.host,
                                    busy_timeout_ms=opts.busy_timeout_ms, quiet=True,
                                    integrity="quick", prog=PROG)
    except OpsError as exc:
        # Only damage justifies a raw copy: the check failed (4), or the file is
        # no longer recognisable as SQLite (2). Any other refusal (a
        # configuration error, say) stops here: a raw cp of a healthy live
        # database is no backup.
        why = exc.message.split("; nothing was published", 1)[0]
        changed = ("nothing was restored (only its hot journal was rolled back)"
                   if run.rolled_back else "nothing was changed")
        if exc.code == EX_INTEGRITY or (exc.code == EX_USAGE and not is_sqlite_file(db)):
            raw_copy(run, why)
        elif exc.code == EX_USAGE:
            raise OpsError(EX_FAIL, f"the safety backup of {db} was refused ({why}); "
                                    f"{changed}") from None
        else:
            raise OpsError(EX_FAIL, f"the safety backup of {db} failed ({why}); "
                                    f"{changed}") from None
    else:
        for line in result.warnings:  # foreign-key violations, say: they still count
            warn(opts, line)
        run.safety, run.safety_manifest = str(result.path), result.manifest
        info(opts, f"safety backup: {run.safety}")
    run.step = "plan"


def raw_copy(run: Run, why: str) -> None:
    """Copy the damaged database and its -wal/-journal as they are; ``why`` is
    the safety backup's complaint, given as the reason."""
    opts, db = run.opts, run.opts.db
    run.raw_copy = os.path.join(run.pre_dir, f"{run.name}_{run.stamp}{restore.RAW_SUFFIX}")
    try:
        os.mkdir(run.raw_copy, 0o700)
    except OSError:
        raise OpsError(EX_FAIL, f"cannot create {run.raw_copy}; nothing was changed") from None
    for file in (db, db + "-wal", db + "-journal"):
        if not os.path.exists(file):
            continue
        try:
            shutil.copy2(file, run.raw_copy)
            fsync_path(os.path.join(run.raw_copy, os.path.basename(file)))
        except OSError:
            raise OpsError(EX_FAIL, f"cannot copy {file} into {run.raw_copy}; nothing was "
                                    "changed") from None
    try:
        fsync_path(run.raw_copy)
    except OSError:
        raise OpsError(EX_FAIL, f"cannot fsync {run.raw_copy}; nothing was changed") from None
    warn(opts, f"{db} is too damaged for a verified backup ({why or 'the backup refused it'}): "
               f"its files were copied as they are into {run.raw_copy}")


def prune_safety_copies(run: Run) -> None:
    """Of one incident's safety copies in pre-restore/, keep the first, the
    newest ones, and any whose content no other file holds
    (restore.plan_incident_prune)."""
    try:
        removed = restore.prune_incident(run.opts.backup_dir, run.opts.db)
    except OSError as exc:
        warn(run.opts, f"could not prune older safety copies in {run.pre_dir} "
                       f"({exc.strerror or exc}); continuing")
        return
    for path, twin in removed:  # a warning: an earlier receipt's undo line may name it
        warn(run.opts, f"pruned {path} (a middle retry of this incident; the same content is "
                       f"kept in {twin})")


def keep_safety_note(run: Run) -> None:
    """After a failure, say where the safety backup is."""
    if run.safety:
        warn(run.opts, f"the safety backup taken before this attempt is kept: {run.safety} "
                       f"(restore it with: {undo_command(run)})")
    if run.raw_copy:
        warn(run.opts, f"the raw copy of the old database is kept in {run.raw_copy} (to put it "
                       f"back, stop the application, then: {undo_command(run)})")


# ---------------------------------------------------------------------------
# The receipt and the undo command
# ---------------------------------------------------------------------------


def undo_command(run: Run) -> str:
    """The command that undoes the restore (catalog.restore_command: it works
    as printed in a shell without the config file), or how to put a raw copy
    back."""
    opts = run.opts
    if not run.safety:
        return raw_undo_command(run)
    return catalog.restore_command(opts.db, opts.backup_dir, run.safety, script=opts.script,
                                   migrations=opts.migrations, fk_accept=opts.fk_accept,
                                   manifest=run.safety_manifest)


def raw_undo_command(run: Run) -> str:
    """How to put a raw copy back (it cannot pass verification, so not by a
    restore): the restored -wal/-shm/-journal go first, or SQLite would apply
    them to the old file."""
    db = run.opts.db
    base = os.path.basename(db)
    files = [os.path.join(run.raw_copy, base + s) for s in ("", "-wal", "-journal")]
    files = [f for f in files if os.path.exists(f)]
    remove = shell_command("rm", "-f", "--", db + "-wal", db + "-shm", db + "-journal")
    copy = shell_command("cp", "-p", "--", *files, os.path.dirname(db) + "/")
    return f"{remove} && {copy}"


def print_receipt(run: Run, target: str) -> None:
    """What was restored, the safety backup, how to undo it."""
    assert run.report is not None
    opts = run.opts
    undo = undo_command(run) if (run.safety or run.raw_copy) else ""
    note = restore.check_schema(run.report, opts.migrations, True)
    if note in run.report.warnings:
        note = None
    print(restore.format_receipt(run.report, target, safety=run.safety, raw_copy=run.raw_copy,
                                 seconds=run.seconds(), undo=undo, note=note,
                                 to=bool(opts.to)), flush=True)


# ---------------------------------------------------------------------------
# Metrics (node_exporter textfile collector)
# ---------------------------------------------------------------------------


def write_metrics(run: Run, values: dict[str, Any]) -> None:
    """Set ``values`` in METRICS_DIR/sqlite_ops_restore_<name>.prom; the other
    gauges keep their values from earlier runs (promfile.merge). A failure is
    said, and never fails the restore."""
    from sqlite_ops import metrics

    opts = run.opts
    if not opts.metrics_dir:
        return
    label = f'db="{promfile.escape_label(run.name)}"'
    if opts.remote:
        label += f',remote="{promfile.escape_label(opts.remote)}"'
    lines = []
    for name, help_text in RESTORE_METRICS:
        lines += promfile.family(name, help_text, [(label, values[name])] if name in values else [])
    file_name = f"restore_{run.name}"
    path = os.path.join(opts.metrics_dir, metrics.textfile_name(file_name))
    try:
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    except (OSError, UnicodeDecodeError):
        old = ""
    try:
        metrics.write_textfile(opts.metrics_dir, file_name, promfile.merge(old, "\n".join(lines)))
    except OpsError as exc:
        warn(opts, f"{exc.message}; metrics not written")


# ---------------------------------------------------------------------------
# Interruptions: say what the step left, never guess
# ---------------------------------------------------------------------------


def interrupted_message(run: Run) -> str:
    """What each step leaves when it is interrupted (the write into the
    database says its own: see apply; after it, signals wait: see
    install_signals)."""
    if run.step == "prompt":
        return "restore cancelled; nothing was changed"
    if run.step == "safety" and run.rolled_back:
        return (f"interrupted during the safety backup of {run.opts.db}: only its hot journal "
                "was rolled back (as SQLite does on any open); nothing was restored")
    if run.step == "safety":
        return (f"interrupted during the safety backup of {run.opts.db}: the database was not "
                "touched and nothing was restored")
    return "interrupted before the database was touched; nothing was changed"


def pending_error(signum: int) -> OpsError:
    """What a signal held once the restore was written and checked says, after
    the receipt."""
    name = signal.Signals(signum).name
    return OpsError(128 + signum, f"{name} arrived while the restore was being written; it was "
                                  "finished and checked first (receipt above)")


def ignore_signals() -> None:
    """INT, TERM and HUP ignored from here on (what runs next runs to its end)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def install_signals(run: Run) -> None:
    """INT, TERM and HUP interrupt the step the run is in; once the restore
    was written and checked (its target holds the backup's content) they wait
    until the receipt, the undo command and the metrics are out."""
    def on_signal(signum: int, frame: object) -> None:
        checked = run.applied is not None and run.applied.step in ("checked", "placed")
        held = run.step == "finished" or (run.step == "replace" and checked)
        if held and run.opts.action != "drill":
            run.pending = run.pending or signum
            return
        raise Interrupted(signum)  # the safety backup's own, so one kind is caught
    on_stop_signals(on_signal)  # (one ignored at the start, nohup's HUP, stays ignored)


# ---------------------------------------------------------------------------
# Entry point (restore_database.sh execs it)
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m sqlite_ops.restore_flow",
                                     description="One restore_database.sh action.")
    parser.add_argument("spec", nargs="?", default="")
    for flag in ("--db", "--dir", "--migrations", "--metrics-dir", "--fk-accept",
                 "--compression", "--host", "--from", "--to", "--configured-db", "--script"):
        parser.add_argument(flag, default="")
    parser.add_argument("--started", type=float, default=None,
                        help="when the script started (seconds since the epoch)")
    parser.add_argument("--lock-timeout", type=int, default=0)
    parser.add_argument("--busy-timeout-ms", type=int, default=5000)
    for flag in ("--yes", "--force", "--json", "--quiet", "--syslog"):
        parser.add_argument(flag, action="store_true")
    return parser


def options(argv: list[str]) -> Options:
    """ACTION [SETTINGS...] -- [BACKUP], as restore_database.sh passes them."""
    parser = _parser()
    if not argv or argv[0] not in ACTIONS:
        parser.error(f"the first argument is the action: {', '.join(ACTIONS)}")
    args = parser.parse_args(argv[1:])
    return Options(action=argv[0], spec=args.spec, db=args.db, backup_dir=args.dir,
                   migrations=args.migrations, metrics_dir=args.metrics_dir,
                   lock_timeout=args.lock_timeout, fk_accept=args.fk_accept,
                   busy_timeout_ms=args.busy_timeout_ms, compression=args.compression or "zstd",
                   host=args.host, remote=getattr(args, "from"), to=args.to, yes=args.yes,
                   force=args.force, json=args.json, quiet=args.quiet, syslog=args.syslog,
                   configured_db=args.configured_db, script=args.script,
                   started=args.started)


def run_action(opts: Options) -> int:
    """Run one action to its end: the exit code, every failure said in one line."""
    run = Run(opts, start=opts.started or time.time())
    install_signals(run)
    try:
        ACTIONS[opts.action](run)
        if run.pending is not None:
            raise pending_error(run.pending)
        return EX_OK
    except KeyboardInterrupt as exc:  # Interrupted, from here or from the safety backup
        signum = getattr(exc, "signum", signal.SIGINT)
        return fail(PROG, OpsError(128 + signum, interrupted_message(run)))
    except OpsError as exc:
        return fail(PROG, exc)
    except BrokenPipeError:
        return EX_FAIL
    except OSError as exc:  # what no step foresaw: say what, where, and what it left
        where = f" ({exc.filename})" if exc.filename else ""
        target = opts.to or opts.db
        state = ("nothing was changed" if run.step in ("plan", "prompt") else
                 "the safety backup stopped; nothing was restored" if run.step == "safety" else
                 f"check {target} with: {restore.maintain_check_command(target)}")
        return fail(PROG, OpsError(EX_FAIL, f"{exc.strerror or exc}{where}; {state}"))
    finally:
        ignore_signals()  # the cleanup below runs to its end
        release_lock(run)
        for path in [run.work_dir, *run.cleanup]:
            if path:
                shutil.rmtree(path, ignore_errors=True)
        for fd in run.held:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    return run_action(options(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible

    sys.exit(run_interruptible(main))
