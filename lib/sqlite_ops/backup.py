"""One backup, read top to bottom: the library call, and the whole run behind
``backup_database.sh``.

:func:`take_backup` is the backup itself, for any caller that holds the
database's lock and has checked the backup directory (the run below, migrate's
pre-migration backup, a restore's safety backup):

1. snapshot the live database (SQLite's online backup API in one step,
   sqlite_ops.snapshot);
2. pack it: compress and hash in one pass while PRAGMA integrity_check (or,
   for ``integrity="quick"``, quick_check) runs beside it;
3. build the manifest (row counts, foreign-key count, schema version, host,
   the file's owner and mode, the integrity record);
4. publish the manifest, then the backup file: each fsynced, renamed without
   ever replacing a file, the directory fsynced; SIGINT, SIGTERM and SIGHUP
   wait until both are out, so a signal never splits the pair.

Its temp files (``.<final name>.tmp.XXXXXX`` beside the backup) are removed
on every path out, an exception or an interruption alike.

``python3 -m sqlite_ops.backup`` runs the whole backup run (see :func:`run`):
``backup_database.sh`` parses the options and settings and hands over here.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlite_ops import snapshot
from sqlite_ops.catalog import MANIFEST_SUFFIX, backup_file_name, db_name, parse_backup_name
from sqlite_ops.common import (
    EX_FAIL,
    EX_USAGE,
    OpsError,
    fsync_path,
    is_sqlite_file,
    require_regular_file,
)

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTEGRITY_CHECKS = ("full", "quick")


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


def require_database(db: str) -> None:
    """Exit 2 unless ``db`` is a readable SQLite database file (the backup's
    words: missing, unreadable, not a regular file, not SQLite)."""
    require_regular_file(db)
    if not os.path.exists(db):
        raise OpsError(EX_USAGE, f"database not found: {db} (set --db or DB_PATH)")
    if not os.access(db, os.R_OK):
        raise OpsError(EX_USAGE, f"cannot read {db}: permission denied")
    if not is_sqlite_file(db):
        raise OpsError(EX_USAGE, f"not an SQLite database: {db}")


def take_backup(db: str, dest_dir: str, *, compression: str, fk_accept: str = "",
                host: str = "", busy_timeout_ms: int = 5000, quiet: bool = True,
                integrity: str = "full", prog: str = "backup_database.sh") -> BackupResult:
    """Back up the live database ``db`` into ``dest_dir`` and return what was published.

    The caller holds the database's lock and has checked ``dest_dir``.
    ``integrity="full"`` runs PRAGMA integrity_check and records it in the
    manifest against the content's SHA-256; ``"quick"`` runs only quick_check
    and records nothing (a restore of that backup runs the full check itself).
    Failure is OpsError: 4 when the database fails its check, 2 when it is
    missing or not an SQLite database, 1 otherwise; nothing is published then.
    A signal arriving during the publication is held until the pair is out,
    then raised as :class:`Interrupted` naming the published backup.
    """
    if integrity not in INTEGRITY_CHECKS:
        raise ValueError(f"integrity must be 'full' or 'quick', not {integrity!r}")
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

        source_facts = snapshot.take_snapshot(db, data, busy_timeout_ms, quiet)
        pack_facts = snapshot.pack(data, packed, compression, source=db, quiet=quiet,
                                   check=integrity)
        manifest = snapshot.build_manifest(
            data, source=db, created=created, file_name=os.path.basename(final), name=name,
            compression=compression, duration=time.monotonic() - start,
            facts=[source_facts, pack_facts], fk_accept=fk_accept, host=host)
        warnings, infos = foreign_key_lines(db, manifest)
        _write_json(manifest_temp, manifest)
        if data != packed:
            _remove(data)

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
    finally:
        for path in temps:
            _remove(path)


def foreign_key_lines(db: str, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(warnings, infos) about the foreign-key violations a manifest records:
    they are copied as they are (a backup never edits data); say so now, not
    first during an incident."""
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
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a read-only directory: nothing was made there either


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

    previous = {sig: signal.getsignal(sig) for sig in HELD_SIGNALS}
    try:
        for sig in HELD_SIGNALS:
            signal.signal(sig, hold)
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
