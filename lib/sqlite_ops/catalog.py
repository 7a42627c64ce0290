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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
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
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))

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


def list_backups(backup_dir: str | os.PathLike[str], name: str | None = None) -> list[Backup]:
    """Backups in ``backup_dir`` (of database ``name`` when given), newest first."""
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
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
