"""The backup catalog: which files in a backup directory are backups, and what they hold.

A backup is ``<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz]`` (``<name>`` is the database
file name without its extension, the time is UTC) with a sidecar
``<same>.manifest.json``. Anything else in the directory is not ours: it is
never listed as a backup and never pruned.

Used by backup (pruning), restore (listing, picking ``latest``) and metrics
(backup freshness). Two facts live here and nowhere else: what a manifest may
hold (``MANIFEST_SCHEMA``, checked by ``read_manifest``) and when a backup was
taken (``Backup.created_at``).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlite_ops import fkcheck
from sqlite_ops.common import REPO_ROOT_STR, fsync_path, shell_command, shell_quote
from sqlite_ops.hashing import sha256_file

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1  # the manifest's "format" field; bump on incompatible changes
EXTENSIONS = {"": "none", ".zst": "zstd", ".gz": "gzip"}
SUFFIX_FOR = {"none": "", "zstd": ".zst", "gzip": ".gz"}

# DOTALL and fullmatch: a database name may hold a newline, and "$" alone would
# also match before a trailing one.
_NAME_RE = re.compile(r"(?P<name>.+)_(?P<stamp>\d{8}_\d{6})\.db(?P<ext>\.zst|\.gz)?", re.DOTALL)


def db_name(db_path: str | os.PathLike[str]) -> str:
    """The name backups of this database carry: its file name without extension."""
    base = os.path.basename(os.fspath(db_path))
    stem, dot, _ = base.rpartition(".")
    return stem if dot and stem else base


def backup_file_name(name: str, created: float, compression: str) -> str:
    """``<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz]`` for a UTC time."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(created))
    return f"{name}_{stamp}.db{SUFFIX_FOR[compression]}"


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC to the second, as manifests and listings show times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


DAY = 86400
FUTURE_SKEW = 3600  # seconds a backup's time may be ahead of this clock


@dataclass
class Backup:
    """One backup file and, when present and readable, its manifest."""

    path: Path
    name: str
    name_time: float  # the UTC time in the file name
    compression: str
    size_bytes: int
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None
    _checksum_ok: bool | None = field(default=None, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)

    # The time of a backup: one rule, used by `latest`, the listing, pruning
    # and the metrics. It is the manifest's created_at (written by the run that
    # took it; a rename does not change it); the name's time only when
    # there is no readable manifest (nothing else to go by). A backup whose time
    # is more than FUTURE_SKEW ahead of the clock (a wrong clock when it was
    # taken, or an edited manifest) has no believable time: it is never
    # `latest`, never vouches for freshness, never holds a KEEP_MIN place and is
    # never pruned. A name that disagrees with the manifest (a renamed file) is
    # flagged in the listing, and never decides anything.

    @property
    def created_at(self) -> float:
        """When the backup was taken (see above), epoch seconds."""
        recorded = parse_iso_utc((self.manifest or {}).get("created_at"))
        return self.name_time if recorded is None else recorded

    @property
    def created_iso(self) -> str:
        return iso_utc(self.created_at)

    def in_future(self, now: float) -> bool:
        """Its time is ahead of ``now`` by more than FUTURE_SKEW: not believable."""
        return self.created_at > now + FUTURE_SKEW

    def oddities(self, now: float) -> list[str]:
        """What is odd about this backup's name and time, for the listing."""
        found = []
        if self.in_future(now):
            found.append("dated in the future (a wrong clock?): never latest, never pruned")
        elif self.name_time > now + FUTURE_SKEW:
            found.append("name in the future")
        elif abs(self.name_time - self.created_at) > FUTURE_SKEW:
            found.append("name differs from its manifest's created_at")
        recorded = (self.manifest or {}).get("file")
        if recorded is not None and recorded != self.path.name:
            found.append(f"renamed (published as {recorded!r})")
        return found

    @property
    def verified(self) -> bool:
        """The manifest exists, has every field that proves a backup (NEEDED),
        says verified, and matches the file's size.

        Cheap (no reading of the file); ``checksum_ok()`` reads it.
        """
        m = self.manifest
        return bool(m and m.get("verified") is True and m.get("size_bytes") == self.size_bytes
                    and manifest_problem(m, NEEDED) is None)

    def usable(self, now: float) -> bool:
        """Verified and believably dated: may be `latest`, vouches for freshness."""
        return self.verified and not self.in_future(now)

    def checksum_ok(self) -> bool:
        """The published file's SHA-256 equals the manifest's."""
        if self._checksum_ok is None:
            expected = (self.manifest or {}).get("sha256")
            self._checksum_ok = bool(expected) and sha256_file(self.path) == expected
        return self._checksum_ok


def parse_backup_name(file_name: str) -> tuple[str, float, str] | None:
    """(name, created_at epoch, compression) for one of our file names, else None."""
    match = _NAME_RE.fullmatch(file_name)
    if not match:
        return None
    try:
        created = calendar.timegm(time.strptime(match["stamp"], "%Y%m%d_%H%M%S"))
    except ValueError:
        return None
    return match["name"], float(created), EXTENSIONS[match["ext"] or ""]


# ---------------------------------------------------------------------------
# The manifest: one schema, checked in one place
# ---------------------------------------------------------------------------
#
# Every reader of a manifest (listing, `latest`, pruning, --verify, restore,
# metrics, migrate's undo, the backup script) goes through ``read_manifest``,
# which checks the file against ``MANIFEST_SCHEMA``; the writer
# (``snapshot.build_manifest``) checks what it wrote with ``manifest_problem``.
# A manifest that fails is its own backup's problem: that backup lists as
# "manifest unreadable", counts as unverified and is never pruned; every other
# backup is unaffected.
#
# To add a field: one line in MANIFEST_SCHEMA, name -> (kind, level), with an
# existing kind or a new Kind(...) / nullable(...). Level WRITTEN when the
# writer always sets it (build_manifest then refuses to publish without it),
# OPTIONAL when only some backups have it. Readers never require a WRITTEN
# field (older backups lack new fields: treat absence as unknown); only NEEDED
# ones, and making a field NEEDED makes every older backup fail --verify.
# Fields not in the table are allowed and not checked (a newer version's
# manifest stays readable); a wrong type in a known field makes the manifest
# unreadable.


@dataclass(frozen=True)
class Kind:
    """A type a manifest field may have: how a message names it, and its test."""

    what: str
    test: Callable[[Any], bool]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def nullable(kind: Kind) -> Kind:
    return Kind(f"{kind.what} or null", lambda v: v is None or kind.test(v))


_HEX64 = re.compile(r"[0-9a-f]{64}")
_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def parse_iso_utc(value: Any) -> float | None:
    """Epoch seconds of ``YYYY-mm-ddTHH:MM:SS[.fff]Z``, else None."""
    if not isinstance(value, str) or not _ISO_UTC.fullmatch(value):
        return None
    try:
        return float(calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


COUNT = Kind("a non-negative integer", lambda v: _integer(v) and v >= 0)
INTEGER = Kind("an integer", _integer)
TEXT = Kind("a string", lambda v: isinstance(v, str))
FLAG = Kind("true or false", lambda v: isinstance(v, bool))
SECONDS = Kind("a non-negative number",
               lambda v: (_integer(v) or isinstance(v, float)) and 0 <= v < float("inf"))
SHA256 = Kind("a hex SHA-256", lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)))
TIMESTAMP = Kind("an ISO 8601 UTC time", lambda v: parse_iso_utc(v) is not None)
CODEC = Kind("zstd, gzip or none", lambda v: isinstance(v, str) and v in SUFFIX_FOR)
FILE_MODE = Kind("octal permission bits such as \"0644\"",
                 lambda v: isinstance(v, str) and bool(re.fullmatch(r"0[0-7]{3,4}", v)))
ROW_COUNTS = Kind("an object of table -> row count",
                  lambda v: isinstance(v, dict) and all(COUNT.test(n) for n in v.values()))
# Who ran the check: the backup itself (records without the field are its),
# or the drill right after a backup taken with INTEGRITY_CHECK=drill.
CHECKED_BY = ("backup", "drill")
INTEGRITY_RECORD = Kind(
    "an integrity_check record ({result, sqlite_version, db_sha256[, checked_by, checked_at]})",
    lambda v: (isinstance(v, dict) and isinstance(v.get("result"), str)
               and isinstance(v.get("sqlite_version"), str) and SHA256.test(v.get("db_sha256"))
               and v.get("checked_by", "backup") in CHECKED_BY
               and ("checked_at" not in v or TIMESTAMP.test(v["checked_at"]))))

# Levels. OPTIONAL: some backups have it. WRITTEN: every backup this version
# writes has it (older ones may not). NEEDED: written, and --verify and restore
# refuse a manifest without it (it is what proves the backup).
OPTIONAL, WRITTEN, NEEDED = "optional", "written", "needed"

MANIFEST_SCHEMA: dict[str, tuple[Kind, str]] = {
    "format": (COUNT, WRITTEN),  # MANIFEST_FORMAT; a newer one is refused
    "name": (TEXT, WRITTEN),  # the database's backup name
    "file": (TEXT, WRITTEN),  # the backup's file name when it was published
    "source": (TEXT, WRITTEN),  # absolute path of the database
    "created_at": (TIMESTAMP, WRITTEN),  # when the snapshot was taken (UTC)
    "sha256": (SHA256, NEEDED),  # of the published (compressed) file
    "db_sha256": (SHA256, NEEDED),  # of the uncompressed database
    "size_bytes": (COUNT, NEEDED),  # of the published file
    "db_size_bytes": (COUNT, WRITTEN),  # of the uncompressed database
    "page_size": (COUNT, WRITTEN),
    "journal_mode": (TEXT, WRITTEN),  # of the database the backup was taken from
    "sqlite_version": (TEXT, WRITTEN),  # of the library that took it
    # How the pages were read (snapshot.SNAPSHOT_METHODS): the database file in
    # a read transaction, or SQLite's backup API into a temp copy.
    "snapshot_method": (Kind("file or backup-api",
                             lambda v: v in ("file", "backup-api")), OPTIONAL),
    "schema_version": (nullable(INTEGER), WRITTEN),  # highest applied migration
    "tables": (ROW_COUNTS, NEEDED),  # every table's row count
    "compression": (CODEC, WRITTEN),
    "duration_seconds": (SECONDS, WRITTEN),
    "verified": (FLAG, NEEDED),  # integrity_check said ok before publishing
    # That check, for restores to trust (sqlite_ops.integrity): older backups
    # lack it, and so do safety backups taken with quick_check only.
    "integrity_check": (INTEGRITY_RECORD, OPTIONAL),
    # True: taken with INTEGRITY_CHECK=drill, quick_check only; the full check
    # is the drill's, which then adds integrity_check (checked_by "drill").
    "integrity_check_deferred": (FLAG, OPTIONAL),
    # null: the check cannot run. Drill-mode backups lack it (and the three
    # below) until the drill adds them: they say foreign_key_check_deferred.
    "foreign_key_violations": (nullable(COUNT), OPTIONAL),
    "foreign_key_check_deferred": (FLAG, OPTIONAL),  # True: the count is the drill's
    "foreign_key_check_error": (TEXT, OPTIONAL),  # why, when it cannot
    "foreign_key_violations_by_table": (ROW_COUNTS, OPTIONAL),  # with violations
    "foreign_key_violations_accepted": (COUNT, OPTIONAL),  # of them, in FK_ACCEPT's tables
    "host": (TEXT, WRITTEN),  # OFFSITE_HOST of the machine: its offsite directory
    # The database file's owner and group (numeric ids) and mode ("0644"): a
    # restore into a new file gives them back (older backups lack them).
    "owner": (COUNT, WRITTEN),
    "group": (COUNT, WRITTEN),
    "mode": (FILE_MODE, WRITTEN),
}

# What fkcheck.manifest_fields records.
FK_FIELDS = ("foreign_key_violations", "foreign_key_check_error",
             "foreign_key_violations_by_table", "foreign_key_violations_accepted")


def drill_fields(manifest: dict[str, Any]) -> tuple[str, ...]:
    """What a drill may add to ``manifest`` after the backup (add_drill_records;
    offsite sends such a manifest again): the integrity_check record, and the
    foreign-key fields when the backup left the count to the drill."""
    if manifest.get("foreign_key_check_deferred") is True:
        return ("integrity_check", *FK_FIELDS)
    return ("integrity_check",)


def fk_count_pending(manifest: dict[str, Any] | None) -> bool:
    """The backup left its foreign-key count to the drill, which has not
    recorded it yet: whether restoring it needs --force is not known."""
    return ((manifest or {}).get("foreign_key_check_deferred") is True
            and "foreign_key_violations" not in (manifest or {}))


MANIFEST_MAX_BYTES = 16 << 20  # far above any real manifest (a table name per line)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def manifest_problem(data: Any, level: str = OPTIONAL) -> str | None:
    """Why ``data`` does not match the schema (None: it does).

    Every known field present must have its kind; with ``level`` WRITTEN (or
    NEEDED) the fields of that level (and NEEDED ones) must be present too.
    """
    if not isinstance(data, dict):
        return "not a JSON object"
    wanted = {WRITTEN: (WRITTEN, NEEDED), NEEDED: (NEEDED,)}.get(level, ())
    for key, (kind, field_level) in MANIFEST_SCHEMA.items():
        if key not in data:
            if field_level in wanted:
                return f"it has no {key}"
            continue
        if not kind.test(data[key]):
            return f"{key} is {_shown(data[key])}, not {kind.what}"
    if data.get("format", MANIFEST_FORMAT) > MANIFEST_FORMAT:
        return (f"format {data['format']} is newer than this version of sqlite-ops reads "
                f"({MANIFEST_FORMAT}): upgrade it")
    return None


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None), or (None, why not): "no manifest", or "manifest
    unreadable: ..." for a file that is not a manifest matching the schema.

    Never raises for a hostile file: not a regular file (a FIFO would block),
    too large, not UTF-8, not JSON, nested too deeply, or wrong field types.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "no manifest"
    except OSError as exc:
        return None, f"manifest unreadable: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "manifest unreadable: not a regular file"
        if info.st_size > MANIFEST_MAX_BYTES:
            return None, f"manifest unreadable: larger than {MANIFEST_MAX_BYTES} bytes"
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        return None, f"manifest unreadable: {exc.strerror or exc}"
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return None, "manifest unreadable: nested too deeply"
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        return None, f"manifest unreadable: not JSON ({str(exc).splitlines()[0][:80]})"
    problem = manifest_problem(data)
    if problem is not None:
        return None, f"manifest unreadable: {problem}"
    return data, None


def restore_command(db: str, backup_dir: str, backup: str, *, script: str = "",
                    migrations: str = "", fk_accept: str = "", yes: bool = True,
                    manifest: dict[str, Any] | None = None) -> str:
    """restore_database.sh for ``backup``, ready to paste: it works as printed
    in a shell that reads no config file (or another one). Every path is given
    (absolute), and so are the settings that judge the backup: the
    migrations directory (its schema check) and FK_ACCEPT (as an environment
    assignment: the script has no flag for it); --force when the backup's
    manifest (``manifest``, else read beside it) records foreign-key
    violations beyond those ``fk_accept`` covers."""
    if manifest is None:
        manifest, _ = read_manifest(backup + MANIFEST_SUFFIX)
    words = [script or os.path.join(REPO_ROOT_STR, "scripts", "restore_database.sh"),
             "--db", os.path.abspath(db), "--dir", os.path.abspath(backup_dir)]
    if migrations:
        words += ["--migrations", os.path.abspath(migrations)]
    force = records_fk_problems(manifest, fk_accept)
    words += [*(["--yes"] if yes else []), *(["--force"] if force else []),
              os.path.abspath(backup)]
    line = shell_command(*words)
    return f"FK_ACCEPT={shell_quote(fk_accept)} {line}" if fk_accept else line


def records_fk_problems(manifest: dict[str, Any] | None, fk_accept: str = "") -> bool:
    """The manifest records foreign-key violations (or that the check could not
    run) beyond the orphans ``fk_accept`` (FK_ACCEPT, as the restore will read
    it) covers: restoring it needs --force. Judged now, as the restore judges
    them, not by the FK_ACCEPT of the backup's day. A count left to the drill
    (foreign_key_check_deferred) and not yet recorded says nothing.
    OpsError(EX_USAGE) for a malformed ``fk_accept``."""
    manifest = manifest or {}
    found = manifest.get("foreign_key_violations", 0)
    if found is None:  # the check could not run: a restore needs --force
        return True
    if found == 0:
        return False
    by_table = manifest.get("foreign_key_violations_by_table")
    if by_table is None:  # an older manifest: only its day's verdict is known
        return found != manifest.get("foreign_key_violations_accepted")
    return bool(fkcheck.unaccepted_rows(by_table, fkcheck.parse_accept(fk_accept)))


def from_other_database(manifest: dict[str, Any] | None,
                        source: str | os.PathLike[str]) -> bool:
    """The manifest names a database other than ``source`` (symlinks resolved).
    No manifest, or no ``source`` in it: unknown, not "other"."""
    recorded = (manifest or {}).get("source")
    return isinstance(recorded, str) and (
        os.path.realpath(recorded) != os.path.realpath(os.fspath(source)))


def list_backups(backup_dir: str | os.PathLike[str], name: str | None = None,
                 source: str | os.PathLike[str] | None = None) -> list[Backup]:
    """Backups in ``backup_dir`` (of database ``name`` when given), newest first.

    Two databases can share a name (``/a/app.db`` and ``/b/app.db``, or
    ``app.db`` and ``app.sqlite``), and so a backup directory. With ``source``,
    backups whose manifest says they were taken from another database are left
    out, so one database never restores or prunes the other's. A backup without
    a readable manifest cannot say where it came from: it stays listed (as
    unverified) and is never pruned.
    """
    return [b for b in _scan(backup_dir, name)
            if source is None or not from_other_database(b.manifest, source)]


def foreign_backups(backup_dir: str | os.PathLike[str], name: str,
                    source: str | os.PathLike[str]) -> list[Backup]:
    """Backups named like ``source``'s whose manifest names another database."""
    return [b for b in _scan(backup_dir, name) if from_other_database(b.manifest, source)]


def _scan(backup_dir: str | os.PathLike[str], name: str | None) -> list[Backup]:
    directory = Path(backup_dir)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found: list[Backup] = []
    for entry in entries:
        parsed = parse_backup_name(entry.name)
        if parsed is None or not entry.is_file(follow_symlinks=False):
            continue
        backup_name, created, compression = parsed
        if name is not None and backup_name != name:
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:  # removed meanwhile (a concurrent prune)
            continue
        backup = Backup(
            path=directory / entry.name,
            name=backup_name,
            name_time=created,
            compression=compression,
            size_bytes=size,
        )
        backup.manifest, backup.manifest_error = read_manifest(backup.manifest_path)
        found.append(backup)
    found.sort(key=lambda b: (b.created_at, b.path.name), reverse=True)
    return found


def file_identity(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Device, inode, size, mtime and ctime of a file: another file, or the
    same one rewritten (even with its mtime set back: the ctime cannot be),
    has another identity."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def add_drill_records(backup: str | os.PathLike[str], seen: dict[str, Any],
                      identity: tuple[int, ...], records: dict[str, Any]) -> str | None:
    """Add what a drill established after the backup to its manifest: the
    ``integrity_check`` record of the check it ran, and the foreign-key count
    when the backup left that to it and no drill recorded it yet,
    atomically (temp, fsync, rename, fsync the directory); only when the
    backup file is still the one checked (``identity``) and its manifest still
    ``seen``, and the record is of the manifest's ``db_sha256``. None when
    written, else why not. The caller holds the database's lock."""
    allowed = drill_fields(seen) if fk_count_pending(seen) else ("integrity_check",)
    if not set(records) <= set(allowed):
        raise ValueError(f"a drill records only {', '.join(allowed)} here")
    path = Path(backup)
    try:
        if file_identity(path) != identity:
            return f"{path.name} was replaced since the drill verified it"
    except FileNotFoundError:
        return f"{path.name} was removed since the drill verified it"
    manifest_path = path.with_name(path.name + MANIFEST_SUFFIX)
    current, why = read_manifest(manifest_path)
    if current is None or current != seen:
        return f"its manifest changed since the drill read it ({why or 'other content'})"
    if records.get("integrity_check", {}).get("db_sha256") != current.get("db_sha256"):
        return "the check was of other content than the manifest names"
    updated = {**current, **records}
    problem = manifest_problem(updated)
    if problem is not None:
        return f"internal error: the record does not match the manifest schema: {problem}"
    write_json_atomic(manifest_path, updated)
    return None


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write JSON to a temp file beside ``path``, fsync, rename, fsync the directory."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


# ---------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------

@dataclass
class PrunePlan:
    """What retention would remove, and why the rest stays."""

    prune: list[Backup]
    keep: list[Backup]
    reason: str  # one line, for the log


def plan_prune(
    backups: list[Backup],
    now: float,
    retention_days: int,
    keep_min: int,
    assume_new_verified: bool = False,
    pending: frozenset[str] = frozenset(),
) -> PrunePlan:
    """Which of ``backups`` (one database's, from ``list_backups``) may be pruned.

    The rules (the contract's):
      * age comes from the backup's time (``Backup.created_at``: its manifest's
        created_at), never from mtime, and never from a name alone;
      * the newest ``keep_min`` verified backups are never pruned;
      * when the newest verified backup is older than ``retention_days``
        (backups have been failing), nothing is pruned;
      * otherwise a backup older than ``retention_days`` is pruned, if it has a
        manifest (a file without one cannot be proven ours);
      * a backup dated more than an hour in the future is never pruned and does
        not count as a verified backup for the two rules above.

    ``assume_new_verified`` counts one more verified backup taken ``now``
    (what a run would have published: used by ``--dry-run``). ``pending``: file
    names of backups still waiting for their offsite copy (``offsite.pending_backups``),
    never pruned.
    """
    ordered = sorted(backups, key=lambda b: (b.created_at, b.path.name), reverse=True)
    cutoff = now - retention_days * DAY
    # A backup dated in the future (a clock was wrong) is never pruned, but it
    # must not vouch for freshness nor take a KEEP_MIN place either.
    verified = [b for b in ordered if b.usable(now)]
    newest_verified = now if assume_new_verified else (
        verified[0].created_at if verified else None)
    if newest_verified is None:
        return PrunePlan([], ordered, "no verified backup: keeping everything")
    if newest_verified < cutoff:
        return PrunePlan([], ordered, f"the newest verified backup is older than "
                                      f"{retention_days} days: keeping everything")
    protected_count = max(keep_min - (1 if assume_new_verified else 0), 0)
    protected = {id(b) for b in verified[:protected_count]}
    # A file without a manifest cannot be proven ours: never pruned.
    old = [b for b in ordered
           if id(b) not in protected and b.created_at < cutoff and b.manifest is not None]
    prune = [b for b in old if b.path.name not in pending]
    pruned = {id(b) for b in prune}  # (not `b in prune`: that compares manifests, n² times)
    keep = [b for b in ordered if id(b) not in pruned]
    waiting = len(old) - len(prune)
    return PrunePlan(prune, keep, f"{len(prune)} older than {retention_days} days "
                                  f"beyond the newest {keep_min} verified"
                                  + (f"; {waiting} kept until their offsite copy is verified"
                                     if waiting else ""))


def orphan_manifests(backup_dir: str | os.PathLike[str], name: str, before: float,
                     source: str | os.PathLike[str] | None = None) -> list[Path]:
    """Manifests of this database whose backup file is gone, named older than ``before``
    (with ``source``: only those whose manifest names that database)."""
    directory = Path(backup_dir)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if not entry.name.endswith(MANIFEST_SUFFIX):
            continue
        parsed = parse_backup_name(entry.name[: -len(MANIFEST_SUFFIX)])
        if parsed is None or parsed[0] != name or not entry.is_file(follow_symlinks=False):
            continue
        if os.path.lexists(directory / entry.name[: -len(MANIFEST_SUFFIX)]):
            continue
        manifest = read_manifest(entry.path)[0]
        recorded = parse_iso_utc((manifest or {}).get("created_at"))
        if (parsed[1] if recorded is None else recorded) >= before:
            continue
        if source is not None and from_other_database(manifest, source):
            continue
        found.append(directory / entry.name)
    return sorted(found)


def remove_backup(backup: Backup) -> None:
    """Remove a backup file, then its manifest (a crash in between leaves an orphan
    manifest, which the next prune removes)."""
    backup.path.unlink(missing_ok=True)
    backup.manifest_path.unlink(missing_ok=True)




# ---------------------------------------------------------------------------
# CLI (used by backup_database.sh): prune, stats
# ---------------------------------------------------------------------------


def prune(backup_dir: str | os.PathLike[str], source: str, retention_days: int, keep_min: int,
          *, dry_run: bool = False, remotes: list[str] | None = None, host: str = "",
          offsite_retention_days: int = 30, offsite_keep: int = 7) -> list[str]:
    """Apply (with ``dry_run``: show) retention to the backups of database
    ``source`` in ``backup_dir``; one line per file pruned, then the reason.
    With ``remotes`` (OFFSITE_REMOTES), backups not yet on every remote stay."""
    now, name = time.time(), db_name(source)
    backups = list_backups(backup_dir, name, source)
    pending: frozenset[str] = frozenset()
    if remotes:  # OFFSITE_REMOTES is set: keep what has not reached every remote
        from sqlite_ops import offsite  # lazily: it imports this module

        waiting = offsite.pending_backups(backup_dir, name, source, remotes,
                                          host or offsite.short_host_name(),
                                          offsite_retention_days, offsite_keep, now)
        pending = frozenset(b.path.name for found in waiting.values() for b in found)
    plan = plan_prune(backups, now, retention_days, keep_min,
                      assume_new_verified=dry_run, pending=pending)
    orphans = orphan_manifests(backup_dir, name, now - retention_days * DAY, source)
    verb = "Would prune" if dry_run else "Pruned"
    lines = []
    for backup in plan.prune:
        if not dry_run:
            remove_backup(backup)
        lines.append(f"{verb}: {backup.path}")
    for orphan in orphans:
        if not dry_run:
            orphan.unlink(missing_ok=True)
        lines.append(f"{verb}: {orphan} (a manifest without its backup)")
    if not dry_run and (plan.prune or orphans):
        fsync_path(backup_dir)
    lines.append(f"Retention: {plan.reason}")
    return lines


def backup_stats(backup_dir: str | os.PathLike[str], source: str) -> dict[str, float]:
    """The numbers of the backup metrics for database ``source``'s backups."""
    now = time.time()
    backups = list_backups(backup_dir, db_name(source), source)
    verified = [b for b in backups if b.usable(now)]
    newest = verified[0] if verified else None
    return {"count": len(backups), "verified_count": len(verified),
            "oldest_age_seconds": max(now - backups[-1].created_at, 0.0) if backups else 0,
            "newest_verified_created": newest.created_at if newest else 0,
            "newest_verified_size_bytes": newest.size_bytes if newest else 0}


def _cli_prune(args: Any) -> int:
    """Apply (or with --dry-run, show) retention; one result line per file on stdout."""
    for line in prune(args.dir, args.source, args.retention_days, args.keep,
                      dry_run=args.dry_run, remotes=args.remote, host=args.host,
                      offsite_retention_days=args.offsite_retention_days,
                      offsite_keep=args.offsite_keep):
        print(line)
    return 0


def _cli_stats(args: Any) -> int:
    """``key value`` lines for the backup metrics."""
    stats = backup_stats(args.dir, args.source)
    for key in ("count", "verified_count"):
        print(f"{key} {stats[key]}")
    print(f"oldest_age_seconds {stats['oldest_age_seconds']:.0f}")
    print(f"newest_verified_created {stats['newest_verified_created']:.0f}")
    print(f"newest_verified_size_bytes {stats['newest_verified_size_bytes']}")
    return 0


def _cli_field(args: Any) -> int:
    """One field of a manifest, as JSON (``--default`` when absent); exit 3 with
    one line when the manifest is missing or fails the schema."""
    manifest, why = read_manifest(args.manifest)
    if manifest is None:
        print(f"{args.manifest}: {why}", file=sys.stderr)
        return 3
    if args.key not in manifest and args.default is None:
        print(f"{args.manifest}: no {args.key}", file=sys.stderr)
        return 3
    print(json.dumps(manifest[args.key] if args.key in manifest else json.loads(args.default)))
    return 0


def _cli_name(args: Any) -> int:
    # The trailing "/" keeps a name ending in a newline intact through $(...).
    sys.stdout.write(db_name(args.db) + "/\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m sqlite_ops.catalog")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="apply the retention rules to one database's backups")
    # No name argument: it is the source's (db_name), and a value of exactly
    # "--" would not survive argparse.
    p.add_argument("dir")
    p.add_argument("--retention-days", type=int, required=True)
    p.add_argument("--keep", type=int, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--source", required=True, help="the database: other databases' are left alone")
    p.add_argument("--remote", action="append", default=[],
                   help="an offsite remote (OFFSITE_REMOTES): backups pending upload stay")
    p.add_argument("--host", default="", help="OFFSITE_HOST")
    p.add_argument("--offsite-retention-days", type=int, default=30)
    p.add_argument("--offsite-keep", type=int, default=7)
    p.set_defaults(func=_cli_prune)
    p = sub.add_parser("name", help="the name this database's backups carry")
    p.add_argument("db")
    p.set_defaults(func=_cli_name)
    p = sub.add_parser("field", help="one field of a manifest (checked against the schema)")
    p.add_argument("manifest")
    p.add_argument("key")
    p.add_argument("--default", help="JSON printed when the manifest lacks the field")
    p.set_defaults(func=_cli_field)
    p = sub.add_parser("stats", help="numbers for the backup metrics")
    p.add_argument("dir")
    p.add_argument("--source", required=True, help="the database")
    p.set_defaults(func=_cli_stats)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
