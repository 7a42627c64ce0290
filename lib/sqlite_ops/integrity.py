"""PRAGMA integrity_check once per backup, and the record that lets a restore trust it.

A backup runs the full ``integrity_check`` on its snapshot (beside the
compression, on the second core) and records the result in the manifest
against the snapshot's SHA-256:

    "integrity_check": {"result": "ok", "sqlite_version": "3.40.1", "db_sha256": "..."}

With INTEGRITY_CHECK=drill (a database too large for the check to fit beside
the compression) the backup runs only quick_check and says so
(``"integrity_check_deferred": true``); the drill right after runs the full
check on the content it decompressed and hashed, and adds the same record,
with ``"checked_by": "drill"`` and ``"checked_at"``.

The check's verdict depends only on the database's bytes (and on the SQLite
that ran it), and equal SHA-256 means equal bytes. So ``--verify`` and a
restore, having hashed the decompressed content themselves and found the
manifest's ``db_sha256``, trust the record instead of spending the check's
time again during an incident. They run the check themselves when there is no
record (backups made before it existed), when the record does not name these
very bytes, or when the SQLite that made it is older than the one restoring
(a newer SQLite may know more ways a file can be damaged).

What the record does not prove: who wrote it. The manifest is not signed; a
person who can rewrite a backup file can rewrite its manifest to match, as
they already could its ``sha256``. The backup directory's 0700 permissions are
that protection, and a restore over the live database still counts every
table before it touches it and runs ``quick_check`` on the result.

Where the record stands, the manifest's row counts (and its count of 0
foreign-key violations) stand too: they were counted on these same bytes
(``sqlite_ops.restore.verify_backup``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from sqlite_ops.catalog import iso_utc
from sqlite_ops.common import EX_FAIL, INTEGRITY_PRAGMAS, OpsError, check_rows

# With mmap, integrity_check costs CPU only, not a pread() per page (measured:
# 14.5 s -> 8.8 s for 800 MB), but the mapped file counts in the process's
# resident memory. The backup keeps its memory flat (no mmap); a restore that
# must check an older backup now uses it (the time is the incident's).
MMAP = "PRAGMA mmap_size=2147418112"

RECORDED = "recorded at backup, same bytes"


def recorded_phrase(checked_by: str = "backup") -> str:
    """"recorded at backup, same bytes", or "at drill": who ran the check."""
    return RECORDED.replace("backup", checked_by, 1)


def run_check(path: str, uri: bool = False, mmap: bool = False,
              pragma: str = "integrity_check", name: str | None = None) -> list[str]:
    """The rows of ``PRAGMA integrity_check`` (or ``quick_check``) on ``path``
    (["ok"] when sound). SQLite stopping it because the file is damaged is a
    finding too: the one row that says so. Any other error (an I/O error, a
    file that cannot be opened, a lock) says nothing about the bytes:
    OpsError, exit 1, naming the file as ``name``. The files checked here are
    private copies: a lock on one is no reason to retry later."""
    return Background(path, uri, mmap, pragma, name, thread=False).result()


class Background:
    """``run_check`` in a thread (SQLite releases the GIL: it uses the other
    core); ``thread=False`` runs it here and now."""

    def __init__(self, path: str, uri: bool = False, mmap: bool = False,
                 pragma: str = "integrity_check", name: str | None = None,
                 thread: bool = True) -> None:
        if pragma not in INTEGRITY_PRAGMAS:  # said here, not in the thread
            raise ValueError(f"not an integrity pragma: {pragma!r}")
        self.rows: list[str] | None = None
        self.error: BaseException | None = None
        self._conn: sqlite3.Connection | None = None
        self._cancelled = False
        args = (path, uri, mmap, pragma, name or path)
        self._thread = threading.Thread(target=self._run, args=args, daemon=True)
        if thread:
            self._thread.start()
        else:
            self._run(*args)

    def _run(self, path: str, uri: bool, mmap: bool, pragma: str, name: str) -> None:
        try:
            conn = sqlite3.connect(path, uri=uri, isolation_level=None, check_same_thread=False)
            self._conn = conn
            try:
                if mmap:
                    conn.execute(MMAP).fetchall()
                if self._cancelled:
                    raise sqlite3.OperationalError("interrupted")  # as an interrupt ends it
                self.rows = check_rows(conn, pragma)
            finally:
                self._conn = None
                conn.close()
        except sqlite3.Error as exc:  # damage is a row of check_rows: this found nothing
            self.error = OpsError(EX_FAIL, f"PRAGMA {pragma} could not run on {name}: "
                                           f"{exc}; it neither found nor ruled out a problem")
        except BaseException as exc:  # raised by result(): never an empty verdict
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> list[str]:
        """The check's rows, once it ends; what stopped it is raised here."""
        if self._thread.ident is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.rows is not None
        return self.rows

    def cancel(self) -> None:
        """Stop the check (its caller is failing: nobody waits for its
        verdict, and the file may be about to be removed) and wait for its
        thread to end."""
        self._cancelled = True
        while self._thread.is_alive():
            conn = self._conn
            if conn is not None:
                try:
                    conn.interrupt()
                except sqlite3.Error:
                    pass  # closed meanwhile: the thread is ending
            self._thread.join(0.05)


def summary(rows: list[str], limit: int = 3) -> str:
    """The first few problems of a failed check, on one line."""
    # One result row can hold several lines ("*** in database main ***\n...").
    lines = [line for row in rows for line in row.splitlines()
             if line.strip() and not line.startswith("*** in database")]
    return "; ".join(lines[:limit]) if lines else "no result"


def record(db_sha256: str, checked_by: str = "backup") -> dict[str, Any]:
    """The manifest's record of a passed check of the content ``db_sha256``;
    a check the drill ran says so (``checked_by``) and when (``checked_at``)."""
    entry: dict[str, Any] = {"result": "ok", "sqlite_version": sqlite3.sqlite_version,
                             "db_sha256": db_sha256}
    if checked_by != "backup":
        entry["checked_by"] = checked_by
        entry["checked_at"] = iso_utc(time.time())
    return entry


def _version(text: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return None


def trusted(manifest: dict[str, Any] | None, db_sha256: str) -> tuple[bool, str]:
    """(True, why) when ``manifest``'s record covers the content ``db_sha256``
    (computed by the caller from the bytes it holds); else (False, why the
    check must run now)."""
    entry = (manifest or {}).get("integrity_check")
    if manifest is None:
        return False, "no manifest"
    if not isinstance(entry, dict) and manifest.get("integrity_check_deferred") is True:
        return False, ("the backup ran quick_check only and left the full check to the drill "
                       "(INTEGRITY_CHECK=drill), which has not recorded it yet")
    if not isinstance(entry, dict):
        return False, ("the manifest has no integrity_check record (an older backup, or a "
                       "pre-restore safety backup, which runs quick_check only)")
    if entry.get("result") != "ok":
        return False, "the manifest's integrity_check record does not say ok"
    if entry.get("db_sha256") != db_sha256 or manifest.get("db_sha256") != db_sha256:
        return False, "the manifest's integrity_check record is of other content"
    made, here = _version(entry.get("sqlite_version")), _version(sqlite3.sqlite_version)
    if made is None or here is None or made < here:
        return False, (f"the record was made by SQLite {entry.get('sqlite_version')}, older "
                       f"than this one ({sqlite3.sqlite_version})")
    who = entry.get("checked_by", "backup")
    return True, (f"{recorded_phrase(who)} (integrity_check ok under SQLite "
                  f"{entry['sqlite_version']})")
