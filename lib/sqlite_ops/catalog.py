"""The backup catalog: which files in a backup directory are backups, and what they hold.

A backup is ``<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz]`` (``<name>`` is the database
file name without its extension, the time is UTC) with a sidecar
``<same>.manifest.json``. Anything else in the directory is not ours: it is
never listed as a backup and never pruned.

Used by backup (pruning), restore (listing, picking ``latest``) and metrics
(backup freshness).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_ops.common import fsync_path

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1  # the manifest's "format" field; bump on incompatible changes
EXTENSIONS = {"": "none", ".zst": "zstd", ".gz": "gzip"}
SUFFIX_FOR = {"none": "", "zstd": ".zst", "gzip": ".gz"}

_NAME_RE = re.compile(r"^(?P<name>.+)_(?P<stamp>\d{8}_\d{6})\.db(?P<ext>\.zst|\.gz)?$")


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


@dataclass
class Backup:
    """One backup file and, when present and readable, its manifest."""

    path: Path
    name: str
    created_at: float  # from the file name (UTC), never from mtime
    compression: str
    size_bytes: int
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None
    _checksum_ok: bool | None = field(default=None, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)

    @property
    def created_iso(self) -> str:
        return iso_utc(self.created_at)

    @property
    def verified(self) -> bool:
        """The manifest exists, says verified, and matches the file's size.

        Cheap (no reading of the file); ``checksum_ok()`` reads it.
        """
        m = self.manifest
        return bool(m and m.get("verified") is True and m.get("size_bytes") == self.size_bytes)

    def checksum_ok(self) -> bool:
        """The published file's SHA-256 equals the manifest's."""
        if self._checksum_ok is None:
            expected = (self.manifest or {}).get("sha256")
            self._checksum_ok = bool(expected) and sha256_file(self.path) == expected
        return self._checksum_ok


def parse_backup_name(file_name: str) -> tuple[str, float, str] | None:
    """(name, created_at epoch, compression) for one of our file names, else None."""
    match = _NAME_RE.match(file_name)
    if not match:
        return None
    try:
        created = calendar.timegm(time.strptime(match["stamp"], "%Y%m%d_%H%M%S"))
    except ValueError:
        return None
    return match["name"], float(created), EXTENSIONS[match["ext"] or ""]


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) or (None, why it could not be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None, "no manifest"
    except (OSError, ValueError) as exc:
        return None, f"unreadable manifest: {exc}"
    if not isinstance(data, dict):
        return None, "manifest is not a JSON object"
    return data, None


def records_fk_problems(manifest: dict[str, Any] | None) -> bool:
    """The manifest says the database had foreign-key violations (or that the
    check could not run) when the backup was taken: restoring it needs --force."""
    return (manifest or {}).get("foreign_key_violations", 0) != 0


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
        backup = Backup(
            path=directory / entry.name,
            name=backup_name,
            created_at=created,
            compression=compression,
            size_bytes=entry.stat(follow_symlinks=False).st_size,
        )
        backup.manifest, backup.manifest_error = read_manifest(backup.manifest_path)
        found.append(backup)
    found.sort(key=lambda b: (b.created_at, b.path.name), reverse=True)
    return found


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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

DAY = 86400
FUTURE_SKEW = 3600  # seconds a backup's name may be ahead of this clock


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
) -> PrunePlan:
    """Which of ``backups`` (one database's, from ``list_backups``) may be pruned.

    The rules (the contract's):
      * age comes from the time in the file name, never from mtime;
      * the newest ``keep_min`` verified backups are never pruned;
      * when the newest verified backup is older than ``retention_days``
        (backups have been failing), nothing is pruned;
      * otherwise a backup older than ``retention_days`` is pruned, if it has a
        manifest (a file without one cannot be proven ours);
      * a backup named more than an hour in the future is never pruned and does
        not count as a verified backup for the two rules above.

    ``assume_new_verified`` counts one more verified backup taken ``now``
    (what a run would have published: used by ``--dry-run``).
    """
    ordered = sorted(backups, key=lambda b: (b.created_at, b.path.name), reverse=True)
    cutoff = now - retention_days * DAY
    # A backup dated in the future (a clock was wrong) is never pruned, but it
    # must not vouch for freshness nor take a KEEP_MIN place either.
    verified = [b for b in ordered if b.verified and b.created_at <= now + FUTURE_SKEW]
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
    prune = [b for b in ordered
             if id(b) not in protected and b.created_at < cutoff and b.manifest is not None]
    keep = [b for b in ordered if b not in prune]
    return PrunePlan(prune, keep, f"{len(prune)} older than {retention_days} days "
                                  f"beyond the newest {keep_min} verified")


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
        if parsed is None or parsed[0] != name or parsed[1] >= before:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        if (directory / entry.name[: -len(MANIFEST_SUFFIX)]).exists():
            continue
        if source is not None and from_other_database(read_manifest(entry.path)[0], source):
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


def _cli_prune(args: Any) -> int:
    """Apply (or with --dry-run, show) retention; one result line per file on stdout."""
    now = time.time()
    backups = list_backups(args.dir, args.name, args.source)
    plan = plan_prune(backups, now, args.retention_days, args.keep,
                      assume_new_verified=args.dry_run)
    orphans = orphan_manifests(args.dir, args.name, now - args.retention_days * DAY,
                               args.source)
    verb = "Would prune" if args.dry_run else "Pruned"
    for backup in plan.prune:
        if not args.dry_run:
            remove_backup(backup)
        print(f"{verb}: {backup.path}")
    for orphan in orphans:
        if not args.dry_run:
            orphan.unlink(missing_ok=True)
        print(f"{verb}: {orphan} (a manifest without its backup)")
    if not args.dry_run and (plan.prune or orphans):
        fsync_path(args.dir)
    print(f"Retention: {plan.reason}")
    return 0


def _cli_stats(args: Any) -> int:
    """``key value`` lines for the backup metrics."""
    now = time.time()
    backups = list_backups(args.dir, args.name, args.source)
    verified = [b for b in backups if b.verified]
    newest = verified[0] if verified else None
    print(f"count {len(backups)}")
    print(f"verified_count {len(verified)}")
    print(f"oldest_age_seconds {max(now - backups[-1].created_at, 0.0) if backups else 0:.0f}")
    print(f"newest_verified_created {newest.created_at if newest else 0:.0f}")
    print(f"newest_verified_size_bytes {newest.size_bytes if newest else 0}")
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
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument("--retention-days", type=int, required=True)
    p.add_argument("--keep", type=int, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--source", required=True, help="the database: other databases' are left alone")
    p.set_defaults(func=_cli_prune)
    p = sub.add_parser("name", help="the name this database's backups carry")
    p.add_argument("db")
    p.set_defaults(func=_cli_name)
    p = sub.add_parser("stats", help="numbers for the backup metrics")
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument("--source", required=True, help="the database")
    p.set_defaults(func=_cli_stats)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
