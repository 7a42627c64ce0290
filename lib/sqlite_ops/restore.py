"""Restores: verify a backup, then put its content into a database without losing anything.

The steps of a restore, each a function; :mod:`sqlite_ops.restore_flow`
strings them together, top to bottom, for every action of
``restore_database.sh``:

``resolve_backup``   ``BACKUP|latest`` to a path
``verify_backup``    checksum against the manifest, decompress ONCE into a work
                     file, integrity (the backup's record of these same bytes,
                     or ``integrity_check`` now), ``foreign_key_check``, row
                     counts against the manifest (where the record stands,
                     the manifest's counts of these same bytes stand: no table
                     is scanned); returns the Report the later steps restore,
                     so the work file that was verified is the very one that
                     gets restored
``format_plan``      the backup's rows against the current database's
``apply_restore``    put the work file's content into the target database (see
                     below), then check the result: ``quick_check`` and row
                     counts of what the backup API wrote; a file renamed into
                     place, before the rename (``check_proven`` when its bytes
                     were proven by hash, else ``check_restored``)
``format_receipt``   what was restored, where the safety backup is, how to undo it
``prune_incident``   keep the first and newest safety copies of one incident
``holders``          processes that have a database (or its -wal/-shm/-journal) open
``print_list``       the backups of one database, newest first, and whether each
                     one's manifest and checksum check out

How ``apply`` replaces a database. A database that any process has open
(this one included) is restored INTO, through SQLite's online backup API in
one step: the copy is one write transaction on
the live file, so SQLite's own locking and WAL/journal handling make every
other connection see the restored content on its next read, no inode is
swapped under an open file, and an old -wal or -journal can never be replayed
onto the result (its frames are superseded by the transaction; a hot journal
is rolled back before it starts). When the target does not exist, is too
damaged for SQLite to write into, or no process has it open (a complete
``/proc`` scan, and no SQLite lock on it or its -shm held by a process that
scan cannot see), the verified file is renamed into place instead (its data
written once, not twice through the WAL), after moving any stale
-wal/-shm/-journal aside; never while a process has the file open, and a
process that opened it between the scan and the rename is named afterwards.

Standard library only. Expected failures raise OpsError with the contract's
exit code; the flow prints them as one line.
"""

from __future__ import annotations

import calendar
import difflib
import fcntl
import grp
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from sqlite_ops import catalog, fkcheck, hashing, integrity
from sqlite_ops.common import (
    EX_BUSY,
    EX_FAIL,
    EX_INTEGRITY,
    EX_OK,
    EX_USAGE,
    EX_VERIFY,
    REPO_ROOT_STR,
    SQLITE_HEADER,
    SQLITE_LOCK_BYTES,
    OpsError,
    Writeback,
    abort_when_busy,
    check_rows,
    free_bytes,
    fsync_path,
    holders,
    hot_journal,
    locks_held,
    quote_ident,
    readonly_uri,
    shell_command,
    sqlite_error_code,
    sqlite_locks_held,
    tool_complaint,
)
from sqlite_ops.migration_files import parse_filename
from sqlite_ops.progress import Progress, file_size_probe, human_bytes
from sqlite_ops.snapshot import schema_version, table_counts

PROG = "restore_database.sh"
PRE_RESTORE_DIR = "pre-restore"
RAW_SUFFIX = ".raw"
COMPANIONS = ("-wal", "-shm", "-journal")

DECOMPRESSORS = {"zstd": ["zstd", "-d", "-q", "-c"], "gzip": ["gzip", "-d", "-c"]}
_MAGIC = ((SQLITE_HEADER, "none"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b", "gzip"))

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------







def printable(text: str) -> str:
    """``text`` for one line of a table: a newline (or other control character)
    in a name is shown escaped, the way a message shows it."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def human_age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def sniff_compression(path: str | os.PathLike[str]) -> str | None:
    """``zstd``, ``gzip`` or ``none`` (a plain SQLite file) from the magic bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None




# ---------------------------------------------------------------------------
# Which backup
# ---------------------------------------------------------------------------


def resolve_backup(spec: str, backup_dir: str | os.PathLike[str],
                   db_path: str | os.PathLike[str]) -> Path:
    """``latest`` (newest verified backup of this database, by the time it was
    taken: see catalog.Backup.created_at) or a path or a file name."""
    root = Path(backup_dir)
    if spec == "latest":
        require_backup_dir(root)
        name, now = catalog.db_name(db_path), time.time()
        backups = catalog.list_backups(root, name, db_path)
        for backup in backups:
            if backup.usable(now):
                return backup.path.absolute()
        future = [b for b in backups if b.verified and b.in_future(now)]
        if future:
            raise OpsError(EX_USAGE, f"no verified backup of '{name}' in {root} has a "
                                     f"believable time: {len(future)} are dated in the "
                                     f"future (newest {future[0].path.name}; a wrong "
                                     "clock?); see --list, and name one explicitly")
        others = catalog.foreign_backups(root, name, db_path)
        if others:
            source = others[0].manifest.get("source")
            raise OpsError(EX_USAGE, f"no verified backup of {db_path} in {root}; "
                                     f"{len(others)} backup(s) named '{name}' there were taken "
                                     f"from another database ({source}): name one explicitly "
                                     "if that is the one you mean")
        raise OpsError(EX_USAGE, f"no verified backup of '{name}' in {root}; "
                                 "see --list, or name a backup file")
    if spec.endswith(catalog.MANIFEST_SUFFIX):
        spec = spec[: -len(catalog.MANIFEST_SUFFIX)]  # its manifest names the backup
    given = Path(spec)
    if "/" in spec:
        candidates = [given]
    else:
        candidates = [root / spec, root / PRE_RESTORE_DIR / spec, given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.absolute()
    looked = ", ".join(str(c) for c in candidates)
    pruned = ""
    if "/" in spec and given.parent.name == PRE_RESTORE_DIR:  # an undo line, say
        pruned = ("; a safety backup may be gone by RETENTION_DAYS, or as a middle retry of "
                  "an incident whose content another file holds (that restore's log names it: "
                  "'warning: pruned')")
    raise OpsError(EX_USAGE, f"backup not found: {spec} (looked for {looked}){pruned}; "
                             "see --list")


# ---------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------


@dataclass
class Report:
    """What ``verify_backup`` established about a backup; the later steps restore it."""

    backup: str
    work: str
    has_manifest: bool
    created_at: str | None
    compression: str
    sha256: str
    db_size_bytes: int
    page_size: int
    journal_mode: str | None  # of the database the backup was taken from
    schema_version: int | None
    tables: dict[str, int]
    # Rows foreign_key_check reported (None: it could not run), accepted with --force.
    fk_violations: int | None = 0
    # The database file's owner, group (ids) and mode ("0644") when the backup
    # was taken; None in manifests older than these fields.
    owner: Any = None
    group: Any = None
    mode: Any = None
    # Migrations this restore takes the database back before: (version, file)
    # of each one applied since the backup was taken that MIGRATIONS_DIR holds.
    undone: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # How integrity was established: "recorded at backup, same bytes (...)" or "checked now (...)".
    integrity: str = ""
    # The full integrity_check ran here (and said ok): no record stood for these bytes.
    checked_now: bool = False
    # ``tables`` are the manifest's counts, which stand for these same bytes
    # (the record stood); False: every table was counted here.
    rows_recorded: bool = False
    # The manifest's count of 0 foreign-key violations stood for these bytes
    # (not counted here).
    fk_recorded: bool = False
    db_sha256: str = ""  # of the content, hashed as it was decompressed
    # The manifest as it was verified, and the backup file's identity then
    # (catalog.file_identity): a drill records its check only if both still hold.
    manifest: dict[str, Any] | None = None
    identity: tuple[int, ...] | None = None
    # The work file's identity (catalog.file_identity) once its content was
    # proven by hash to be the manifest's db_sha256 (None: not proven, no
    # manifest): a restore that renames it into place checks it is unchanged.
    work_identity: tuple[int, ...] | None = None
    fk_note: str = ""  # the orphaned rows FK_ACCEPT accepted, if any
    # The foreign-key fields a drill adds to a manifest that left the count to
    # it (foreign_key_check_deferred), from the count made here; else empty.
    fk_record: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


NOTHING_CHANGED = "; nothing was changed"


class Forceable(OpsError):
    """A verification refusal that --force overrides: the backup is sound, and
    its content is the database's own (foreign-key problems, no manifest).
    ``report``: what the verification found out before refusing the database's
    foreign-key violations, for a drill to record (None: no manifest)."""

    report: Report | None = None


def _bad(backup: Path, why: str, forceable: bool = False) -> OpsError:
    kind = Forceable if forceable else OpsError
    return kind(EX_VERIFY, f"{backup}: {why}{NOTHING_CHANGED}")


def _feed(source: BinaryIO, sink: BinaryIO, digest: Any, errors: list[BaseException],
          tick: Any = None) -> None:
    """Read ``source`` to the end, hashing it, writing to ``sink`` while it accepts."""
    broken = False
    try:
        while block := source.read(hashing.CHUNK):
            digest.update(block)
            if tick is not None:
                tick(len(block))
            if not broken:
                try:
                    sink.write(block)
                except BrokenPipeError:
                    broken = True  # the decompressor gave up; keep hashing for the message
    except BaseException as exc:  # reported by the caller
        errors.append(exc)
    finally:
        try:
            sink.close()
        except OSError:
            pass


def widen_pipes(*pipes: Any) -> None:
    """Give each pipe a block's room (Linux; elsewhere, or refused: as it is).
    With the default 64 KiB the decompressor waits while a block is hashed and
    written, and the steps run one after the other instead of side by side."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    for pipe in pipes:
        try:
            fcntl.fcntl(pipe.fileno(), setpipe, hashing.CHUNK)
        except OSError:
            pass  # over /proc/sys/fs/pipe-max-size: the default size works, slower


def _written(path: str, proc: subprocess.Popen[bytes], scratch: bool) -> Iterator[bytes]:
    """What ``proc`` writes into ``path``, block by block, as it writes it,
    until it has exited and the file's end is reached. A read never passes
    the file's size, and the kernel extends that only over bytes already in
    the page cache. What was read is started on its way to the disk, unless
    the file is ``scratch``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    writeback, read = Writeback(fd, scratch), 0
    try:
        while True:
            exited = proc.poll() is not None  # first: everything before the exit is read
            while block := os.read(fd, hashing.CHUNK):
                yield block
                read += len(block)
                writeback.advance(read)  # the disk writes what was hashed meanwhile
            if exited:
                return
            time.sleep(FOLLOW_INTERVAL)
    finally:
        os.close(fd)


FOLLOW_INTERVAL = 0.002  # seconds: at 1 GB/s, 2 MB for the hash to catch up


class Decompressed(NamedTuple):
    """What :func:`decompress` learnt on the way."""

    file_sha256: str  # of the backup file
    db_sha256: str  # of the content
    problem: str | None  # the decompressor's complaint
    head: bytes  # the content's first HEADER_BYTES (its SQLite header)
    size: int  # of the content


HEADER_BYTES = 100  # SQLite's database header


def decompress(backup: str | os.PathLike[str], compression: str,
               out: str | os.PathLike[str] | None, quiet: bool = True,
               scratch: bool = False) -> Decompressed:
    """Decompress ``backup`` into ``out`` (None: nowhere, the content is only
    hashed), hashing both streams on the way. ``out`` goes to the disk while
    it is written (Writeback), unless it is ``scratch``: removed unrenamed.

    A thread feeds the file to the decompressor, hashing it; the decompressor
    writes ``out`` itself, and its output is hashed right behind it (read back
    from the page cache: :func:`_written`), or, with no ``out``, as it comes
    through the pipe. On a terminal a progress line follows the file.
    """
    file_digest, db_digest = hashing.new(), hashing.new()
    total = os.path.getsize(backup)
    head, size = b"", 0
    if compression == "none":
        with open(backup, "rb") as src, open(out or os.devnull, "wb") as dst, \
                Progress("copying", total, prog=PROG, quiet=quiet) as bar:
            writeback = Writeback(dst.fileno(), scratch)
            while block := src.read(hashing.CHUNK):
                file_digest.update(block)
                dst.write(block)
                head, size = head or block[:HEADER_BYTES], size + len(block)
                writeback.advance(size)
                bar.advance(len(block))
        digest = file_digest.hexdigest()
        return Decompressed(digest, digest, None, head, size)
    command = DECOMPRESSORS[compression]
    if shutil.which(command[0]) is None:
        raise OpsError(EX_FAIL, f"'{command[0]}' is not installed; install the "
                                f"'{command[0]}' package (apt-get install {command[0]})")
    errors: list[BaseException] = []
    with open(backup, "rb") as src, open(out or os.devnull, "wb") as dst, \
            Progress(f"decompressing ({compression})", total, prog=PROG, quiet=quiet) as bar:
        # With a work file the decompressor writes it itself, and this process
        # hashes what it has written right behind it (from the page cache): no
        # pipe to copy the content through twice. Only hashed: through a pipe.
        proc = subprocess.Popen(command, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE if out is None else dst,
                                stderr=subprocess.PIPE)
        assert proc.stdin and proc.stderr
        widen_pipes(proc.stdin, *([proc.stdout] if proc.stdout else []))
        feeder = threading.Thread(target=_feed, daemon=True,
                                  args=(src, proc.stdin, file_digest, errors, bar.advance))
        feeder.start()
        try:
            if proc.stdout is not None:
                blocks = iter(lambda: proc.stdout.read(hashing.CHUNK), b"")
            else:
                blocks = _written(os.fspath(out), proc, scratch)
            for block in blocks:
                db_digest.update(block)
                head, size = head or block[:HEADER_BYTES], size + len(block)
        except BaseException:  # a read error, or interrupted: no decompressor goes on
            proc.kill()
            raise
        finally:
            complaint = proc.stderr.read().decode(errors="replace").strip()
            feeder.join()
            proc.wait()
    if errors:
        exc = errors[0]
        raise OpsError(EX_FAIL, f"cannot read {backup}: {getattr(exc, 'strerror', None) or exc}")
    problem = None
    if proc.returncode != 0:
        problem = tool_complaint(complaint, proc.returncode)
    return Decompressed(file_digest.hexdigest(), db_digest.hexdigest(), problem, head, size)


def _check_free_space(directory: str, need: int, what: str) -> None:
    have = free_bytes(directory)
    if have is not None and have < need:
        # --verify's and --drill's work file is in TMPDIR; elsewhere, that is no help.
        scratch = os.path.realpath(directory).startswith(
            os.path.realpath(tempfile.gettempdir()) + os.sep)
        raise OpsError(EX_FAIL, f"not enough free space in {directory} for {what}: need about "
                                f"{human_bytes(need)}, have {human_bytes(have)}; nothing was "
                                "changed" + (" (--verify and --drill use TMPDIR)" if scratch
                                             else ""))


def table_names(conn: sqlite3.Connection) -> list[str]:
    """The tables a manifest counts (as snapshot.table_counts does: no
    sqlite_* internals), read from the schema alone: no table is scanned."""
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]


def _contents(path: str, result: dict[str, Any], check_fk: bool = True,
              count_rows: bool = True) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            result["fk"] = fkcheck.check(conn) if check_fk else fkcheck.ForeignKeyReport(count=0)
            if count_rows:
                result["tables"] = table_counts(conn)
            else:
                result["names"] = table_names(conn)
            result["page_size"] = conn.execute("PRAGMA page_size").fetchone()[0]
            result["schema_version"] = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if sqlite_error_code(exc) != EX_INTEGRITY:  # a lock, an I/O error: no verdict on the bytes
            raise OpsError(EX_FAIL, f"cannot read the backup's content in {path}: {exc}; the "
                                    "backup was not judged, and nothing was changed") from None
        result["error"] = str(exc)


def structural_checks(path: str, check_integrity: bool = True, quiet: bool = True,
                      check_fk: bool = True, count_rows: bool = True) -> dict[str, Any]:
    """Foreign keys (unless ``check_fk`` is false: then none), row counts
    (unless ``count_rows`` is false: then only the table names, from the
    schema) and schema version of the work file, and (when
    ``check_integrity``) PRAGMA integrity_check in another thread meanwhile:
    SQLite releases the GIL, so the two run on both cores."""
    result: dict[str, Any] = {}
    label = ("integrity_check" if check_integrity else
             "foreign keys and row counts" if check_fk or count_rows else "reading the schema")
    with Progress(label, prog=PROG, quiet=quiet):
        check = (integrity.Background(path, mmap=True, name=f"the backup's content in {path}")
                 if check_integrity else None)
        try:
            _contents(path, result, check_fk, count_rows)
        except BaseException:
            if check is not None:  # nobody waits for its verdict: stop it, keep this error
                check.cancel()
            raise
        if check is not None:  # its OpsError (it could not run) is raised here
            result["integrity"] = check.result()
    return result


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    missing = catalog.manifest_problem(manifest, catalog.NEEDED)
    if missing is not None:
        return f"its manifest is incomplete: {missing}"
    if manifest["verified"] is not True:
        return "its manifest does not say the backup was verified when it was taken"
    return None


def verify_backup(backup: str | os.PathLike[str], work: str | os.PathLike[str],
                  force: bool = False, fk_accept: str = "", quiet: bool = True,
                  count_rows: bool = False, keep: bool = True) -> Report:
    """Prove ``backup`` complete and sound; leaves its database in ``work``.

    Raises OpsError(EX_VERIFY) with the reason for anything that does not check
    out. A file without a manifest cannot be proven complete: refused unless
    ``force``, in which case only the internal checks decide.

    Integrity: the SHA-256 of the file and of the decompressed content must be
    the manifest's; then the manifest's integrity_check record of that content
    is trusted (sqlite_ops.integrity says when it is not, and the check runs
    here). Foreign-key violations in the tables ``fk_accept`` (FK_ACCEPT)
    lists are accepted without ``force``.

    Row counts: where that record stands, the content is the very bytes the
    backup counted, so the manifest's counts stand for them too (the table
    names are still read from the schema and must be the manifest's); no
    table is scanned. Anywhere else (no manifest, no record that stands)
    every table is counted, beside the integrity_check. ``count_rows``
    counts them even where the record stands: a restore over the live
    database reads every table before it touches anything, so content a
    forged manifest vouches for is refused while nothing has changed.

    ``keep`` false (--verify: nothing is restored afterwards): where the
    manifest's records would stand for the bytes it names (hash_only), the
    content is only hashed, never written; its page size comes from its
    header, its schema version and tables from the manifest. Report.work is
    then "" (no file).
    """
    accepted = fkcheck.parse_accept(fk_accept)
    path = Path(backup)
    warnings: list[str] = []
    if not path.is_file():
        raise OpsError(EX_USAGE, f"backup not found: {path}")
    # What the file is decides first: "no manifest, pass --force" would be the
    # wrong advice for a text file.
    compression = sniff_compression(path)
    if compression is None:
        raise _bad(path, "not a backup: neither an SQLite database nor a zstd or gzip file")
    manifest, why = catalog.read_manifest(path.with_name(path.name + catalog.MANIFEST_SUFFIX))
    if manifest is not None:
        why = _manifest_problem(manifest)
        if why is not None:
            manifest = None
    if manifest is None:
        if not force:
            if why == "no manifest":
                why = ("no manifest (" + path.name + catalog.MANIFEST_SUFFIX + "); cannot "
                       "confirm it is complete. Pass --force to rely on its internal checks alone")
            raise _bad(path, why or "no manifest", forceable=why == "no manifest")
        warnings.append(f"{why}: checked structurally only (--force); completeness unproven")
    size = path.stat().st_size
    if manifest is not None and manifest["size_bytes"] != size:
        raise _bad(path, f"the file is {size} bytes but its manifest says "
                         f"{manifest['size_bytes']}: truncated or replaced")
    if manifest is not None and manifest.get("compression", compression) != compression:
        raise _bad(path, f"its manifest says {manifest.get('compression')} but the file is "
                         f"{compression}")
    hash_only = not keep and records_stand(manifest, count_rows)
    need = manifest.get("db_size_bytes", 0) if manifest and not hash_only else 0
    _check_free_space(os.path.dirname(os.path.abspath(work)), need, "the decompressed copy")
    identity = catalog.file_identity(path)

    file_sha, db_sha, problem, head, db_size = decompress(
        path, compression, None if hash_only else work, quiet, scratch=not keep)
    if manifest is not None and file_sha != manifest["sha256"]:
        raise _bad(path, "checksum mismatch: the file's SHA-256 differs from its manifest's "
                         "(changed or damaged after the backup was taken)")
    if problem:
        raise _bad(path, f"cannot be decompressed ({problem}): truncated or damaged")
    if not head.startswith(SQLITE_HEADER):
        raise _bad(path, "its content is not an SQLite database")
    if manifest is not None and db_sha != manifest["db_sha256"]:
        raise _bad(path, "the decompressed database's SHA-256 differs from its manifest's")

    # The same bytes the backup checked: its record stands. Else check now.
    recorded, why_not = integrity.trusted(manifest, db_sha)
    # The same bytes' foreign-key count stands too when it is 0; any violation
    # is counted again, for the rows to name and for FK_ACCEPT to judge.
    fk_recorded = recorded and (manifest or {}).get("foreign_key_violations") == 0
    # So do its row counts (unless the caller wants them counted anyway).
    rows_recorded = recorded and not count_rows
    if hash_only:
        assert manifest is not None and rows_recorded and fk_recorded
        found = recorded_contents(manifest, head)
    else:
        found = structural_checks(os.fspath(work), check_integrity=not recorded, quiet=quiet,
                                  check_fk=not fk_recorded, count_rows=not rows_recorded)
    if not recorded:
        rows = found.get("integrity", [])
        if rows != ["ok"]:
            raise _bad(path, f"PRAGMA integrity_check failed: {integrity.summary(rows)}")
    checked = why_not if recorded else f"checked now (integrity_check ok; {why_not})"
    if "error" in found:
        raise _bad(path, f"cannot be read: {found['error']}")
    fks: fkcheck.ForeignKeyReport = found["fk"]
    fk_violations, first, fk_note = fks.count, fks.error, ""
    fk_record = (fkcheck.manifest_fields(fks, accepted) if catalog.fk_count_pending(manifest)
                 else {})
    if fks.count:
        problems = fkcheck.unaccepted(fks, accepted)
        fk_violations = sum(problems.values())
        first = next((fks.firsts[t] for t in fks.firsts if t in problems), None)
        fk_note = fkcheck.describe_accepted(fks, accepted) or ""
    # Violations are the database's own state, refused only once nothing else
    # is wrong (--force would not help then), with what was found out.
    refusal = None
    if fk_violations != 0:
        what = foreign_key_problem(fk_violations, first)
        if not force:
            origin = ("; the database already had this when the backup was taken (its "
                      "manifest says so): its own state, not damage"
                      if (manifest or {}).get("foreign_key_violations", 0) != 0 else "")
            refusal = _bad(path, f"{what}{origin}; pass --force to accept the backup as it "
                                 "is (or, for orphans the application makes by design, list "
                                 "their table in FK_ACCEPT)", forceable=True)
        else:
            warnings.append(f"{what}; accepted as it is (--force)")
    if rows_recorded:
        assert manifest is not None
        tables: dict[str, int] = dict(manifest["tables"])
        mismatch = compare_tables(tables, found["names"])
        if mismatch:
            raise _bad(path, f"its tables differ from its manifest: {mismatch}")
    else:
        tables = found["tables"]
        mismatch = compare_counts(manifest["tables"], tables) if manifest is not None else None
        if mismatch:
            raise _bad(path, f"row counts differ from its manifest: {mismatch}")
    report = Report(
        backup=str(path), work="" if hash_only else os.fspath(work),
        has_manifest=manifest is not None,
        created_at=(manifest or {}).get("created_at"), compression=compression,
        sha256=file_sha, db_size_bytes=db_size, page_size=found["page_size"],
        journal_mode=(manifest or {}).get("journal_mode"),
        schema_version=found["schema_version"], tables=tables, fk_violations=fk_violations,
        owner=(manifest or {}).get("owner"), group=(manifest or {}).get("group"),
        mode=(manifest or {}).get("mode"), warnings=warnings, integrity=checked, fk_note=fk_note,
        fk_record=fk_record,
        checked_now=not recorded, rows_recorded=rows_recorded, fk_recorded=fk_recorded,
        db_sha256=db_sha, manifest=manifest, identity=identity,
        work_identity=(catalog.file_identity(work) if manifest is not None and not hash_only
                       else None))
    if refusal is not None:
        assert isinstance(refusal, Forceable)
        refusal.report = report
        raise refusal
    return report


def records_stand(manifest: dict[str, Any] | None, count_rows: bool = False) -> bool:
    """The manifest's records will stand for the bytes it names, should the
    content hash to its db_sha256: the integrity record, a count of 0
    foreign-key violations, the row counts (unless ``count_rows``) and the
    schema version. Then nothing but that hash needs the content."""
    return (manifest is not None and not count_rows
            and integrity.trusted(manifest, manifest["db_sha256"])[0]
            and manifest.get("foreign_key_violations") == 0
            and "schema_version" in manifest)  # (read_manifest checked its kind)


def header_page_size(head: bytes) -> int:
    """The page size an SQLite header records (bytes 16-17; 1 means 65536)."""
    size = int.from_bytes(head[16:18], "big")
    return 65536 if size == 1 else size


def recorded_contents(manifest: dict[str, Any], head: bytes) -> dict[str, Any]:
    """structural_checks' answer for content proven (by hash) to be the bytes
    the manifest describes, from the manifest and the content's header."""
    return {"fk": fkcheck.ForeignKeyReport(count=0), "names": sorted(manifest["tables"]),
            "page_size": header_page_size(head), "schema_version": manifest["schema_version"]}


def foreign_key_problem(count: int | None, first: Any) -> str:
    """One line on what foreign_key_check found: how many, and the first."""
    if count is None:
        return (f"PRAGMA foreign_key_check cannot run ({first}): a foreign key names parent "
                "columns without a unique index")
    table, rowid, parent, _ = first
    row = "a row" if rowid is None else f"row {rowid}"
    which = ("rows point to missing parent rows" if count > 1
             else "row points to a missing parent row")
    return (f"PRAGMA foreign_key_check failed: {count} {which} "
            f"(first: {row} of {shown_name(table)} -> {shown_name(parent)})")


def shown_name(name: str) -> str:
    """A table name quoted for a one-line message (a name may hold a newline)."""
    return quote_ident(name).replace("\n", "\\n")


def compare_counts(expected: dict[str, Any], actual: dict[str, int]) -> str | None:
    """The first few differences between two {table: rows} maps, or None."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append(f"table {name} is missing")
        elif name not in expected:
            problems.append(f"table {name} is not in the manifest")
        elif expected[name] != actual[name]:
            problems.append(f"{name} has {actual[name]} rows, manifest says {expected[name]}")
    return "; ".join(problems[:3]) or None


def compare_tables(expected: dict[str, Any], names: list[str]) -> str | None:
    """The first few tables missing from ``names`` or not in ``expected``
    (compare_counts' words), or None: the table names alone, rows unread."""
    return compare_counts(expected, {name: expected.get(name, 0) for name in names})


def migration_files(directory: str | os.PathLike[str] | None) -> dict[int, str]:
    """``{NNN: file name}`` of the ``NNN_*.sql|py`` files in ``directory``."""
    if not directory:
        return {}
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    found = {}
    for name in sorted(names):
        parsed = parse_filename(name)  # the migrator's own rule for what is a migration
        if parsed is not None:
            found[parsed[0]] = name
    return found


def newest_migration(directory: str | os.PathLike[str] | None) -> int | None:
    """The highest ``NNN`` of the ``NNN_*.sql|py`` files in ``directory``, or None."""
    return max(migration_files(directory), default=None)


def later_versions(backup: str, db: str, backup_dir: str | None) -> list[tuple[int, str]]:
    """(schema version, where) this database is known to have reached since
    ``backup`` was taken: the database about to be replaced, and every backup
    of it (pre-restore ones too) taken after this one."""
    found: list[tuple[int, str]] = []
    if os.path.exists(db) and not hot_journal(db):  # (unreadable until it is rolled back)
        try:
            conn = sqlite3.connect(readonly_uri(db), uri=True, isolation_level=None, timeout=5)
            try:
                version = schema_version(conn)
            finally:
                conn.close()
        except sqlite3.Error:
            version = None
        if version is not None:
            found.append((version, "the database being replaced"))
    parsed = catalog.parse_backup_name(os.path.basename(backup))
    if not backup_dir or parsed is None:
        return found
    name = catalog.db_name(db)
    for directory in (Path(backup_dir), Path(backup_dir) / PRE_RESTORE_DIR):
        for other in catalog.list_backups(directory, name, db):
            version = (other.manifest or {}).get("schema_version")
            if other.created_at > parsed[1] and isinstance(version, int):
                found.append((version, f"the later backup {other.path.name}"))
    return found


def undone_migrations(report: Report, migrations_dir: str | None,
                      later: list[tuple[int, str]]) -> list[list[Any]]:
    """[version, file, where] of each migration file still in ``migrations_dir``
    that was applied to this database after the backup was taken: restoring
    the backup takes the database back before it, and `make migrate` would run
    it again (after a destructive migration, the same damage again)."""
    files = migration_files(migrations_dir)
    mine = report.schema_version or 0
    undone = []
    for version, file in sorted(files.items()):
        where = next((w for v, w in sorted(later, reverse=True) if v >= version), None)
        if version > mine and where:
            undone.append([version, file, where])
    return undone


def check_schema(report: Report, migrations_dir: str | None, force: bool) -> str | None:
    """Refuse a backup newer than the code's migrations; a note for an older one."""
    newest = newest_migration(migrations_dir)
    version = report.schema_version
    if version is not None and newest is not None and version > newest and not force:
        raise OpsError(EX_USAGE, f"{report.backup} has schema version {version}, newer than "
                                 f"the newest migration ({newest}) in {migrations_dir}: the "
                                 "code deployed here may not understand it. Deploy the "
                                 "matching code first, or pass --force; nothing was changed")
    if report.undone:
        names = ", ".join(file for _, file, _ in report.undone)
        where = report.undone[0][2]
        which = "it" if len(report.undone) == 1 else "them"
        return (f"this backup predates migration {names}, which {where} had applied and "
                f"MIGRATIONS_DIR still holds: do not run `make migrate` yet, it would apply "
                f"{which} again; if {which} caused the damage, revert or fix "
                f"{'that file' if which == 'it' else 'those files'} first")
    if version is None or newest is None:
        return None
    if version > newest:
        return f"schema version {version} is newer than the newest migration ({newest}) (--force)"
    if version < newest:
        return (f"schema version {version} is older than the newest migration ({newest}): "
                "run `make migrate` (scripts/migrate up) to bring it forward")
    return None


def shrink_warning(backup: str, backup_dir: str, db: str) -> str | None:
    """When ``backup`` is `latest` and holds under half the rows of the verified
    backup before it: the database was likely lost or emptied before that
    backup ran (a deploy's `migrate up` recreating it, say), and `latest` is
    then the wrong backup to restore in a hurry."""
    verified = [b for b in catalog.list_backups(backup_dir, catalog.db_name(db), db)
                if b.verified and isinstance((b.manifest or {}).get("tables"), dict)]
    if len(verified) < 2 or os.path.realpath(verified[0].path) != os.path.realpath(backup):
        return None
    newest, before = verified[0], verified[1]
    new_rows = sum(v for v in newest.manifest["tables"].values() if isinstance(v, int))
    old_rows = sum(v for v in before.manifest["tables"].values() if isinstance(v, int))
    if old_rows == 0 or new_rows * 2 >= old_rows:
        return None
    return (f"`latest` ({newest.path.name}, {new_rows} rows) has under half the rows of the "
            f"backup before it ({before.path.name}, {old_rows} rows): if the database was "
            f"lost or emptied before {newest.path.name} was taken, restore "
            f"{before.path.name} instead")


def missing_dir_message(db: str, configured: str | None) -> str:
    """Why ``db``'s directory is missing is most often a typo in --db: say what
    exists nearest to it (and a close name there), and the configured DB_PATH."""
    directory = os.path.dirname(os.path.abspath(db))
    parent, missing = directory, []
    while not os.path.isdir(parent):
        missing.append(os.path.basename(parent))
        parent = os.path.dirname(parent)
    try:
        entries = [e for e in os.listdir(parent) if os.path.isdir(os.path.join(parent, e))]
    except OSError:
        entries = []
    close = difflib.get_close_matches(missing[-1], entries, n=1, cutoff=0.6) if missing else []
    guess = configured_note = ""
    if close:
        path = os.path.join(parent, close[0], *reversed(missing[:-1]), os.path.basename(db))
        guess = f"; did you mean {path}?"
    if configured and os.path.abspath(configured) != os.path.abspath(db):
        configured_note = f"; the configured DB_PATH is {configured}"
    return (f"directory {directory} does not exist (the nearest existing one is "
            f"{parent}{guess}){configured_note}: check --db (DB_PATH). If the directory was "
            "lost with its disk, recreate it, owned by the application's user, and retry; "
            "nothing was changed")


# ---------------------------------------------------------------------------
# Pre-restore pruning: retries of one incident
# ---------------------------------------------------------------------------

# One incident: safety copies of one database each taken less than this long
# after the one before (retries of a restore, and going back and forth).
INCIDENT_GAP_SECONDS = 24 * 3600
# Of one incident, kept: its first copy (the database before anyone restored
# anything) and the newest INCIDENT_KEEP - 1 (the undo of the latest tries).
# A copy in between goes only when another kept file holds its very content.
INCIDENT_KEEP = 3


@dataclass
class SafetyCopy:
    path: Path
    created_at: float
    backup: catalog.Backup | None  # None: a raw copy directory
    content: str | None = None  # its manifest's db_sha256 (a raw copy has none)

    @classmethod
    def of(cls, backup: catalog.Backup) -> SafetyCopy:
        """A backup file as the pruning sees it: its time and, verified, its content."""
        return cls(backup.path, backup.created_at, backup, content_of(backup))


def safety_copies(backup_dir: str | os.PathLike[str], db: str) -> list[SafetyCopy]:
    """The verified safety backups and raw copies of ``db`` in pre-restore/, oldest first."""
    pre, name = Path(backup_dir) / PRE_RESTORE_DIR, catalog.db_name(db)
    found = [SafetyCopy.of(b) for b in catalog.list_backups(pre, name, db) if b.verified]
    for entry in _raw_copies(pre, name, time.time()):
        created = catalog.parse_backup_name(entry["file"][: -len(RAW_SUFFIX)] + ".db")
        if created is not None:
            found.append(SafetyCopy(Path(entry["path"]), created[1], None))
    return sorted(found, key=lambda c: c.created_at)


def content_of(backup: catalog.Backup) -> str | None:
    """The db_sha256 a verified backup's manifest gives its content."""
    found = (backup.manifest or {}).get("db_sha256") if backup.verified else None
    return found if isinstance(found, str) and found else None


def plan_incident_prune(copies: list[SafetyCopy], elsewhere: list[SafetyCopy] | None = None,
                        gap: float = INCIDENT_GAP_SECONDS, keep: int = INCIDENT_KEEP,
                        ) -> list[tuple[SafetyCopy, Path]]:
    """Which safety copies (oldest first) to remove, each with the file that
    keeps its content. Of each incident holding more than ``keep``, the copies
    between its first and its newest ``keep - 1`` whose content (db_sha256)
    another kept file holds: a kept copy of the incident first, else a backup
    in ``elsewhere`` taken no earlier than the copy (retention removes older
    backups first, so an older one could go before the copy would have). A
    copy nothing else holds stays, whatever its place: the application's
    writes between two restores live only there. So does a raw copy (its
    content has no hash)."""
    incidents: list[list[SafetyCopy]] = []
    for copy in copies:
        if incidents and copy.created_at - incidents[-1][-1].created_at < gap:
            incidents[-1].append(copy)
        else:
            incidents.append([copy])
    prune = []
    for incident in incidents:
        if len(incident) <= keep:
            continue
        middle = incident[1:len(incident) - (keep - 1)]
        held: dict[str, Path] = {}
        for copy in incident:
            if copy not in middle and copy.content:
                held.setdefault(copy.content, copy.path)
        for copy in middle:
            if not copy.content:
                continue
            twin = held.get(copy.content) or next(
                (b.path for b in elsewhere or []
                 if b.content == copy.content and b.created_at >= copy.created_at), None)
            if twin is not None:
                prune.append((copy, twin))
            else:
                held[copy.content] = copy.path  # kept: it holds this content now
    return prune


def prune_incident(backup_dir: str, db: str) -> list[tuple[str, str]]:
    """Apply ``plan_incident_prune`` to pre-restore/, the verified backups in
    ``backup_dir`` counting as holders; returns (removed, where its content
    is). A copy is removed only once its twin's file is read and still
    matches its manifest."""
    copies = safety_copies(backup_dir, db)
    elsewhere = [SafetyCopy.of(b)
                 for b in catalog.list_backups(backup_dir, catalog.db_name(db), db)]
    by_path = {c.path: c.backup for c in (*copies, *elsewhere)}
    removed = []
    for copy, twin in plan_incident_prune(copies, elsewhere):
        holder = by_path.get(twin)
        if holder is None or not holder.checksum_ok():
            continue
        if copy.backup is not None:
            catalog.remove_backup(copy.backup)
        else:
            shutil.rmtree(copy.path)
        removed.append((str(copy.path), str(twin)))
    return removed


# ---------------------------------------------------------------------------
# Who has a file open (common.holders: the one /proc/*/fd scan)
# ---------------------------------------------------------------------------


def unseen_holder(complete: bool) -> str:
    """Who holds the database's SQLite locks when the /proc scan found nobody."""
    who = ("one in another PID namespace: a container" if complete else
           "another user's, or one in another PID namespace: a container")
    return f"a process this run cannot see ({who}), which holds its SQLite locks"


def describe_holders(db: str, scan: tuple[list[tuple[int, str]], bool] | None = None,
                     locked: bool | None = None) -> str:
    """Who has ``db`` open, for a message; ``scan`` (holders' answer) and
    ``locked`` (sqlite_locks_held's) when the caller already has them, so the
    message says what the decision was made on."""
    found, complete = scan or holders([db] + [db + s for s in COMPANIONS])
    if found:
        text = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in found)
    elif sqlite_locks_held(db) if locked is None else locked:
        return unseen_holder(complete)
    else:
        text = "no process found"
    if not complete:
        text += " (processes of other users could not be inspected; run as root to see them)"
    return text


# ---------------------------------------------------------------------------
# Apply: put the verified work file's content into the target
# ---------------------------------------------------------------------------


class _Unusable(Exception):
    """The target exists but SQLite cannot write into it (not a database, corrupt)."""


# Pages per backup-API step. The target's write transaction spans every step
# (it commits after the last); between steps Python runs its signal handlers,
# and an exception there aborts the copy. 16 MiB of 4 KiB pages: a Ctrl-C is
# seen within tens of milliseconds, and the steps cost nothing measurable.
COPY_STEP_PAGES = 4096


def set_journal_mode(path: str, mode: str) -> str:
    """Set ``mode`` (wal or delete) on a private file; returns the resulting mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return str(conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]).lower()
    finally:
        conn.close()


def _target_mode(mode: str | None) -> str:
    return "wal" if (mode or "").lower() == "wal" else "delete"


class ApplyState:
    """How far ``apply`` got: what an interruption (Ctrl-C, SIGTERM) left is
    said from this, never guessed."""

    def __init__(self) -> None:
        self.step = "start"  # start, copying, committed, checked, moving-aside, placed
        self.cookie: int | None = None  # the target's schema cookie before the copy
        self.moved: list[str] = []
        self.work_inode: tuple[int, int] | None = None  # the file being renamed into place

    def placed(self, target: str) -> bool:
        """The rename happened (it may have, even when interrupted "before" it)."""
        try:
            st = os.stat(target)
        except OSError:
            return False
        return self.work_inode == (st.st_dev, st.st_ino)


def _one(conn: sqlite3.Connection, sql: str) -> Any:
    """The first value of a one-row statement, run to its end: a statement left
    pending keeps a later checkpoint or mode change from running ("database
    table is locked")."""
    return conn.execute(sql).fetchall()[0][0]


def _open_target(target: str, busy_ms: int) -> tuple[sqlite3.Connection, str, int, bool]:
    """(connection, journal mode, page size, fresh): fresh is a file with no
    schema at all (empty, or just created by an application or `sqlite3`)."""
    conn = sqlite3.connect(target, timeout=busy_ms / 1000, isolation_level=None)
    try:
        mode = str(_one(conn, "PRAGMA journal_mode")).lower()
        page_size = int(_one(conn, "PRAGMA page_size"))
        objects = _one(conn, "SELECT count(*) FROM sqlite_schema")
    except sqlite3.Error as exc:
        conn.close()
        if sqlite_error_code(exc) == EX_BUSY:
            raise OpsError(EX_BUSY, f"{target} is locked by another process past the busy "
                                    f"timeout: {describe_holders(target)}; nothing was "
                                    "changed; retry when it is idle") from None
        raise _Unusable(str(exc)) from None
    return conn, mode, page_size, objects == 0


def _check_own_copy(dst: sqlite3.Connection, target: str, expected: dict[str, int],
                    version_before: int) -> str | None:
    """quick_check and row counts of what ``dst`` has just committed, in one read
    transaction. If no other connection committed since the copy (PRAGMA
    data_version unchanged), that transaction sees exactly the restored content,
    and a difference is damage (exit 4). If one did, its rows are the
    application's, not damage: a note says so, and only quick_check decides."""
    dst.execute("BEGIN")
    try:
        _one(dst, "SELECT count(*) FROM sqlite_schema")  # starts the read snapshot
        others = _one(dst, "PRAGMA data_version") != version_before
        rows = check_rows(dst)
        counts = table_counts(dst) if rows == ["ok"] else {}
    finally:
        dst.execute("COMMIT")
    if rows != ["ok"]:
        raise OpsError(EX_INTEGRITY, f"the restored {target} failed PRAGMA quick_check "
                                     f"({'; '.join(rows[:3])})")
    mismatch = compare_counts(expected, counts)
    if mismatch and not others:
        raise OpsError(EX_INTEGRITY, f"the restored {target} does not match the backup: {mismatch}")
    if mismatch:
        return ("another process committed writes right after the restore, before its check "
                f"({mismatch.replace('manifest says', 'the backup has')}): those rows are the "
                "application's, not damage; quick_check passed")
    return None


def restore_into(work: str, target: str, busy_ms: int = 5000,
                 expected: dict[str, int] | None = None, journal_mode: str | None = None,
                 progress: ApplyState | None = None, quiet: bool = True) -> dict[str, Any]:
    """Copy ``work`` into the existing database ``target`` with the backup API,
    then check what was copied (``expected``: the backup's row counts).

    The target keeps its journal mode, unless it is fresh (no schema: created
    empty by an application or `sqlite3` after the database was lost): then it
    gets ``journal_mode``, the mode the backup's database had."""
    progress = progress or ApplyState()
    dst, live_mode, dst_page, fresh = _open_target(target, busy_ms)
    # The new content passes through the WAL (or the old through the journal).
    grow = os.path.getsize(work) if live_mode == "wal" else os.path.getsize(target)
    try:
        _check_free_space(os.path.dirname(os.path.abspath(target)), grow,
                          f"the {'WAL' if live_mode == 'wal' else 'rollback journal'} "
                          "of the restore")
    except OpsError:
        dst.close()
        raise
    notes: list[str] = []
    try:
        # The backup API copies the source's header, journal-mode bytes included,
        # into a rollback-journal target: give it a rollback-journal source. A WAL
        # target stays in WAL mode whatever the source says.
        set_journal_mode(work, "delete")
        src = sqlite3.connect(work, isolation_level=None)
        try:
            src_page = int(_one(src, "PRAGMA page_size"))
            switched = False
            if live_mode == "wal" and src_page != dst_page:
                # The backup API cannot change a WAL database's page size.
                try:
                    _one(dst, "PRAGMA journal_mode=DELETE")
                except sqlite3.Error as exc:
                    if sqlite_error_code(exc) != EX_BUSY:
                        raise
                    raise OpsError(EX_BUSY, f"the backup's page size ({src_page}) differs from "
                                            f"{target}'s ({dst_page}), and a WAL database's page "
                                            "size can only change while nothing else has it "
                                            f"open: {describe_holders(target)}; stop them and "
                                            "retry; nothing was changed") from None
                switched = True
            try:
                version_before = _copy_in_steps(src, dst, target, live_mode, grow, busy_ms,
                                                progress, quiet)
            except BaseException:
                if switched:  # nothing was copied: the database keeps its WAL mode too
                    _back_to_wal(dst, target)
                raise
            progress.step = "committed"
        finally:
            src.close()
        wanted = _target_mode(journal_mode) if fresh and journal_mode else None
        if switched:
            wanted = "wal"
        mode = str(_one(dst, "PRAGMA journal_mode")).lower()
        if wanted and wanted != mode:
            refused = None
            try:
                mode = str(_one(dst, f"PRAGMA journal_mode={wanted}")).lower()
            except sqlite3.Error as exc:
                refused = str(exc)
            if mode != wanted:
                notes.append(f"could not put {target} back into {wanted} mode "
                             f"({refused or 'SQLite refused'}); it is in {mode} mode: set it "
                             "when nothing has it open (sqlite3 DB 'PRAGMA journal_mode="
                             f"{wanted.upper()}')")
        if mode == "wal":
            busy, _, _ = dst.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            if busy:
                notes.append("a reader kept the WAL from being checkpointed now; SQLite will "
                             "checkpoint it later (the restored data is already committed)")
        # Last: on this connection, quick_check followed by a checkpoint after a
        # journal-mode change fails with "database table is locked".
        if expected is not None:
            note = _check_own_copy(dst, target, expected, version_before)
            if note:
                notes.append(note)
        progress.step = "checked"
    except sqlite3.Error as exc:
        if progress.step == "start":
            raise OpsError(EX_FAIL, f"restoring into {target} failed before anything was "
                                    f"copied: {exc}; the database is as it was") from None
        if progress.step != "copying":
            raise OpsError(EX_FAIL, f"restoring into {target} failed after the copy was "
                                    f"committed: {exc}; check it with: "
                                    f"{maintain_check_command(target)}") from None
        raise OpsError(EX_FAIL, f"restoring into {target} failed: {exc}; SQLite rolled the "
                                "transaction back, so the database is as it was") from None
    finally:
        dst.close()
    return {"method": "backup-api", "journal_mode": mode, "fresh": fresh,
            "note": "; ".join(notes) or None, "page_size_changed": src_page != dst_page}


def _copy_in_steps(src: sqlite3.Connection, dst: sqlite3.Connection, target: str,
                   live_mode: str, grow: int, busy_ms: int, progress: ApplyState,
                   quiet: bool) -> Any:
    """The backup-API copy of ``src`` into ``dst``: in steps, one transaction
    on the target all the same, so that between two steps a signal stops the
    copy and SQLite rolls it back. Progress watches the WAL (or the rollback
    journal) grow. Returns the target's data_version before the copy."""
    progress.cookie = int(_one(dst, "PRAGMA schema_version"))
    version_before = _one(dst, "PRAGMA data_version")
    progress.step = "copying"
    log = target + ("-wal" if live_mode == "wal" else "-journal")
    try:
        with Progress("writing into the database", grow, prog=PROG, quiet=quiet,
                      probe=file_size_probe(log)) as bar:
            src.backup(dst, pages=COPY_STEP_PAGES, progress=abort_when_busy)
            bar.complete()
    except sqlite3.Error as exc:
        if sqlite_error_code(exc) == EX_BUSY:
            raise OpsError(EX_BUSY, f"{target} stayed locked past the busy timeout "
                                    f"({busy_ms} ms): {describe_holders(target)}; "
                                    "nothing was changed; retry when it is idle") from None
        raise
    return version_before


def _back_to_wal(dst: sqlite3.Connection, target: str) -> None:
    """Put ``target`` back into WAL mode after a copy that did not happen (it
    was switched to DELETE mode to take the backup's page size). When SQLite
    refuses, say so: the database is otherwise as it was."""
    try:
        mode = str(_one(dst, "PRAGMA journal_mode=WAL")).lower()
    except sqlite3.Error as exc:
        mode = f"delete ({exc})"
    if mode != "wal":
        print(f"{PROG}: warning: {target} was switched from WAL to delete mode for the copy, "
              f"and SQLite did not switch it back (it is in {mode} mode): set it when nothing "
              f"has it open: {shell_command('sqlite3', target, 'PRAGMA journal_mode=WAL')}",
              file=sys.stderr)


def maintain_check_command(target: str) -> str:
    """The command that checks a database by hand, ready to paste."""
    script = os.path.join(REPO_ROOT_STR, "scripts", "maintain_database.sh")
    return shell_command(script, "--db", target, "quick-check")


def _move_aside(target: str, aside_dir: str, progress: ApplyState) -> list[str]:
    for suffix in COMPANIONS:
        stale = target + suffix
        if os.path.lexists(stale):
            if os.path.islink(aside_dir) or not os.path.isdir(aside_dir):
                try:  # never into a directory planted (or linked) there: EEXIST
                    os.makedirs(os.path.dirname(aside_dir), 0o700, exist_ok=True)
                    os.mkdir(aside_dir, 0o700)
                except OSError as exc:
                    raise OpsError(EX_FAIL, f"cannot create {aside_dir} to move {stale} aside: "
                                            f"{exc.strerror}; nothing was changed") from None
            dest = os.path.join(aside_dir, os.path.basename(stale))
            shutil.move(stale, dest)
            progress.moved.append(dest)
    return list(progress.moved)


def _recorded_ownership(report: Report) -> tuple[int, int, int] | None:
    """(uid, gid, mode) from the manifest, read defensively (older manifests
    have none)."""
    uid, gid, mode = report.owner, report.group, report.mode
    if not (isinstance(uid, int) and isinstance(gid, int) and isinstance(mode, str)):
        return None
    try:
        bits = int(mode, 8)
    except ValueError:
        return None
    return (uid, gid, bits) if 0 <= bits <= 0o7777 else None


def _owner_text(uid: int, gid: int, mode: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group} {mode:04o}"


def give_ownership(path: str, uid: int, gid: int, mode: int) -> str | None:
    """chmod/chown ``path`` and the -wal/-shm beside it; a note when chown is not
    allowed (only root may give a file away)."""
    problem = None
    for file in (path, path + "-wal", path + "-shm"):
        if not os.path.exists(file):
            continue
        os.chmod(file, mode)
        try:
            os.chown(file, uid, gid)
        except PermissionError:
            problem = (f"could not give {path} to {_owner_text(uid, gid, mode)} (only root can): "
                       f"chown it (and its -wal/-shm) so the application's user can open it")
    return problem


def settle_ownership(report: Report, target: str, previous: os.stat_result | None,
                     fresh: bool) -> dict[str, Any]:
    """Give a restored file the owner, group and mode of the file it replaced,
    or, for a new or fresh file, those recorded in the backup's manifest."""
    if previous is not None and not fresh:
        wanted = (previous.st_uid, previous.st_gid, stat.S_IMODE(previous.st_mode))
        source = "as the replaced file"
    else:
        wanted = _recorded_ownership(report)
        source = "as recorded in the backup's manifest"
    if wanted is None:
        st = os.stat(target)
        return {"ownership": _owner_text(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) +
                " (the backup records no owner: make sure the application's user can open it)"}
    problem = give_ownership(target, *wanted)
    st = os.stat(target)
    now = _owner_text(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return {"ownership": f"{now} ({source})", "ownership_note": problem}


def _current_mode(target: str, busy_ms: int) -> tuple[str, bool]:
    """(journal mode, fresh) of the database about to be replaced (fresh: no
    schema at all); _Unusable when SQLite cannot read it."""
    conn, mode, _, fresh = _open_target(target, busy_ms)
    conn.close()
    return _target_mode(mode), fresh


def place_file(work: str, target: str, journal_mode: str, aside_dir: str,
               expected: dict[str, int] | None = None,
               progress: ApplyState | None = None,
               proven: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Rename ``work`` into place as ``target`` (nothing has it open: checked last,
    right before the rename, so the window for a process to open it is as
    narrow as a /proc scan).

    ``work`` is checked while it is still private, so nothing another process
    writes can be mistaken for damage. When its content was proven by hash
    (``proven``: its identity then, Report.work_identity), it must still be
    that very file, unchanged (:func:`require_unchanged`), and after the
    journal-mode change :func:`check_proven` reads its header and schema;
    else :func:`check_restored` runs quick_check and counts every table
    (``expected`` row counts). Stale -wal/-shm/-journal files beside
    ``target`` are moved into ``aside_dir`` FIRST, so SQLite can never apply
    them to the new file.
    """
    progress = progress or ApplyState()
    if os.path.islink(target):
        raise OpsError(EX_USAGE, f"{target} is a symbolic link: name the file it points to "
                                 "with --db (or --to); nothing was changed")
    if proven is not None:
        require_unchanged(work, proven)
    mode = set_journal_mode(work, _target_mode(journal_mode))
    for suffix in COMPANIONS:  # a clean close removes them; make sure
        if os.path.exists(work + suffix):
            raise OpsError(EX_FAIL, f"internal error: {work + suffix} left behind")
    if expected is not None and proven is not None:
        check_proven(work, expected, proven[2], shown=target)
    elif expected is not None:
        check_restored(work, expected, shown=target)
    work_st = os.stat(work)
    progress.work_inode = (work_st.st_dev, work_st.st_ino)
    # The file about to be replaced, held open to ask after the rename who
    # holds SQLite locks on it (nobody in this process: no connection has it).
    try:
        old = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        old = -1  # missing (nothing to replace) or unreadable: nothing to ask afterwards
    try:
        return _rename_into_place(work, target, aside_dir, progress, mode, old)
    finally:
        if old >= 0:
            os.close(old)


# A process left on the replaced file may have made a -wal/-shm beside the new
# one, which every later opener of the new file would share with it. A second
# restore, with it stopped, moves those aside before anything reads them.
LATE_OPENER_ADVICE = ("stop it now, before anything else opens the database, run the same "
                      "restore again (it moves aside any -wal/-shm the process left), then "
                      "start it again")


def _rename_into_place(work: str, target: str, aside_dir: str, progress: ApplyState, mode: str,
                       old: int) -> dict[str, Any]:
    """place_file's last steps: the verified ``work`` renamed over ``target``,
    whose replaced file is open as ``old`` (-1: there was none)."""
    # Last, right before the rename: the narrowest window for a late opener.
    found, complete = holders([target] + [target + s for s in COMPANIONS])
    locked = not found and sqlite_locks_held(target)
    if found or locked:
        who = describe_holders(target, (found, complete), locked)
        raise OpsError(EX_BUSY, f"{target} cannot be restored into with SQLite and is open in "
                                f"{who}: replacing a file under an open process is undefined "
                                "behaviour. Stop them and retry; nothing was changed")
    progress.step = "moving-aside"
    moved = _move_aside(target, aside_dir, progress)
    fsync_path(work)
    os.replace(work, target)
    progress.step = "placed"
    fsync_path(os.path.dirname(os.path.abspath(target)))
    note = None if complete else ("other users' processes could not be checked for an open "
                                  "file; run as root to be sure")
    # A process that opened the old file after the check above still has it:
    # its reads are of the old content, and SQLite refuses its writes.
    late, _ = holders([os.path.realpath(target) + " (deleted)"])
    if late:
        note = (f"{', '.join(f'{cmd} (pid {pid})' for pid, cmd in late)} opened {target} "
                f"while it was being replaced and still has the old file: {LATE_OPENER_ADVICE}")
    elif old >= 0 and locks_held(f"/proc/self/fd/{old}", SQLITE_LOCK_BYTES):
        note = (f"{unseen_holder(complete)} opened {target} while it was being replaced and "
                f"still has the old file: {LATE_OPENER_ADVICE}")
    return {"method": "rename", "journal_mode": mode, "moved_aside": moved, "note": note}


def apply_restore(report: Report, target: str, aside_dir: str, busy_ms: int = 5000,
                  journal_mode: str | None = None, check: bool = True,
                  progress: ApplyState | None = None, quiet: bool = True) -> dict[str, Any]:
    """Put the verified work file's content into ``target`` and check it (unless
    ``check`` is false); returns what was done."""
    progress = progress or ApplyState()
    expected = report.tables if check else None
    proven = report.work_identity if check else None
    wanted_mode = journal_mode or report.journal_mode
    previous = os.stat(target) if os.path.exists(target) else None
    if previous is not None:
        if not os.path.isfile(target):
            raise OpsError(EX_USAGE, f"not a regular file: {target}")
        # This process too: a connection it still has would keep the old file.
        # And one this process cannot see: an application in another PID
        # namespace (a container beside this one) shows only in its locks.
        found, complete = holders([target] + [target + s for s in COMPANIONS],
                                  include_self=True)
        try:
            # (a holder that cannot be told apart from none counts as one)
            if found or not complete or sqlite_locks_held(target) is not False:
                applied = restore_into(report.work, target, busy_ms, expected, wanted_mode,
                                       progress, quiet)
            else:
                # Nothing has it open: the verified file itself goes into place
                # (one write of the data, not two through the WAL), in the mode
                # the database had (a fresh one gets the backup's).
                mode, fresh = _current_mode(target, busy_ms)
                applied = place_file(report.work, target,
                                     _target_mode(wanted_mode) if fresh else mode, aside_dir,
                                     expected, progress, proven)
                applied.update(fresh=fresh, idle=True)
        except _Unusable as exc:
            applied = place_file(report.work, target, _target_mode(report.journal_mode),
                                 aside_dir, expected, progress, proven)
            applied["why"] = f"SQLite cannot write into the current file ({exc})"
            applied["fresh"] = False
    else:
        applied = place_file(report.work, target, _target_mode(wanted_mode), aside_dir,
                             expected, progress, proven)
        applied["fresh"] = True
    applied.update(settle_ownership(report, target, previous, bool(applied.get("fresh"))))
    return applied


def require_unchanged(work: str, proven: tuple[int, ...]) -> None:
    """``work`` is still the file whose content verify proved by hash:
    the same inode, size, mtime and ctime (catalog.file_identity), so nothing
    wrote to it, truncated it or put another file in its place since (the
    work directory is private, but the same user or root can reach it; a
    restore sweeping a killed run's work files could remove it while a plan
    is read). Anything else: refused, nothing changed."""
    try:
        now: tuple[int, ...] | None = catalog.file_identity(work)
    except FileNotFoundError:
        now = None
    if now != proven:
        what = "was removed" if now is None else "was written to or replaced"
        raise OpsError(EX_FAIL, f"the verified copy {work} {what} after it was verified "
                                "(by another process?): it is no longer the content the "
                                "backup's checksums proved; nothing was changed; run the "
                                "restore again")


def _check_stopped(shown: str, exc: Exception) -> OpsError:
    """The error that stopped a check of the restored ``shown``: damage (exit
    4) only when SQLite calls the file damaged. A lock, an I/O error or a file
    that cannot be opened is no verdict on the bytes: exit 1."""
    if isinstance(exc, sqlite3.Error) and sqlite_error_code(exc) == EX_INTEGRITY:
        return OpsError(EX_INTEGRITY, f"the restored {shown} cannot be read ({exc})")
    return OpsError(EX_FAIL, f"cannot check the restored {shown} ({exc}): the check neither "
                             "passed nor failed; nothing was changed")


def check_proven(target: str, expected: dict[str, int], size: int,
                 shown: str | None = None) -> None:
    """The check of a private work file whose bytes verify proved to be the
    backup's (by SHA-256) and that nothing touched since (require_unchanged):
    only the journal-mode change wrote to it, in its header. So instead of
    quick_check and every table's row count (the manifest's counts stand for
    these bytes), SQLite opens it and reads its header and schema: a file
    SQLite reads, ``size`` bytes, as many as its header's pages, and the
    tables ``expected`` names."""
    shown = shown or target
    try:
        conn = sqlite3.connect(readonly_uri(target), uri=True, isolation_level=None)
        try:
            page_size = int(_one(conn, "PRAGMA page_size"))
            pages = int(_one(conn, "PRAGMA page_count"))
            names = table_names(conn)
        finally:
            conn.close()
        have = os.path.getsize(target)
    except (sqlite3.Error, OSError) as exc:
        raise _check_stopped(shown, exc) from None
    problem = compare_tables(expected, names)
    if have != size or pages * page_size != size:
        problem = (f"it has {have} bytes, {pages} pages of {page_size} by its header, "
                   f"the verified content {size}")
    if problem:
        raise OpsError(EX_INTEGRITY, f"the restored {shown} does not match the backup: {problem}")


def check_restored(target: str, expected: dict[str, int], shown: str | None = None,
                   ) -> dict[str, int]:
    """quick_check and row counts of a restored database nobody else writes to
    (a private file about to be renamed into place, a drill's temp file),
    where its bytes were not proven by hash (no manifest: --force).

    The pages were copied verbatim from a file that had just passed a full
    integrity_check, so what is left to catch is a bad write: quick_check
    walks every b-tree page (without cross-checking indexes against tables),
    and the row counts confirm the content.
    """
    shown = shown or target
    try:
        conn = sqlite3.connect(readonly_uri(target), uri=True, isolation_level=None)
        try:
            rows = check_rows(conn)
            counts = table_counts(conn) if rows == ["ok"] else {}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _check_stopped(shown, exc) from None
    if rows != ["ok"]:
        raise OpsError(EX_INTEGRITY, f"the restored {shown} failed PRAGMA quick_check "
                                     f"({'; '.join(rows[:3])})")
    mismatch = compare_counts(expected, counts)
    if mismatch:
        raise OpsError(EX_INTEGRITY, f"the restored {shown} does not match the backup: {mismatch}")
    return counts


def interrupted_state(report: Report, target: str, progress: ApplyState) -> str:
    """What an interruption of ``apply`` left in ``target``, found out rather than
    assumed, and what to do next (one line)."""
    restored = (f"{target} holds the backup's content ({os.path.basename(report.backup)}, "
                f"{report.rows} rows)")
    unchecked = f"; it was not checked: check it with: {maintain_check_command(target)}"
    if progress.step == "start":
        return f"interrupted before anything was written: {target} is as it was"
    if progress.step == "moving-aside" and progress.placed(target):
        progress.step = "placed"
    if progress.step == "moving-aside":
        moved = ", ".join(progress.moved)
        return (f"interrupted before the restored file was put in place: {target} is as it was"
                + (f", except that its stale {moved} were moved aside" if moved else ""))
    if progress.step == "placed":
        return (f"interrupted after the restored file was put in place: {target} holds the "
                f"backup's content ({os.path.basename(report.backup)}, {report.rows} rows) "
                "(checked)")
    if progress.step in ("committed", "checked"):
        checked = " (checked)" if progress.step == "checked" else unchecked
        return f"interrupted after the copy was committed: {restored}{checked}"
    # Interrupted during the backup-API step: its commit bumps the target's
    # schema cookie by one, which says whether it happened.
    try:
        conn = sqlite3.connect(readonly_uri(target), uri=True, isolation_level=None, timeout=5)
        try:
            cookie = int(conn.execute("PRAGMA schema_version").fetchone()[0])
            counts = table_counts(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return (f"interrupted during the copy into {target}, which cannot be read now ({exc}): "
                f"whether the restore was committed is unknown; check it with: "
                f"{maintain_check_command(target)}")
    if progress.cookie is not None and cookie == progress.cookie:
        return (f"interrupted during the copy: SQLite rolled it back, so {target} is as it was "
                "(nothing was restored)")
    if progress.cookie is not None and cookie > progress.cookie and counts == report.tables:
        return f"interrupted during the copy, after its commit: {restored}{unchecked}"
    return (f"interrupted during the copy into {target}: its content matches neither the "
            f"backup nor the state before; check it with: {maintain_check_command(target)}")


# ---------------------------------------------------------------------------
# Plan and receipt (for the person at the keyboard)
# ---------------------------------------------------------------------------


def current_state(db: str) -> tuple[dict[str, int] | None, str | None, str | None]:
    """(row counts, journal mode, error) of the database about to be replaced.
    Only read: a hot journal is rolled back by the safety backup, once the
    operator said yes and the lock is held, never by showing the plan."""
    if not os.path.exists(db):
        return None, None, "does not exist"
    if hot_journal(db):
        return None, None, HOT_JOURNAL_IN_PLAN
    try:
        conn = sqlite3.connect(readonly_uri(db), uri=True, isolation_level=None, timeout=5)
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            return table_counts(conn), mode, None
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return None, None, f"cannot be read ({exc})"


HOT_JOURNAL_IN_PLAN = ("has a hot rollback journal (a writer was killed mid-transaction), so its "
                       "rows cannot be read until SQLite rolls it back; the safety backup does "
                       "that first, discarding the killed writer's uncommitted changes, as "
                       "SQLite does on any open")


def when_taken(report: Report) -> str:
    if not report.created_at:
        return "time unknown (no manifest)"
    try:
        created = calendar.timegm(time.strptime(report.created_at, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return report.created_at
    return f"{report.created_at}, {human_age(time.time() - created)} ago"


def _open_in(db: str) -> list[str]:
    """Plan lines naming the processes that have ``db`` open, if any."""
    found, complete = holders([db] + [db + s for s in COMPANIONS])
    unseen = "" if complete else "; other users' processes unseen (only root sees them)"
    if not found and sqlite_locks_held(db):
        names, more, unseen = unseen_holder(complete), "", ""
    elif not found:
        return [] if complete else [f"  open in:  none of yours{unseen}"]
    else:
        names = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return [f"  open in:  {names}{more}{unseen}",
            "            they read the restored data on their next query; anything they "
            "write after the safety backup is in neither it nor the restored database: "
            "stop writers first if you can"]


def format_plan(report: Report, db: str) -> str:
    counts, mode, error = current_state(db)
    version = "-" if report.schema_version is None else report.schema_version
    lines = [
        f"Restore plan for {db}",
        f"  backup:   {report.backup}",
        f"  taken:    {when_taken(report)}",
        f"  schema:   version {version}",
        f"  current:  {error}" if error else
        f"  current:  {human_bytes(os.path.getsize(db))}, {mode} mode",
        *_open_in(db),
        "",
        f"  {'table':<30} {'backup':>12} {'current':>12}",
    ]
    names = sorted(set(report.tables) | set(counts or {}))
    for name in names:
        ours = report.tables.get(name)
        theirs = (counts or {}).get(name)
        lines.append(f"  {name[:30]:<30} {'-' if ours is None else ours:>12} "
                     f"{'-' if theirs is None else theirs:>12}")
    total_now = sum(counts.values()) if counts is not None else "-"
    lines.append(f"  {'(all tables)':<30} {report.rows:>12} {total_now:>12}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def format_receipt(report: Report, target: str, *, safety: str, raw_copy: str,
                   seconds: float, undo: str, note: str | None, to: bool = False) -> str:
    applied = report.applied
    how = {"backup-api": "SQLite backup API into the existing file" + (
                         "" if to else " (open connections see the restored data on their "
                         "next read)"),
           "rename": "verified file renamed into place" + (
                     " (no process this restore could see had it open)"
                     if applied.get("idle") else "")
           }.get(applied.get("method"), "?")
    lines = [
        f"Restore completed: {target}",
        f"  backup restored: {report.backup} ({when_taken(report)})",
    ]
    if safety:
        lines.append(f"  safety backup:   {safety}")
    if raw_copy:
        lines.append(f"  raw copy:        {raw_copy} (the old database was too damaged for "
                     "a verified backup; its files were copied as they were)")
    if to:
        lines.append("  safety backup:   none (--to never backs up its target)")
    elif not safety and not raw_copy:
        lines.append("  safety backup:   none (there was no database to keep)")
    if undo:
        lines.append(f"  undo with:       {undo}")
    if undo and raw_copy:  # the undo line is pasted as it is: the warning has its own
        lines.append("  before the undo: stop the application (the undo copies the old "
                     "database's files over the ones it has open)")
    table_text = ", ".join(f"{k} {v}" for k, v in sorted(report.tables.items())) or "no tables"
    lines += [
        f"  rows:            {report.rows} ({table_text})",
        f"  method:          {how}",
        f"  journal mode:    {applied.get('journal_mode', '?')}",
        f"  owner, mode:     {applied.get('ownership', '?')}",
        f"  time taken:      {seconds:.1f} s",
    ]
    for moved in applied.get("moved_aside", []):
        lines.append(f"  moved aside:     {moved} (stale, never applied)")
    for extra in (applied.get("why"), applied.get("note"), applied.get("ownership_note"), note,
                  *report.warnings):
        if extra:
            lines.append(f"  note: {extra}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# List
# ---------------------------------------------------------------------------


def _status(backup: catalog.Backup, fk_accept: str) -> tuple[str, bool | None]:
    if backup.manifest is None:
        why = backup.manifest_error or "no manifest"
        if why == "no manifest":
            return "no manifest (unverified)", None
        return f"manifest unreadable ({why.removeprefix('manifest unreadable: ')})", None
    incomplete = catalog.manifest_problem(backup.manifest, catalog.NEEDED)
    if incomplete is not None:
        return f"manifest incomplete ({incomplete})", None
    if backup.manifest.get("verified") is not True:
        return "manifest does not say verified", None
    if not backup.verified:
        return "size differs from manifest", False
    try:
        checksum_ok = backup.checksum_ok()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", False
    if not checksum_ok:
        return "CHECKSUM MISMATCH", False
    if catalog.records_fk_problems(backup.manifest, fk_accept):
        return "ok, foreign-key violations (restore needs --force)", True
    if integrity_state(backup.manifest) == "left to the drill":
        left = ("the full integrity_check and the foreign-key count are"
                if catalog.fk_count_pending(backup.manifest) else "the full integrity_check is")
        return f"ok (quick_check; {left} left to the drill)", True
    return "ok", True


def integrity_state(manifest: dict[str, Any] | None) -> str | None:
    """Who recorded the full integrity_check of a backup's content ("backup",
    "drill"), "left to the drill" (INTEGRITY_CHECK=drill, no drill yet), or
    None (no record: a restore checks it then)."""
    entry = (manifest or {}).get("integrity_check")
    if isinstance(entry, dict) and entry.get("db_sha256") == (manifest or {}).get("db_sha256"):
        return str(entry.get("checked_by", "backup"))
    if (manifest or {}).get("integrity_check_deferred") is True:
        return "left to the drill"
    return None


def _entry(backup: catalog.Backup, kind: str, now: float, fk_accept: str) -> dict[str, Any]:
    """One listed backup; whether it needs --force is judged with ``fk_accept``
    (FK_ACCEPT now), as a restore of it would judge it."""
    status, checksum = _status(backup, fk_accept)
    notes = backup.oddities(now)
    if notes:
        status = "; ".join([status, *notes])
    manifest = backup.manifest or {}
    tables = manifest.get("tables") if isinstance(manifest.get("tables"), dict) else None
    return {
        "kind": kind, "file": backup.path.name, "path": str(backup.path.absolute()),
        "created_at": backup.created_iso, "age_seconds": int(max(now - backup.created_at, 0)),
        "size_bytes": backup.size_bytes, "compression": backup.compression,
        "schema_version": manifest.get("schema_version"), "tables": tables,
        "rows": sum(tables.values()) if tables else None,
        "manifest": backup.manifest is not None, "checksum_ok": checksum, "status": status,
        "manifest_error": backup.manifest_error, "in_future": backup.in_future(now),
        "oddities": notes, "integrity_check": integrity_state(backup.manifest),
    }


def _raw_copies(directory: Path, name: str, now: float) -> list[dict[str, Any]]:
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.endswith(RAW_SUFFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        parsed = catalog.parse_backup_name(entry.name[: -len(RAW_SUFFIX)] + ".db")
        if parsed is None or parsed[0] != name:
            continue
        try:
            files = sorted(os.listdir(entry.path))
            size = sum(os.lstat(os.path.join(entry.path, f)).st_size for f in files)
        except OSError:
            continue
        found.append({
            "kind": "raw-copy", "file": entry.name, "path": os.path.abspath(entry.path),
            "created_at": catalog.iso_utc(parsed[1]),
            "age_seconds": int(max(now - parsed[1], 0)), "size_bytes": size,
            "compression": "none", "schema_version": None, "tables": None, "rows": None,
            "manifest": False, "checksum_ok": None, "manifest_error": None, "in_future": False,
            "oddities": [],
            "status": "raw copy of a damaged database (" + ", ".join(files) + ")",
        })
    return sorted(found, key=lambda e: e["created_at"], reverse=True)


def require_backup_dir(root: Path) -> None:
    """A mistyped backup directory is an error, never an empty list: at 3 a.m.
    "(none)" reads as "every backup is gone"."""
    if not root.is_dir():
        raise OpsError(EX_USAGE, f"backup directory not found: {root} (check --dir or BACKUP_DIR)")


def list_entries(backup_dir: str | os.PathLike[str], db_path: str,
                 fk_accept: str = "") -> list[dict[str, Any]]:
    """Every backup of the database, newest first, then the pre-restore ones."""
    name, now, root = catalog.db_name(db_path), time.time(), Path(backup_dir)
    entries = [_entry(b, "backup", now, fk_accept)
               for b in catalog.list_backups(root, name, db_path)]
    pre = root / PRE_RESTORE_DIR
    pre_entries = [_entry(b, "pre-restore", now, fk_accept)
                   for b in catalog.list_backups(pre, name, db_path)]
    pre_entries += _raw_copies(pre, name, now)
    pre_entries.sort(key=lambda e: e["created_at"], reverse=True)
    return entries + pre_entries


def _latest_path(backup_dir: str, db_path: str) -> str | None:
    try:
        return str(resolve_backup("latest", backup_dir, db_path))
    except OpsError:
        return None


def print_list(backup_dir: str, db_path: str, as_json: bool, fk_accept: str = "") -> int:
    require_backup_dir(Path(backup_dir))
    fkcheck.parse_accept(fk_accept)  # a malformed FK_ACCEPT fails before the first line
    latest = _latest_path(backup_dir, db_path)
    if as_json:
        entries = list_entries(backup_dir, db_path, fk_accept)
        for entry in entries:
            entry["latest"] = entry["path"] == latest
        json.dump({"db": os.path.abspath(db_path), "name": catalog.db_name(db_path),
                   "backup_dir": os.path.abspath(backup_dir), "latest": latest,
                   "backups": entries}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EX_OK
    name, now = catalog.db_name(db_path), time.time()
    root = Path(backup_dir)
    sections = [
        (f"Backups of '{printable(name)}' in {printable(str(root))} (newest first; "
         "`latest` is marked *):",
         lambda: (_entry(b, "backup", now, fk_accept)
                  for b in catalog.list_backups(root, name, db_path))),
        (f"Pre-restore safety backups in {printable(str(root / PRE_RESTORE_DIR))} (taken "
         "before each restore; restore one by path to undo that restore):",
         lambda: sorted([_entry(b, "pre-restore", now, fk_accept) for b in
                         catalog.list_backups(root / PRE_RESTORE_DIR, name, db_path)]
                        + _raw_copies(root / PRE_RESTORE_DIR, name, now),
                        key=lambda e: e["created_at"], reverse=True)),
    ]
    header = (f"  {'FILE':<40} {'CREATED (UTC)':<20} {'AGE':>10} {'SIZE':>10} "
              f"{'SCHEMA':>6} {'TABLES':>6} {'ROWS':>10}  CHECK")
    for title, rows in sections:
        print(title)
        print(header)
        count = 0
        for entry in rows():  # checksums are computed row by row: print as we go
            count += 1
            mark = "*" if entry["path"] == latest else " "
            schema = entry["schema_version"]
            tables = entry["tables"]
            when = entry["created_at"].replace("T", " ")[:19]
            print(f"{mark} {printable(entry['file']):<40} {when:<20} "
                  f"{human_age(entry['age_seconds']):>10} {human_bytes(entry['size_bytes']):>10} "
                  f"{'-' if schema is None else schema:>6} "
                  f"{'-' if tables is None else len(tables):>6} "
                  f"{'-' if entry['rows'] is None else entry['rows']:>10}  "
                  f"{printable(entry['status'])}",
                  flush=True)
        if count == 0:
            print("  (none)")
        print()
    others = catalog.foreign_backups(root, name, db_path)
    if others:
        print(f"Not listed: {len(others)} backup(s) named '{name}' in {root} taken from another "
              f"database ({others[0].manifest.get('source')}); they are not this database's.")
    return EX_OK


# ---------------------------------------------------------------------------
# Which backup to try instead, whose database it is
# ---------------------------------------------------------------------------


def next_older(backup: str | os.PathLike[str], backup_dir: str | os.PathLike[str],
               db_path: str) -> Path | None:
    """The newest verified backup of ``db_path`` older than ``backup`` (one of
    BACKUP_DIR's): what to try when ``backup`` fails verification."""
    found, now = False, time.time()
    for candidate in catalog.list_backups(backup_dir, catalog.db_name(db_path), db_path):
        if found and candidate.usable(now):
            return candidate.path
        found = found or os.path.realpath(candidate.path) == os.path.realpath(backup)
    return None


def other_source(backup: str, target: str) -> str | None:
    """The other database ``backup`` was taken from, if not ``target``: over an
    unrelated database, or into a missing one, more likely a mistyped --db than
    a restore anyone meant (a lost disk keeps its path)."""
    manifest, _ = catalog.read_manifest(backup + catalog.MANIFEST_SUFFIX)
    return manifest["source"] if catalog.from_other_database(manifest, target) else None
