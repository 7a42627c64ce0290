"""One backup, read top to bottom: the library call, and the whole run behind
``backup_database.sh``.

:func:`take_backup` is the backup itself, for any caller that holds the
database's lock and has checked the backup directory (the run below, migrate's
pre-migration backup, a restore's safety backup):

1. read one snapshot of the live database and pack it: compress and hash in
   one pass while PRAGMA integrity_check (or, for ``integrity="quick"``,
   quick_check), the row counts and (unless the drill is to count it) the
   foreign-key count run beside it. A WAL database's own file is read inside
   one read transaction when it holds the whole snapshot
   (``snapshot.stream``); else SQLite's backup API copies it into a temp file
   first (``snapshot.take_snapshot``, ``snapshot.pack``);
2. build the manifest (row counts, foreign-key count, schema version, host,
   the file's owner and mode, the integrity record, the snapshot method);
3. publish the manifest, then the backup file: each fsynced, renamed without
   ever replacing a file, the directory fsynced; SIGINT, SIGTERM and SIGHUP
   wait until both are out, so a signal never splits the pair.

Its temp files (``.<final name>.tmp.XXXXXX`` beside the backup) are removed
on every path out, an exception or an interruption alike.

``python3 -m sqlite_ops.backup`` runs the whole backup run (see :func:`run`):
``backup_database.sh`` parses the options and settings and hands over here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlite_ops import snapshot
from sqlite_ops.catalog import MANIFEST_SUFFIX, backup_file_name, db_name, parse_backup_name
from sqlite_ops.common import (
    EX_BUSY,
    EX_FAIL,
    EX_USAGE,
    HOT_JOURNAL_ROLLED_BACK,
    Log,
    OpsError,
    OpsLock,
    Settings,
    dir_problem,
    ensure_private_dir,
    free_bytes,
    fsync_path,
    require_database,
    roll_back_hot_journal,
    sweep_own_temps,
)
from sqlite_ops.progress import human_bytes
from sqlite_ops.start import on_stop_signals, stop_signals

INTEGRITY_CHECKS = ("full", "quick")
# INTEGRITY_CHECK: where a backup run's full integrity_check runs. "backup":
# in the backup (integrity="full"). "drill": the backup runs quick_check (its
# damage still refuses the backup) and leaves the two checks that only record
# to the drill right after, marking the manifest "integrity_check_deferred"
# and "foreign_key_check_deferred": the drill runs the full check, counts the
# foreign keys and records both (restore_flow.record_drill_check).
WHERE_CHECKED = ("backup", "drill")


@dataclass
class BackupResult:
    path: str                  # the published backup file (absolute)
    manifest: dict[str, Any]   # its manifest, as written
    warnings: list[str] = field(default_factory=list)  # lines to log as warnings
    infos: list[str] = field(default_factory=list)     # info lines (accepted FK_ACCEPT orphans)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP ended the run; ``published``: the backup that
    was already out when it did (its manifest beside it), else None."""

    def __init__(self, signum: int, published: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.published = published


def take_backup(db: str, dest_dir: str, *, compression: str, fk_accept: str = "",
                host: str = "", busy_timeout_ms: int = 5000, quiet: bool = True,
                integrity: str = "full", deferred: bool = False, count_fks: bool = True,
                prog: str = "backup_database.sh") -> BackupResult:
    """Back up the live database ``db`` into ``dest_dir`` and return what was published.

    The caller holds the database's lock and has checked ``dest_dir``.
    ``integrity="full"`` runs PRAGMA integrity_check and records it in the
    manifest against the content's SHA-256; ``"quick"`` runs only quick_check
    and records nothing (a restore of that backup runs the full check itself);
    with ``deferred`` too, the full check is left to the drill that follows the
    backup (the manifest says ``"integrity_check_deferred": true``). Without
    ``count_fks`` the foreign-key count is left to it as well: the manifest
    says ``"foreign_key_check_deferred": true`` and records no count.
    Failure is OpsError: 4 when the database fails its check, 2 when it is
    missing or not an SQLite database, 1 otherwise; nothing is published then.
    A signal arriving during the publication is held until the pair is out,
    then raised as :class:`Interrupted` naming the published backup.
    """
    if integrity not in INTEGRITY_CHECKS:
        raise ValueError(f"integrity must be 'full' or 'quick', not {integrity!r}")
    if deferred and integrity != "quick":
        raise ValueError("only a backup with integrity='quick' defers the full check")
    if not (count_fks or deferred):
        raise ValueError("only a backup that defers the full check defers the foreign-key count")
    start = time.monotonic()
    db = os.path.abspath(db)
    dest_dir = os.path.abspath(dest_dir)
    require_database(db)
    name = db_name(db)
    temps: list[str] = []
    try:
        created, final = _choose_name(dest_dir, name, compression)
        data = _temp_beside(final, temps)
        packed = data
        if compression != "none":  # the snapshot is named as the uncompressed backup would be
            data = _temp_beside(final[: -len(os.path.splitext(final)[1])], temps)
        manifest_temp = _temp_beside(final + MANIFEST_SUFFIX, temps)

        # A WAL database's own file, in one read transaction, when it holds the
        # whole snapshot; else the backup API's temp copy, then packing it.
        facts = snapshot.stream(db, packed, compression, busy_timeout_ms=busy_timeout_ms,
                                quiet=quiet, check=integrity, fk_accept=fk_accept,
                                count_fks=count_fks)
        if facts is None:
            check_free_space(db, dest_dir, compression, copy=True)
            facts = _copy_and_pack(db, data, packed, compression, busy_timeout_ms=busy_timeout_ms,
                                   quiet=quiet, check=integrity, fk_accept=fk_accept,
                                   count_fks=count_fks)
        if deferred:
            facts["integrity_check_deferred"] = True
        manifest = snapshot.build_manifest(
            data, source=db, created=created, file_name=os.path.basename(final), name=name,
            compression=compression, duration=time.monotonic() - start, facts=[],
            fk_accept=fk_accept, host=host, described=facts)
        warnings, infos = foreign_key_lines(db, manifest)
        _write_json(manifest_temp, manifest)

        # The manifest first: a backup under its final name always has one (a
        # crash in between leaves an orphan manifest, which pruning removes).
        with hold_signals() as held:
            publish(manifest_temp, final + MANIFEST_SUFFIX)
            try:
                publish(packed, final)
            except BaseException:
                _remove(final + MANIFEST_SUFFIX)
                raise
            held.published = final
        return BackupResult(final, manifest, warnings, infos)
    except OSError as exc:  # what no step foresaw (an I/O error, a file gone): one line
        raise OpsError(EX_FAIL, f"{exc.filename or db}: {exc.strerror}; nothing was "
                                "published") from None
    finally:
        for path in temps:
            _remove(path)


def _copy_and_pack(db: str, data: str, packed: str, compression: str, *,
                   busy_timeout_ms: int, quiet: bool, check: str,
                   fk_accept: str, count_fks: bool) -> dict[str, Any]:
    """The backup API's copy of ``db`` into ``data``, packed into ``packed``
    (the same file for ``none``), with describe's facts of the copy."""
    source_facts = snapshot.take_snapshot(db, data, busy_timeout_ms, quiet)
    # Row counts and the foreign-key count read the snapshot beside the
    # packing (SQLite releases the GIL): the copy is read while it is in
    # the page cache, and the manifest waits for neither step alone.
    # A failed packing wins: leaving the block waits for the reading to end.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        described = pool.submit(snapshot.describe, data, fk_accept, count_fks=count_fks)
        pack_facts = snapshot.pack(data, packed, compression, source=db, quiet=quiet,
                                   check=check)
        description = described.result()
    if data != packed:
        _remove(data)
    return {**source_facts, "snapshot_method": "backup-api", **pack_facts, **description}


def foreign_key_lines(db: str, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(warnings, infos) about the foreign-key violations a manifest records:
    they are copied as they are (a backup never edits data); say so now, not
    first during an incident. A drill-mode backup counted none: its drill says."""
    count = manifest.get("foreign_key_violations", 0)
    accepted = manifest.get("foreign_key_violations_accepted", 0)
    if count is None:
        return [f"PRAGMA foreign_key_check cannot run on {db} (a foreign key names parent "
                "columns without a unique index; see foreign_key_check_error in the "
                "manifest); restoring this backup will need --force"], []
    if not count:
        return [], []
    if count == accepted:
        return [], [f"{db} has {count} orphaned rows in tables FK_ACCEPT lists; "
                    "recorded as accepted"]
    rows = "row" if count == 1 else "rows"
    return [f"{db} fails PRAGMA foreign_key_check ({count} {rows} with a missing parent row); "
            "the backup keeps them as they are, so restoring it will need --force (or, for "
            "orphans the application makes by design, FK_ACCEPT listing their tables); "
            "maintain_database.sh check lists them"], []


# ---------------------------------------------------------------------------
# Names, temps, publishing
# ---------------------------------------------------------------------------


def _stamp_taken(dest_dir: str, name: str, created: float) -> bool:
    """True when any backup of this database (any codec, or its manifest) has this time."""
    for compression in ("none", "zstd", "gzip"):
        path = os.path.join(dest_dir, backup_file_name(name, created, compression))
        if os.path.lexists(path) or os.path.lexists(path + MANIFEST_SUFFIX):
            return True
    return False


def _choose_name(dest_dir: str, name: str, compression: str) -> tuple[int, str]:
    """(created, final path): waits for the next second when a backup already
    has this one, so two runs in one second never overwrite each other."""
    for _ in range(30):
        created = int(time.time())
        if not _stamp_taken(dest_dir, name, created):
            return created, os.path.join(dest_dir, backup_file_name(name, created, compression))
        time.sleep(0.1)
    stamp = backup_file_name(name, created, "none")[: -len(".db")]
    raise OpsError(EX_FAIL, f"a backup named {stamp} already exists in {dest_dir}")


def _temp_beside(dest: str, temps: list[str]) -> str:
    """A new private temp file ``.<dest name>.tmp.XXXXXX`` in dest's directory,
    registered in ``temps`` before any signal can act (so it is always removed)."""
    directory, base = os.path.split(dest)
    with hold_signals():
        try:
            fd, path = tempfile.mkstemp(prefix=f".{base}.tmp.", dir=directory)
        except OSError as exc:
            raise OpsError(EX_FAIL, f"cannot create a temp file in {directory}: "
                                    f"{exc.strerror}") from None
        temps.append(path)
        os.close(fd)
    return path


def _remove(path: str) -> None:
    """Remove a temp file and the SQLite companions a killed child may have left."""
    for victim in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(victim)
        except OSError:
            pass  # not there, or a read-only directory: nothing was made there either


def _write_json(path: str, data: dict[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot write {path}: {exc.strerror}") from None


def publish(temp: str, dest: str) -> None:
    """fsync ``temp``, link it to ``dest`` (never replacing an existing file,
    nor writing through a link planted there), drop the temp name, fsync the
    directory. OpsError(1) when ``dest`` exists."""
    try:
        fsync_path(temp)
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot fsync {temp}: {exc.strerror}") from None
    try:
        os.link(temp, dest, follow_symlinks=False)
    except FileExistsError:
        raise OpsError(EX_FAIL, f"refusing to overwrite existing {dest}") from None
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot publish {dest}: {exc.strerror}") from None
    os.unlink(temp)
    try:
        fsync_path(os.path.dirname(dest))
    except OSError as exc:
        raise OpsError(EX_FAIL, f"cannot fsync directory of {dest}: {exc.strerror}") from None


@dataclass
class _Held:
    signum: int | None = None
    published: str | None = None


@contextmanager
def hold_signals() -> Iterator[_Held]:
    """Around a step that must not be cut in two: SIGINT, SIGTERM and SIGHUP
    arriving meanwhile are held, and raised as :class:`Interrupted` once the
    step is done (naming what it published). Outside the main thread (where
    Python cannot change handlers) it holds nothing."""
    held = _Held()

    def hold(signum: int, frame: object) -> None:
        held.signum = held.signum or signum

    previous = {sig: signal.getsignal(sig) for sig in stop_signals()}
    try:
        on_stop_signals(hold)
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, left as it is
                signal.signal(sig, handler)
    if held.signum is not None:
        raise Interrupted(held.signum, held.published)


def is_backup_temp(file_name: str, name: str) -> bool:
    """True for a temp file a backup run of database ``name`` leaves
    (``.<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz][.manifest.json].tmp.XXXXXX``)."""
    if not file_name.startswith(".") or ".tmp." not in file_name:
        return False
    base = file_name[1:].rsplit(".tmp.", 1)[0]
    if base.endswith(MANIFEST_SUFFIX):
        base = base[: -len(MANIFEST_SUFFIX)]
    parsed = parse_backup_name(base)
    return parsed is not None and parsed[0] == name


# ---------------------------------------------------------------------------
# The run behind backup_database.sh, step by step
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """What backup_database.sh settled (flag > environment > config > default,
    validated there); the names are the settings'."""

    db: str
    dest_dir: str
    retention_days: int
    keep_min: int
    compression: str
    lock_timeout: int = 0
    metrics_dir: str = ""
    fk_accept: str = ""
    host: str = ""
    integrity_check: str = "backup"  # INTEGRITY_CHECK: WHERE_CHECKED
    # The foreign-key count even when INTEGRITY_CHECK=drill leaves it to the
    # drill: migrate's pre-migration backup, whose printed restore command
    # carries --force by it, and which no drill follows.
    always_count_fks: bool = False
    busy_timeout_ms: int = 5000
    remotes: list[str] = field(default_factory=list)
    offsite_retention_days: int = 30
    offsite_keep_min: int = 7
    dry_run: bool = False
    quiet: bool = False
    syslog: bool = False
    prog: str = "backup_database.sh"
    start: float = field(default_factory=time.time)
    published: str | None = None  # set once the backup is out
    pruning: bool = False  # set once pruning started (it removes one file after another)


def run(settings: Run) -> int:
    """The whole backup run; returns the exit code (messages already said)."""
    log = Log(settings.prog, settings.quiet, settings.syslog)
    code = EX_FAIL
    try:
        if settings.dry_run:
            require_database(settings.db)
            for line in prune(settings, dry_run=True):
                print(line)
            return 0
        try:
            code = _backup_run(settings, log)
        except OpsError as error:
            code = error.code
            log.die(error)
        if code != EX_BUSY:
            write_metrics(settings, code, log)
        return code
    except OpsError as error:
        log.die(error)
        return error.code
    except Interrupted as stop:
        return interrupted(settings, log, stop)


def _backup_run(settings: Run, log: Log) -> int:
    try:
        require_database(settings.db)
        prepare_dir(settings.dest_dir, log)
        with OpsLock(settings.db, settings.lock_timeout, "backup"):
            backup_locked(settings, log)
    except Interrupted as stop:
        return interrupted(settings, log, stop)
    print(f"Backup completed: {settings.published}", flush=True)
    return 0


def prepare_dir(dest_dir: str, log: Log) -> None:
    """A directory backups are written into (BACKUP_DIR, the restore's
    pre-restore/ and its offsite downloads) exists, made 0700, and no other
    user may write to it."""
    ensure_private_dir(dest_dir)
    check_backup_dir(dest_dir, log)


def backup_locked(settings: Run, log: Log) -> BackupResult:
    """With the lock held and the directory prepared: roll back a hot journal,
    sweep what a killed run left, check the free space, take the backup, say
    what it found, and prune. Sets ``settings.published``."""
    db, dest = settings.db, settings.dest_dir
    if roll_back_hot_journal(db, settings.busy_timeout_ms):
        log.warn(HOT_JOURNAL_ROLLED_BACK.format(db=db))
    sweep_temps(dest, db_name(db))
    check_free_space(db, dest, settings.compression)
    deferred = settings.integrity_check == "drill"
    count_fks = settings.always_count_fks or not deferred
    left = ("the full integrity_check is" if count_fks
            else "the full integrity_check and the foreign-key count are")
    check = (f"PRAGMA quick_check ({left} left to the drill: INTEGRITY_CHECK=drill)"
             if deferred else "PRAGMA integrity_check")
    packing = ("copying it uncompressed" if settings.compression == "none"
               else f"packing with {settings.compression}")
    log.info(f"snapshot of {db}; {check} and {packing}")
    result = take_backup(db, dest, compression=settings.compression,
                         fk_accept=settings.fk_accept, host=settings.host,
                         busy_timeout_ms=settings.busy_timeout_ms, quiet=settings.quiet,
                         integrity="quick" if deferred else "full", deferred=deferred,
                         count_fks=count_fks, prog=settings.prog)
    settings.published = result.path
    for line in result.infos:
        log.info(line)
    for line in result.warnings:
        log.warn(line)
    log.info(f"published {result.path} ({human_bytes(os.path.getsize(result.path))}) "
             f"in {time.time() - settings.start:.3f} s")
    settings.pruning = True
    try:
        pruned = prune(settings)
        settings.pruning = False  # done: what follows is only its log lines
        for line in pruned:
            log.info(line)
    except (OSError, OpsError) as exc:
        log.warn(f"pruning failed ({getattr(exc, 'message', exc)}); the backup itself was "
                 "published")
    return result


def backup_with_lock_held(settings: Run, log: Log) -> BackupResult:
    """A whole backup run for a caller that holds the lock (migrate's
    pre-migration backup): the directory checks, :func:`backup_locked`, and
    the metrics file, as a run of backup_database.sh would write them."""
    code = EX_FAIL
    try:
        prepare_dir(settings.dest_dir, log)
        result = backup_locked(settings, log)
        code = 0
        return result
    finally:
        write_metrics(settings, code, log)


def settings_from(config: Settings, db: str, dest_dir: str | None = None, *,
                  prog: str, quiet: bool = True) -> Run:
    """A :class:`Run` from sqlite-ops settings (flag > environment > config >
    default), as backup_database.sh would resolve them."""
    rclone_config = config.get("RCLONE_CONFIG")
    if rclone_config:
        os.environ["RCLONE_CONFIG"] = rclone_config  # rclone reads it from there
    where = config.get("INTEGRITY_CHECK")
    if where not in WHERE_CHECKED:
        raise OpsError(EX_USAGE, f"INTEGRITY_CHECK must be backup or drill, not {where!r}")

    return Run(
        db=os.path.abspath(db), dest_dir=os.path.abspath(dest_dir or config.get("BACKUP_DIR")),
        retention_days=config.get_int("RETENTION_DAYS"), keep_min=config.get_int("KEEP_MIN"),
        compression=config.get("COMPRESS"),
        metrics_dir=config.get("METRICS_DIR"), fk_accept=config.get("FK_ACCEPT"),
        host=config.get("OFFSITE_HOST"), integrity_check=where,
        busy_timeout_ms=config.get_int("SQLITE_BUSY_TIMEOUT_MS"),
        remotes=config.get("OFFSITE_REMOTES").split(),
        offsite_retention_days=config.get_int("OFFSITE_RETENTION_DAYS"),
        offsite_keep_min=config.get_int("OFFSITE_KEEP_MIN"), quiet=quiet,
        syslog=config.get("LOG_SYSLOG") == "1", prog=prog)


def interrupted(settings: Run, log: Log, stop: Interrupted) -> int:
    """Say what an interrupted run left; exit 128 + the signal's number."""
    published = stop.published or settings.published
    pruned = ("pruning was cut short (whatever it removed was past retention; "
              "restore_database.sh --list shows what is left)" if settings.pruning
              else "pruning did not run")
    note = f"the backup {published} was published; {pruned}" if published else (
        "nothing was published")
    log.warn(f"interrupted by SIG{signal.Signals(stop.signum).name[3:]}; {note}")
    return 128 + stop.signum


def check_backup_dir(path: str, log: Log) -> None:
    """Backups hold the same data as the database, and a restore trusts what it
    finds here: a directory others may write to is refused; one owned by
    another user, or readable by others, is warned about."""
    problem = dir_problem(path)
    if problem.startswith("writable"):
        raise OpsError(EX_USAGE, f"refusing to write backups into {path}: it is {problem}, so "
                                 f"anyone could plant or replace backups there; chmod go-w "
                                 f"{path} (or chmod 700); nothing was changed")
    if problem:
        log.warn(f"{path} is {problem}: that user could replace backups there; chown it to "
                 "the user that runs backups")
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warn(f"{path} is readable by other users (mode {mode:o}); consider chmod 700")


def sweep_temps(dest_dir: str, name: str) -> None:
    """Remove the temp files a killed backup run of this database left (never
    another database's, never another user's). Only with the lock held."""
    sweep_own_temps(dest_dir, lambda entry: is_backup_temp(entry, name))


def check_free_space(db: str, dest_dir: str, compression: str, copy: bool = False) -> None:
    """Fail early, with a clear message, when the backup cannot fit in ``dest_dir``.

    A WAL database's streamed backup writes only the packed file; the backup
    API's temp copy (``copy``) first writes the whole database beside it. The
    packed size is estimated from the newest backup of this database with the
    same compression (its packed size over its content's, plus a tenth), else
    taken as the database's whole size. Only an estimate: a write that still
    finds the disk full fails cleanly, publishing nothing.
    """
    try:
        size = os.path.getsize(db)
    except OSError:
        raise OpsError(EX_USAGE, f"database not found: {db} (it disappeared during the run); "
                                 "nothing was changed") from None
    try:
        size += os.path.getsize(db + "-wal")
    except OSError:
        pass
    need = _packed_estimate(db, dest_dir, compression, size) + (size if copy else 0)
    have = free_bytes(dest_dir)
    if have is not None and have < need:
        raise OpsError(EX_FAIL, f"not enough free space in {dest_dir}: need about "
                                f"{human_bytes(need)}, have {human_bytes(have)}; nothing was "
                                "changed")


def _packed_estimate(db: str, dest_dir: str, compression: str, size: int) -> int:
    from sqlite_ops import catalog

    if compression != "none":
        for found in catalog.list_backups(dest_dir, db_name(db), db):
            manifest = found.manifest or {}
            content = manifest.get("db_size_bytes")
            if found.compression == compression and isinstance(content, int) and content > 0:
                return int(size * min(found.size_bytes / content, 1.0) * 1.1)
    return size


def prune(settings: Run, dry_run: bool = False) -> list[str]:
    """Apply the retention rules to this database's backups; one line per file
    pruned (or, with ``dry_run``, that would be), then the reason. With
    offsite remotes, a backup not yet verified on every remote is kept."""
    from sqlite_ops import catalog

    return catalog.prune(settings.dest_dir, settings.db, settings.retention_days,
                         settings.keep_min, dry_run=dry_run, remotes=settings.remotes,
                         host=settings.host,
                         offsite_retention_days=settings.offsite_retention_days,
                         offsite_keep=settings.offsite_keep_min)


def write_metrics(settings: Run, code: int, log: Log) -> None:
    """The node_exporter textfile of this database's backups, on success and
    failure alike (never for a run that found the lock taken)."""
    if not settings.metrics_dir:
        return
    from sqlite_ops import catalog, metrics, promfile

    name = db_name(settings.db)
    stats = {"count": 0, "oldest_age_seconds": 0, "newest_verified_created": 0,
             "newest_verified_size_bytes": 0}
    if os.path.isdir(settings.dest_dir):
        try:
            stats.update(catalog.backup_stats(settings.dest_dir, settings.db))
        except OSError:
            pass
    label = f'db="{promfile.escape_label(name)}"'
    gauges = [
        ("sqlite_backup_last_success_timestamp_seconds",
         f"{stats['newest_verified_created']:.0f}",
         "Time (from its name) of the newest verified backup."),
        ("sqlite_backup_last_duration_seconds", f"{time.time() - settings.start:.3f}",
         "Duration of the last backup run, successful or not."),
        ("sqlite_backup_last_size_bytes", f"{stats['newest_verified_size_bytes']}",
         "Size of the newest verified backup file."),
        ("sqlite_backup_count", f"{stats['count']}",
         "Backup files of this database in the backup directory."),
        ("sqlite_backup_oldest_age_seconds", f"{stats['oldest_age_seconds']:.0f}",
         "Age of the oldest backup file."),
        ("sqlite_backup_last_run_success", "1" if code == 0 else "0",
         "1 when the last backup run succeeded, else 0."),
    ]
    text = "".join(line + "\n" for metric, value, about in gauges
                   for line in promfile.family(metric, about, [(label, value)]))
    try:
        metrics.write_textfile(settings.metrics_dir, f"backup_{name}", text, warn=log.warn)
    except OpsError as error:
        log.warn(error.message)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m sqlite_ops.backup",
        description="The whole backup run behind backup_database.sh (which parses and "
                    "validates the settings).")
    parser.add_argument("--db", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--retention-days", type=int, required=True)
    parser.add_argument("--keep", type=int, required=True)
    parser.add_argument("--compress", required=True, choices=["zstd", "gzip", "none"])
    parser.add_argument("--lock-timeout", type=int, default=0)
    parser.add_argument("--metrics-dir", default="")
    parser.add_argument("--fk-accept", default="")
    parser.add_argument("--host", default="", help="OFFSITE_HOST")
    parser.add_argument("--integrity-check", default="backup", choices=WHERE_CHECKED,
                        help="INTEGRITY_CHECK")
    parser.add_argument("--busy-timeout-ms", type=int, default=5000)
    parser.add_argument("--remote", action="append", default=[], help="an OFFSITE_REMOTES entry")
    parser.add_argument("--offsite-retention-days", type=int, default=30)
    parser.add_argument("--offsite-keep", type=int, default=7)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--syslog", action="store_true", help="LOG_SYSLOG=1")
    parser.add_argument("--prog", default="backup_database.sh")
    parser.add_argument("--start", type=float, default=None, help="when the run began (epoch)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Run(
        db=os.path.abspath(args.db), dest_dir=os.path.abspath(args.dir),
        retention_days=args.retention_days, keep_min=args.keep, compression=args.compress,
        lock_timeout=args.lock_timeout, metrics_dir=args.metrics_dir, fk_accept=args.fk_accept,
        host=args.host, integrity_check=args.integrity_check,
        busy_timeout_ms=args.busy_timeout_ms, remotes=args.remote,
        offsite_retention_days=args.offsite_retention_days,
        offsite_keep_min=args.offsite_keep, dry_run=args.dry_run, quiet=args.quiet,
        syslog=args.syslog, prog=args.prog,
        start=args.start if args.start is not None else time.time())

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    on_stop_signals(interrupt)
    return run(settings)


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # before main's own handlers: no traceback

    sys.exit(run_interruptible(main))
