"""Online snapshots of a live SQLite database, and the files a backup publishes.

The steps of a backup that touch the database's bytes, called by
sqlite_ops.backup (which runs the whole backup, lock to metrics):

``take_snapshot(SOURCE, DEST)``
    A consistent copy of a live database through SQLite's online backup API in
    ONE step (``sqlite3_backup_step(-1)``). One step holds a single read
    transaction for the whole copy, so writes by other connections cannot
    restart it: it completes under any write load (the sqlite3 CLI's
    ``.backup`` copies 100 pages per step and starts over whenever another
    connection commits in between, so under steady writes it never finishes).
    The copy is left in rollback-journal (DELETE) mode so it is one
    self-contained file; the source's journal mode is reported so a restore can
    put it back.

``stream(SOURCE, OUT, compression)``
    A WAL database whose file holds a whole read transaction's snapshot is
    read from that file inside the transaction, straight into the compressor
    and the hash, while the checks, row counts and foreign-key count run on
    the same transaction: no copy. None when the file does not hold it (then
    ``take_snapshot`` and ``pack``). Both give the same bytes.

``pack(SNAPSHOT, OUT, compression)``
    Streams the snapshot through the compressor into OUT, hashing the
    uncompressed and the compressed stream on the way (each file is read
    once), while PRAGMA integrity_check (or quick_check) runs beside it.

``build_manifest(SNAPSHOT, ...)``
    The manifest: row counts per table, schema version, foreign-key
    violations, plus the facts gathered by ``take_snapshot`` and ``pack``.

Standard library only. Expected failures are OpsError with the contract's
code (1 failed, 2 usage, 4 the database is corrupt).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO, Callable

from sqlite_ops import fkcheck, hashing, integrity
from sqlite_ops.catalog import MANIFEST_FORMAT, WRITTEN, iso_utc, manifest_problem
from sqlite_ops.common import (
    EX_BUSY,
    EX_FAIL,
    EX_INTEGRITY,
    EX_USAGE,
    HOT_JOURNAL_ROLLED_BACK,
    PENDING_BYTE,  # the page holding it is never used; a copy has zeros there
    OpsError,
    abort_when_busy,
    check_rows,
    file_uri,
    fsync_path,
    quote_ident,
    readonly_uri,
    roll_back_hot_journal,
    short_host_name,
    sqlite_error_code,
    tool_complaint,
)
from sqlite_ops.progress import Progress, file_size_probe

PROG = "backup_database.sh"

# Compressor command lines. Level 1 is what the benchmark chose (see
# docs/operations/database-management.md): higher levels cost several times the time for a
# few percent of size.
COMPRESSORS = {
    "zstd": ["zstd", "-1", "-T0", "-q", "-c"],
    "gzip": ["gzip", "-1", "-c"],
}
COMPRESSOR_PACKAGE = {"zstd": "zstd", "gzip": "gzip"}
# The compressor runs this much nicer than the backup's own threads. With fewer
# cores than busy threads (zstd's workers, the hash, the check's one thread),
# the check, the backup's longest single-threaded chain, then runs first and
# zstd fills the gaps: on 2 cores the drill-mode backup of a database with
# foreign keys takes 0.82x the time (tests/perf/bench_nice.py). The
# application the backup runs beside keeps its CPU too.
COMPRESSOR_NICENESS = 10

# ---------------------------------------------------------------------------
# copy: the online snapshot
# ---------------------------------------------------------------------------



def _classify(exc: sqlite3.Error, what: str) -> OpsError:
    """The backup's error for an sqlite3 error (common.sqlite_error_code says
    which kind). A database the application kept locked past the busy timeout
    fails the backup with exit 1, not 75: to the schedulers and the metrics a
    backup's 75 means "another sqlite-ops run has the lock and does the job"
    (the units count it as success, no metrics are written), and a backup the
    application blocked must be seen to have failed."""
    text = str(exc)
    kind = sqlite_error_code(exc)
    if kind == EX_INTEGRITY:
        return OpsError(EX_INTEGRITY, f"{what}: the database is corrupt ({text}); nothing was "
                                      "published; run maintain_database.sh check")
    if kind == EX_BUSY:
        return OpsError(EX_FAIL, f"{what}: {text} (a writer held it past the busy timeout)")
    if "disk is full" in text.lower() or "disk i/o error" in text.lower():
        return OpsError(EX_FAIL, f"{what}: {text} (is the backup directory's file system full?)")
    return OpsError(EX_FAIL, f"{what}: {text}")


def _open_source(source: str | os.PathLike[str], busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-only connection to the live database ``source`` (usable from the
    checking thread too), once a hot rollback journal is rolled back."""
    if roll_back_hot_journal(source, busy_timeout_ms):
        print(f"{PROG}: warning: {HOT_JOURNAL_ROLLED_BACK.format(db=source)}", file=sys.stderr)
    try:
        return sqlite3.connect(readonly_uri(source), uri=True, timeout=busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _classify(exc, f"cannot open {source}") from None


def take_snapshot(source: str | os.PathLike[str], dest: str | os.PathLike[str],
                  busy_timeout_ms: int = 5000, quiet: bool = False) -> dict[str, Any]:
    """Copy the live database ``source`` into ``dest`` consistently, in one step.

    ``dest`` may exist and be empty (a private temp file made by the caller);
    anything in it is replaced. Returns the source's ``journal_mode``,
    ``page_size``, the SQLite library version that made the copy, and the
    file's owner, group and mode.

    In WAL mode writers keep committing during the copy (the copy reads one
    snapshot; checkpoints simply cannot pass it until it ends). In
    rollback-journal mode the copy holds a shared lock, so a writer waits for
    it to finish: writers must use a busy timeout longer than the copy takes.
    """
    src = _open_source(source, busy_timeout_ms)
    try:
        dst = sqlite3.connect(os.fspath(dest), isolation_level=None)
        try:
            # The copy is a scratch file until it is verified and renamed; the
            # caller fsyncs what it publishes, so no journal and no syncs here.
            dst.execute("PRAGMA journal_mode=OFF")
            dst.execute("PRAGMA synchronous=OFF")
            # No mmap on the source: it would save ~15% of the copy but count
            # the whole database in the process's resident memory.
            mode = src.execute("PRAGMA journal_mode").fetchone()[0]
            page_size = src.execute("PRAGMA page_size").fetchone()[0]
            pages = src.execute("PRAGMA page_count").fetchone()[0]
            # One step reports nothing until it ends: progress watches the copy grow.
            with Progress("snapshot", pages * page_size, prog=PROG, quiet=quiet,
                          probe=file_size_probe(dest)) as bar:
                # pages=-1: the whole database in one step, once the source's
                # shared lock is had within the busy timeout
                src.backup(dst, progress=abort_when_busy)
                bar.complete()
        except sqlite3.Error as exc:
            raise _classify(exc, f"snapshot of {source} failed") from None
        finally:
            dst.close()
    finally:
        src.close()
    _make_self_contained(dest)
    return {"journal_mode": str(mode).lower(), "page_size": int(page_size),
            "sqlite_version": sqlite3.sqlite_version, **file_ownership(source)}


def file_ownership(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's ``owner``, ``group`` (numeric ids) and ``mode`` ("0644") of
    the database file, so a restore into a new file gives it back to the
    application's user instead of leaving it the restoring user's, 0600."""
    st = os.stat(path)
    return {"owner": st.st_uid, "group": st.st_gid, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}


def _make_self_contained(path: str | os.PathLike[str]) -> None:
    """Leave the copy in DELETE mode: the backup API keeps a WAL source's header
    bytes, and a file that says WAL would grow -wal/-shm files when opened.

    The header is rewritten in place (:func:`self_contained_header`), as
    ``PRAGMA journal_mode=DELETE`` would rewrite it, but without opening the
    copy in WAL mode and syncing it: the private copy is only read again (and
    then removed), so it need never reach the disk."""
    with open(path, "r+b") as handle:
        header = handle.read(HEADER_BYTES)
        fixed = self_contained_header(header)
        if fixed != header:
            os.pwrite(handle.fileno(), fixed, 0)


# ---------------------------------------------------------------------------
# The header of page 1, as SQLite's own copy would have it
# ---------------------------------------------------------------------------

HEADER_BYTES = 100
_CHANGE_COUNTER, _PAGE_COUNT, _SCHEMA_COOKIE = 24, 28, 40
_VERSION_VALID_FOR, _LIBRARY_VERSION = 92, 96
_VERSION_NUMBER = (sqlite3.sqlite_version_info[0] * 1_000_000
                   + sqlite3.sqlite_version_info[1] * 1_000 + sqlite3.sqlite_version_info[2])


def _put(header: bytearray, offset: int, value: int) -> None:
    header[offset:offset + 4] = value.to_bytes(4, "big")


def backup_api_header(header: bytes, page_count: int) -> bytes:
    """The first 100 bytes of page 1 of a fresh copy made by the backup API
    from a database whose page 1 starts with ``header``: the destination's own
    change counter, version-valid-for and schema cookie (1: its first
    transaction), its page count, and this library's version number; every
    other byte is the source's (the journal-mode bytes 18-19 included)."""
    fixed = bytearray(header[:HEADER_BYTES])
    for offset, value in ((_CHANGE_COUNTER, 1), (_PAGE_COUNT, page_count),
                          (_SCHEMA_COOKIE, 1), (_VERSION_VALID_FOR, 1),
                          (_LIBRARY_VERSION, _VERSION_NUMBER)):
        _put(fixed, offset, value)
    return bytes(fixed)


def self_contained_header(header: bytes) -> bytes:
    """``header`` (page 1's first 100 bytes) after ``PRAGMA journal_mode=DELETE``
    on a file that says WAL: bytes 18-19 back to 1 (rollback journal), and
    the commit that wrote them counted (change counter + 1, version-valid-for
    equal to it, this library's version number). Unchanged when the file
    already says rollback journal."""
    if header[18:20] == b"\x01\x01":
        return bytes(header)
    fixed = bytearray(header)
    fixed[18:20] = b"\x01\x01"
    counter = int.from_bytes(header[_CHANGE_COUNTER:_CHANGE_COUNTER + 4], "big") + 1
    for offset, value in ((_CHANGE_COUNTER, counter), (_VERSION_VALID_FOR, counter),
                          (_LIBRARY_VERSION, _VERSION_NUMBER)):
        _put(fixed, offset, value)
    return bytes(fixed)


# ---------------------------------------------------------------------------
# pack: compress and hash in one pass
# ---------------------------------------------------------------------------


def compressor_command(compression: str) -> list[str]:
    """The command for a codec; OpsError when the tool is not installed."""
    if compression not in COMPRESSORS:
        raise OpsError(EX_USAGE, f"unknown compression {compression!r} (zstd, gzip or none)")
    command = list(COMPRESSORS[compression])
    if shutil.which(command[0]) is None:
        package = COMPRESSOR_PACKAGE[compression]
        raise OpsError(EX_FAIL, f"'{command[0]}' is not installed; install the '{package}' "
                                f"package (apt-get install {package}) or use --compress none")
    if shutil.which("nice") is None:
        return command
    return ["nice", "-n", str(COMPRESSOR_NICENESS), *command]


def _read_position(pid: int, path: str) -> Callable[[], int]:
    """A progress probe: how far process ``pid`` has read into ``path`` (its
    file offset, from /proc); 0 where /proc does not tell."""
    wanted = os.path.realpath(path)
    found: dict[str, str] = {}

    def probe() -> int:
        if "fd" not in found:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        found["fd"] = fd
                        break
            except OSError:
                return 0
            if "fd" not in found:
                return 0
        try:
            with open(f"/proc/{pid}/fdinfo/{found['fd']}", encoding="ascii") as info:
                for line in info:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    return probe


def _check_failed(source: str, rows: list[str], pragma: str = "integrity_check") -> OpsError:
    return OpsError(EX_INTEGRITY, f"{source} failed PRAGMA {pragma} "
                                  f"({integrity.summary(rows)}); nothing was published; run "
                                  "maintain_database.sh check")


# pack's ``check``: which PRAGMA runs beside the compression.
CHECK_PRAGMA = {"full": "integrity_check", "quick": "quick_check"}


def pack(snapshot: str | os.PathLike[str], out: str | os.PathLike[str],
         compression: str, *, source: str | None = None, quiet: bool = True,
         check: str = "full") -> dict[str, Any]:
    """Compress ``snapshot`` into ``out`` (or just hash it for ``none``), and
    run the full PRAGMA integrity_check on it meanwhile.

    Returns ``sha256`` and ``size_bytes`` of ``out``, ``db_sha256`` and
    ``db_size_bytes`` of the snapshot, and the ``integrity_check`` record for
    the manifest. ``out`` is fsynced. For ``none``, ``out`` must be the
    snapshot itself (it is published as is). OpsError(EX_INTEGRITY) when the
    check finds a problem (``source`` names the database in the message).
    ``check="quick"`` runs only PRAGMA quick_check and returns no record (a
    restore of that backup runs the full check itself).

    The compressor reads the snapshot itself (no copy through a pipe) while a
    thread hashes it and another runs integrity_check (SQLite, hashlib and the
    compressor release the GIL: the work spreads over the cores); the
    compressed stream is hashed as it is written. The snapshot was just
    written, so every read comes from the page cache.
    """
    snapshot = os.fspath(snapshot)
    pragma = CHECK_PRAGMA[check]
    checker = integrity.Background(readonly_uri(snapshot), uri=True, pragma=pragma,
                                   name=f"the snapshot {snapshot}")
    try:
        total = os.path.getsize(snapshot)
        if compression == "none":
            if os.path.abspath(os.fspath(out)) != os.path.abspath(snapshot):
                shutil.copyfile(snapshot, out)
            with Progress("hashing", total, prog=PROG, quiet=quiet) as bar:
                digest, size = hashing.sha256_file_size(out, bar.advance)
            fsync_path(out)
            facts = {"sha256": digest, "size_bytes": size, "db_sha256": digest,
                     "db_size_bytes": size}
        else:
            facts = _compress(snapshot, out, compression, total, quiet)
    except BaseException:
        checker.cancel()  # the snapshot is about to be removed: no check goes on reading it
        raise
    with Progress(pragma, prog=PROG, quiet=quiet or checker.done()):
        try:
            rows = checker.result()
        except OpsError as exc:
            raise OpsError(exc.code, f"{exc.message}; nothing was published") from None
    if rows != ["ok"]:
        raise _check_failed(source or snapshot, rows, pragma)
    if check == "full":
        facts["integrity_check"] = integrity.record(facts["db_sha256"])
    return facts


def _compress(snapshot: str, out: str | os.PathLike[str], compression: str, total: int,
              quiet: bool) -> dict[str, Any]:
    """The compressor reads the snapshot file itself; a thread hashes it meanwhile."""
    source: dict[str, Any] = {}

    def hash_source() -> None:
        try:
            source["digest"], source["size"] = hashing.sha256_file_size(snapshot)
        except OSError as exc:
            source["error"] = exc

    facts = _run_compressor([*compressor_command(compression), "--", snapshot], out,
                            compression, total, quiet, side=hash_source,
                            probe=lambda pid: _read_position(pid, snapshot))
    if "error" in source:
        raise OpsError(EX_FAIL, f"cannot read {snapshot}: {source['error'].strerror}")
    return {**facts, "db_sha256": source["digest"], "db_size_bytes": source["size"]}


def _run_compressor(command: list[str], out: str | os.PathLike[str], compression: str,
                    total: int, quiet: bool, *, side: Callable[..., None],
                    probe: Callable[[int], Callable[[], int]], feeds: bool = False,
                    stdin: int | None = None, head: bytes = b"") -> dict[str, Any]:
    """Run the compressor ``command``, hashing its output as it is written to
    ``out`` (fsynced) after ``head`` (compressed frames that go first), while
    ``side`` runs in a thread beside it: given the compressor's stdin when
    ``feeds`` (it must write the input and close it), else nothing. The
    compressor reads descriptor ``stdin`` when given. Returns ``sha256`` and
    ``size_bytes`` of ``out``."""
    out_digest, out_size = hashing.new(), len(head)
    out_digest.update(head)
    with open(out, "wb") as dst:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE if feeds else (
                                    subprocess.DEVNULL if stdin is None else stdin),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout and proc.stderr
        helper = threading.Thread(target=side, args=(proc.stdin,) if feeds else (), daemon=True)
        helper.start()
        try:
            with Progress(f"compressing ({compression})", total, prog=PROG, quiet=quiet,
                          probe=probe(proc.pid)) as bar:
                dst.write(head)
                while block := proc.stdout.read(hashing.CHUNK):
                    out_digest.update(block)
                    out_size += len(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
                bar.complete()
        except OSError as exc:
            proc.kill()
            raise OpsError(EX_FAIL, f"cannot write {out}: {exc.strerror}") from None
        except BaseException:
            proc.kill()  # interrupted: a compressor nobody reads would block on its pipe
            raise
        finally:
            stderr = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
            helper.join()
    if proc.returncode != 0:
        raise OpsError(EX_FAIL, f"{COMPRESSORS[compression][0]} failed: "
                                f"{tool_complaint(stderr, proc.returncode)}")
    return {"sha256": out_digest.hexdigest(), "size_bytes": out_size}


# ---------------------------------------------------------------------------
# stream: a WAL database's own file, straight into the compressor
# ---------------------------------------------------------------------------

# A WAL database whose every committed frame is already checkpointed into the
# database file (the WAL-index's nBackfill equals its mxFrame) holds a read
# transaction's whole snapshot in that file, and keeps it there for as long as
# the transaction lasts: a checkpoint never copies a frame newer than the
# oldest reader's snapshot into the file (and one that reads the file alone
# blocks every copy). So inside that one read transaction the file's pages go
# straight into the compressor (which reads them from the file itself where
# they are the copy's, _compress_file) and the hash, while quick_check (or
# integrity_check), the row counts and the foreign-key count run on the same
# transaction's connection: no temp copy of the database is written, and
# writers go on committing into the WAL meanwhile.
#
# Whether the file holds the whole snapshot is read from the WAL-index (the
# -shm file; layout in SQLite's "WAL-mode File Format"): its header, which
# every commit changes, must read the same just before and just after the
# transaction starts (so no commit came in between and the transaction saw
# that header), and then say every frame is backfilled. A passive checkpoint
# first (it never blocks a writer) makes that the usual case. Anything else (a
# reader the checkpoint cannot pass, a commit in between every time, an
# unreadable index, a rollback-journal database, whose readers would hold
# writers off for the whole compression) takes the backup API into a temp
# copy instead (take_snapshot): the same content, byte for byte.

SNAPSHOT_METHODS = ("file", "backup-api")
PIN_ATTEMPTS = 5
_WAL_INDEX_BYTES = 136  # two 48-byte header copies, then the checkpoint info
_WAL_INDEX_VERSION = 3007000


def _wal_index(shm_fd: int) -> tuple[bytes, int, int] | None:
    """(header, mxFrame, nBackfill) from the WAL-index open as ``shm_fd``;
    None when it cannot be read, or its two header copies differ (a commit
    mid-write)."""
    try:
        data = os.pread(shm_fd, _WAL_INDEX_BYTES, 0)
    except OSError:
        return None
    if len(data) < _WAL_INDEX_BYTES or data[:48] != data[48:96]:
        return None
    version, = struct.unpack_from("=I", data, 0)
    if version != _WAL_INDEX_VERSION or data[12] != 1:  # iVersion, isInit
        return None
    mx_frame, = struct.unpack_from("=I", data, 16)
    backfilled, = struct.unpack_from("=I", data, 96)
    return data[:48], mx_frame, backfilled


def _checkpoint(db: str, busy_timeout_ms: int) -> None:
    """PRAGMA wal_checkpoint(PASSIVE): copies what it can of the WAL into the
    database file without waiting for, or holding up, any reader or writer."""
    try:
        conn = sqlite3.connect(file_uri(db, "rw"), uri=True,
                               timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # then the WAL-index says what is not in the file, and the copy is taken


def _pin(conn: sqlite3.Connection, db: str, shm_fd: int, busy_timeout_ms: int) -> bool:
    """Begin a read transaction on ``conn`` whose whole snapshot is in ``db``'s
    own file (see above; ``shm_fd``: its WAL-index); False, with no
    transaction open, when none could be had in ``PIN_ATTEMPTS`` tries."""
    for _ in range(PIN_ATTEMPTS):
        _checkpoint(db, busy_timeout_ms)
        before = _wal_index(shm_fd)
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the snapshot starts
        after = _wal_index(shm_fd)
        if before is not None and after is not None and before[0] == after[0] \
                and after[1] == after[2]:
            return True
        conn.execute("COMMIT")
    return False


class _Pages:
    """The bytes of a backup-API copy of the pinned snapshot, read from the
    database file: page 1 with the header such a copy gets (made
    self-contained, as take_snapshot leaves it), then the file's pages, the
    pending-byte page as zeros."""

    def __init__(self, fd: int, page_size: int, page_count: int) -> None:
        self.fd, self.page_size, self.size = fd, page_size, page_size * page_count
        first = os.pread(fd, page_size, 0)
        if len(first) != page_size:
            raise OSError(5, "the database file is shorter than its header says")
        header = self_contained_header(backup_api_header(first, page_count))
        self.first = header + first[HEADER_BYTES:]
        self.done = 0

    def file_is_copy(self) -> bool:
        """Whether the file's bytes after page 1 are already the copy's: the
        file ends where the snapshot does, and its pending-byte page (when it
        reaches that far) holds the zeros a copy has there."""
        if os.fstat(self.fd).st_size != self.size:
            return False
        if self.size <= PENDING_BYTE:
            return True
        return os.pread(self.fd, self.page_size, PENDING_BYTE) == bytes(self.page_size)

    def blocks(self) -> Iterator[bytes]:
        yield self.first
        offset = self.page_size
        while offset < self.size:
            block = os.pread(self.fd, min(hashing.CHUNK, self.size - offset), offset)
            if not block:
                raise OSError(5, "the database file is shorter than its header says")
            if offset <= PENDING_BYTE < offset + len(block):
                at = PENDING_BYTE - offset
                block = block[:at] + bytes(self.page_size) + block[at + self.page_size:]
            yield block
            offset += len(block)


def stream(source: str, out: str | os.PathLike[str], compression: str, *,
           busy_timeout_ms: int = 5000, quiet: bool = True, check: str = "full",
           fk_accept: str = "", count_fks: bool = True) -> dict[str, Any] | None:
    """Back up the live WAL database ``source`` into ``out`` without a temp
    copy, when its file holds a whole read transaction's snapshot (see above);
    None when it does not (nothing was written: take the copy instead).

    Returns take_snapshot's, pack's and describe's facts together, with
    ``snapshot_method`` "file". The content is byte for byte the backup-API
    copy take_snapshot would have made of the same transaction. OpsError as
    pack's when the check fails or the compressor does.
    """
    conn = _open_source(source, busy_timeout_ms)
    # POSIX locks belong to the process, and closing ANY descriptor of a file
    # drops all of them: the -shm read lock that keeps checkpoints out of the
    # database file while this transaction reads it, the database's shared
    # lock. So the descriptors read here stay open until the connection is
    # closed (SQLite's "How To Corrupt", 2.2).
    held: list[int] = []
    try:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                return None
            held.append(os.open(source, os.O_RDONLY | os.O_CLOEXEC))
            try:  # the connection's first read made the WAL-index
                held.append(os.open(source + "-shm", os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return None
            if not _pin(conn, source, held[1], busy_timeout_ms):
                return None
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        except sqlite3.Error as exc:
            raise _classify(exc, f"snapshot of {source} failed") from None
        pages = _Pages(held[0], page_size, page_count)
        facts = _pack_pinned(conn, pages, source, out, compression, quiet=quiet,
                             check=check, fk_accept=fk_accept, count_fks=count_fks)
        conn.execute("COMMIT")
    finally:
        conn.close()
        for fd in held:
            os.close(fd)
    return {"journal_mode": "wal", "page_size": page_size,
            "sqlite_version": sqlite3.sqlite_version, **file_ownership(source),
            "snapshot_method": "file", **facts}


def _pack_pinned(conn: sqlite3.Connection, pages: _Pages, source: str,
                 out: str | os.PathLike[str], compression: str, *, quiet: bool, check: str,
                 fk_accept: str, count_fks: bool) -> dict[str, Any]:
    """pack and describe for a pinned snapshot: the pages hashed, and read by
    the compressor from the file (or fed to it, or written straight into
    ``out`` for ``none``), while a thread runs the check, the row counts and
    the foreign-key count on ``conn``."""
    pragma = CHECK_PRAGMA[check]
    found: dict[str, Any] = {}

    def examine() -> None:
        try:
            found["rows"] = check_rows(conn, pragma)
            if found["rows"] == ["ok"]:
                found["described"] = describe_connection(conn, fk_accept,
                                                         f"cannot read {source}",
                                                         count_fks=count_fks)
        except BaseException as exc:  # reported below; an interrupt stops it
            found["error"] = exc

    digest = hashing.new()
    fed: dict[str, Any] = {}

    def feed(sink: BinaryIO | None = None) -> None:
        """Hash the pages and write them into ``sink`` (None: only hash them)."""
        try:
            for block in pages.blocks():
                digest.update(block)
                if sink is not None:
                    sink.write(block)
                pages.done += len(block)
        except BrokenPipeError:
            fed["stopped"] = True  # the compressor stopped: its exit status says why
        except BaseException as exc:  # reported below: nothing short is ever published
            fed["error"] = exc
        finally:
            try:
                if sink is not None:
                    sink.close()
            except OSError:
                pass

    examiner = threading.Thread(target=examine, daemon=True)
    examiner.start()
    try:
        if compression == "none":
            with open(out, "wb") as dst, \
                    Progress("copying", pages.size, prog=PROG, quiet=quiet,
                             probe=lambda: pages.done) as bar:
                feed(_Unclosed(dst))
                dst.flush()
                os.fsync(dst.fileno())
                bar.complete()
            facts = {"sha256": digest.hexdigest(), "size_bytes": pages.done}
        elif pages.file_is_copy():
            facts = _compress_file(pages, source, out, compression, quiet, hash_pages=feed)
        else:
            facts = _run_compressor(compressor_command(compression), out, compression,
                                    pages.size, quiet, side=feed, feeds=True,
                                    probe=lambda pid: lambda: pages.done)
        if "error" in fed:
            exc = fed["error"]
            raise OpsError(EX_FAIL, f"cannot read {source}: "
                                    f"{getattr(exc, 'strerror', None) or exc}")
        if pages.done != pages.size:
            raise OpsError(EX_FAIL, f"internal error: {pages.done} of {pages.size} bytes of "
                                    f"{source} were packed")
        with Progress(pragma, prog=PROG, quiet=quiet or not examiner.is_alive()):
            examiner.join()
    except BaseException:
        conn.interrupt()  # a check nobody waits for must not hold the transaction
        examiner.join()
        raise
    if "error" in found:
        exc = found["error"]
        if isinstance(exc, OpsError):
            raise exc
        raise _classify(exc, f"cannot read {source}") if isinstance(exc, sqlite3.Error) else exc
    if found["rows"] != ["ok"]:
        raise _check_failed(source, found["rows"], pragma)
    facts.update(db_sha256=digest.hexdigest(), db_size_bytes=pages.done)
    if check == "full":
        facts["integrity_check"] = integrity.record(facts["db_sha256"])
    return {**facts, **found["described"]}


def _compress_file(pages: _Pages, source: str, out: str | os.PathLike[str], compression: str,
                   quiet: bool, hash_pages: Callable[[], None]) -> dict[str, Any]:
    """Where the file's pages after page 1 are the copy's (_Pages.file_is_copy),
    the compressor reads them from the file itself, like ``zstd db``: no pipe
    between this process and it. Page 1, as the copy has it, goes first as a
    frame of its own (zstd and gzip decompress concatenated frames into the
    concatenated content), and ``hash_pages`` hashes the same pages beside it,
    from the page cache. The read transaction keeps every process from writing
    the file meanwhile (see above); the compressor must still stop exactly at
    the snapshot's end."""
    command = compressor_command(compression)
    first = subprocess.run(command, input=pages.first, capture_output=True, check=False)
    if first.returncode != 0:
        raise OpsError(EX_FAIL, f"{COMPRESSORS[compression][0]} failed: "
                                f"{tool_complaint(first.stderr, first.returncode)}")
    # The descriptor the pages are read from: closing any other descriptor of
    # the file would drop the read transaction's locks. pread never moves its
    # offset; the compressor's reads do.
    os.lseek(pages.fd, pages.page_size, os.SEEK_SET)
    facts = _run_compressor(command, out, compression, pages.size, quiet, side=hash_pages,
                            stdin=pages.fd, head=first.stdout,
                            probe=lambda pid: _read_position(pid, source))
    read_to = os.lseek(pages.fd, 0, os.SEEK_CUR)
    if read_to != pages.size:
        raise OpsError(EX_FAIL, f"{source} changed size while it was read ({read_to} bytes, "
                                f"the snapshot has {pages.size}); nothing was published")
    return facts


class _Unclosed:
    """A file ``feed`` writes into and may close: the caller closes it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# manifest: what the snapshot holds
# ---------------------------------------------------------------------------




def describe(snapshot: str | os.PathLike[str], fk_accept: str = "", *,
             count_fks: bool = True) -> dict[str, Any]:
    """:func:`describe_connection` of the snapshot file ``snapshot``."""
    conn = sqlite3.connect(readonly_uri(snapshot), uri=True, isolation_level=None)
    try:  # no mmap: the backup's memory stays flat whatever the database's size
        return describe_connection(conn, fk_accept, f"cannot read the snapshot {snapshot}",
                                   count_fks=count_fks)
    finally:
        conn.close()


def describe_connection(conn: sqlite3.Connection, fk_accept: str = "",
                        what: str = "cannot read the database", *,
                        count_fks: bool = True) -> dict[str, Any]:
    """Row counts per table, page size, schema version and the foreign-key
    violations (sqlite_ops.fkcheck: the rows PRAGMA foreign_key_check would
    report; None, with the error, when it cannot run) of what ``conn`` reads
    (inside the caller's read transaction, if it holds one).

    With violations, ``foreign_key_violations_by_table`` names the child
    tables, and ``foreign_key_violations_accepted`` says how many of them
    ``fk_accept`` (FK_ACCEPT) covers. Without ``count_fks`` (a drill-mode
    backup) nothing is counted: ``foreign_key_check_deferred`` says the drill
    counts them.
    """
    accepted = fkcheck.parse_accept(fk_accept)
    try:
        tables = table_counts(conn)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        version = schema_version(conn)
        # Recorded, not refused: a backup must copy the database as it is. A
        # restore then knows the violations are the database's own, not damage.
        fks = fkcheck.check(conn) if count_fks else None
    except sqlite3.Error as exc:
        raise _classify(exc, what) from None
    found: dict[str, Any] = {"tables": tables, "page_size": page_size,
                             "schema_version": version}
    if fks is None:
        found["foreign_key_check_deferred"] = True
    else:
        found.update(fkcheck.manifest_fields(fks, accepted))
    return found


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row count of every table (the manifest's definition: no sqlite_* internals)."""
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
    # fetchall: each statement runs to its end, so none is left pending on a
    # connection that goes on to checkpoint (a restore's own, after its check).
    return {name: conn.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()[0][0]
            for name in names}


def schema_version(conn: sqlite3.Connection) -> int | None:
    """max(version) of schema_migrations when it has an integer version column, else None."""
    columns = {row[1]: (row[2] or "").upper()
               for row in conn.execute("PRAGMA table_info(schema_migrations)")}
    if "INT" not in columns.get("version", ""):
        return None
    value = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return value if isinstance(value, int) else None


def build_manifest(snapshot: str | os.PathLike[str], *, source: str, created: float,
                   file_name: str, name: str, compression: str, duration: float,
                   facts: list[dict[str, Any]], fk_accept: str = "",
                   host: str = "", described: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one backup (field names are the contract's). ``host``: the
    machine it was taken on (OFFSITE_HOST; default the short host name), the
    directory its offsite copies live in. ``fk_accept``: FK_ACCEPT.
    ``described``: :func:`describe` of the snapshot when the caller already has
    it (the backup computes it beside the packing)."""
    manifest: dict[str, Any] = {}
    for fact in facts:
        manifest.update(fact)
    manifest.update(described if described is not None else describe(snapshot, fk_accept))
    manifest.update({
        "format": MANIFEST_FORMAT,
        "name": name,
        "file": file_name,
        "source": os.path.abspath(source),
        "host": host or short_host_name(),
        "created_at": iso_utc(created),
        "compression": compression,
        "duration_seconds": round(duration, 3),
        "verified": True,
    })
    # The schema every reader checks (catalog.MANIFEST_SCHEMA): never publish
    # a manifest that the listing would call unreadable.
    problem = manifest_problem(manifest, WRITTEN)
    if problem is None and "foreign_key_violations" not in manifest \
            and manifest.get("foreign_key_check_deferred") is not True:
        problem = "it has no foreign_key_violations and does not defer them"
    if problem:
        raise OpsError(EX_FAIL, f"internal error: the manifest does not match its schema: "
                                f"{problem}")
    return manifest
