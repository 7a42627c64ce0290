"""What every sqlite-ops Python command shares: exit codes, configuration, the lock.

The bash scripts get the same things from ``lib/common.sh``; the two halves agree
on the contract: the same configuration keys and precedence, the same exit codes,
and the same lock file beside the database, so a migration never overlaps a
backup, a restore or a maintenance run.

Kept import-light on purpose: ``migrate up`` runs on every deploy and its no-op
must cost little more than starting Python.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlite_ops.start import on_stop_signals

if TYPE_CHECKING:
    import sqlite3  # imported where a connection is made: start-up stays small

# Exit codes from the contract.
EX_OK = 0
EX_FAIL = 1
EX_USAGE = 2
EX_VERIFY = 3
EX_INTEGRITY = 4
EX_BUSY = 75

# The checkout (or install) root, as a string; ``REPO_ROOT`` (a pathlib.Path) is
# computed on first use so that importing this module does not import pathlib.
REPO_ROOT_STR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def __getattr__(name: str) -> object:
    if name == "REPO_ROOT":
        from pathlib import Path

        return Path(REPO_ROOT_STR)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SYSTEM_CONFIG = "/etc/sqlite-ops.conf"

# Every setting a config file may hold (SOPS_CONFIG_KEYS in lib/common.sh is the
# same list; a test keeps them equal). Anything else is a typo, reported.
CONFIG_KEYS = (
    "DB_PATH", "BACKUP_DIR", "RETENTION_DAYS", "KEEP_MIN", "COMPRESS", "MIGRATIONS_DIR",
    "METRICS_DIR", "LOCK_TIMEOUT", "VACUUM_THRESHOLD", "ANALYSIS_LIMIT", "METRICS_LISTEN",
    "LOG_SYSLOG", "SQLITE_BUSY_TIMEOUT_MS", "OFFSITE_REMOTES", "OFFSITE_RETENTION_DAYS",
    "OFFSITE_KEEP_MIN", "OFFSITE_HOST", "RCLONE_CONFIG", "FK_ACCEPT", "INTEGRITY_CHECK",
)

# The contract's defaults: every setting's, but those below that follow another
# one (SOPS_DEFAULTS in lib/common.sh holds the same values; a test keeps them
# equal). An empty value is "unset": off, none, or the tool's own default.
SOPS_DEFAULTS = {
    "DB_PATH": "/dashboard/data/dashboard.db",
    "BACKUP_DIR": "/dashboard/data/backups",
    "RETENTION_DAYS": "30",
    "KEEP_MIN": "7",
    "MIGRATIONS_DIR": os.path.join(REPO_ROOT_STR, "migrations"),
    "METRICS_DIR": "",
    "LOCK_TIMEOUT": "0",
    "VACUUM_THRESHOLD": "0.25",
    "ANALYSIS_LIMIT": "1000",
    "METRICS_LISTEN": "127.0.0.1:9560",
    "LOG_SYSLOG": "0",
    "SQLITE_BUSY_TIMEOUT_MS": "5000",
    "OFFSITE_REMOTES": "",
    "OFFSITE_HOST": "",  # the short host name
    "RCLONE_CONFIG": "",
    "FK_ACCEPT": "",
    "INTEGRITY_CHECK": "backup",
}
# Settings whose default is another setting's value: remote retention follows
# the local one.
SOPS_DEFAULT_FROM = {"OFFSITE_RETENTION_DAYS": "RETENTION_DAYS", "OFFSITE_KEEP_MIN": "KEEP_MIN"}


def default_compression() -> str:
    """COMPRESS's default: zstd when it is installed, else gzip."""
    import shutil

    return "zstd" if shutil.which("zstd") else "gzip"


# Set once a config file's unknown settings have been reported (common.sh too).
CONFIG_WARNED_ENV = "SQLITE_OPS_CONFIG_WARNED"

# Environment variable through which a parent run tells a child run that it
# already holds the lock (``migrate up`` runs ``backup_database.sh``).
LOCK_HELD_ENV = "SQLITE_OPS_LOCK_HELD"


class OpsError(Exception):
    """An expected failure: one line for the user and a contract exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_config_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read shell-style ``KEY=value`` lines as data; never executes anything.

    Blank lines and ``#`` comments are skipped, an optional ``export`` is
    ignored, and one layer of matching single or double quotes is removed.
    """
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise OpsError(EX_USAGE, f"cannot read config file {path}: {exc.strerror}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise OpsError(EX_USAGE, f"config file {path} line {number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


class Settings:
    """Configuration with the contract's precedence: flag > environment > file > default."""

    def __init__(self, flags: dict[str, str | None], config_path: str | None = None,
                 prog: str = "sqlite-ops") -> None:
        self._flags = {k: v for k, v in flags.items() if v is not None}
        path = config_path or os.environ.get("SQLITE_OPS_CONFIG")
        if path:
            self._file = parse_config_file(path)
            # Child runs (migrate's backup) read the same file, not a stale one.
            os.environ["SQLITE_OPS_CONFIG"] = path
        elif os.path.exists(SYSTEM_CONFIG):
            path = SYSTEM_CONFIG
            self._file = parse_config_file(SYSTEM_CONFIG)
        else:
            self._file = {}
        # Once per file: a child run (migrate's backup) reads it again.
        if path and os.environ.get(CONFIG_WARNED_ENV) != path:
            for key in self._file:
                if key not in CONFIG_KEYS:
                    print(f"{prog}: warning: config file {path}: unknown setting {key}, "
                          f"ignored (known: {' '.join(CONFIG_KEYS)})", file=sys.stderr)
            os.environ[CONFIG_WARNED_ENV] = path

    def get(self, key: str) -> str:
        if key in self._flags:
            return self._flags[key]
        env = os.environ.get(key)
        if env:
            return env
        if key in self._file:
            return self._file[key]
        if key in SOPS_DEFAULT_FROM:
            return self.get(SOPS_DEFAULT_FROM[key])
        if key == "COMPRESS":
            return default_compression()
        return SOPS_DEFAULTS.get(key, "")

    def get_int(self, key: str) -> int:
        """A count or a number of seconds: digits only, as lib/common.sh's require_uint."""
        value = self.get(key)
        if not (value.isascii() and value.isdigit()):
            raise OpsError(EX_USAGE, f"{key} must be a whole number, not {value!r}")
        return int(value)


def lock_path_for(db_path: str | os.PathLike[str]) -> str:
    """The one lock file every sqlite-ops run on this database takes."""
    # Symlinks resolved: every path to one database finds the same lock.
    return os.path.realpath(os.fspath(db_path)) + ".sqlite-ops.lock"


class OpsLock:
    """An exclusive ``flock`` on the database's lock file (the same one ``flock(1)`` takes).

    ``timeout`` seconds to wait; 0 fails at once. A run whose parent already holds
    the lock (``SQLITE_OPS_LOCK_HELD``) does not take it again.
    """

    def __init__(
        self, db_path: str | os.PathLike[str], timeout: float = 0, what: str = "run"
    ) -> None:
        self.path = lock_path_for(db_path)
        self.db_path = os.fspath(db_path)
        self.timeout = timeout
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> OpsLock:
        if os.environ.get(LOCK_HELD_ENV) == self.path:
            return self
        fd = open_lock_file(self.path, self.db_path)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise OpsError(
                        EX_BUSY,
                        f"another sqlite-ops run holds the lock on {self.db_path}{holder}; "
                        "retry later or set LOCK_TIMEOUT to wait",
                    ) from None
                time.sleep(0.05)
        try:  # who holds it, for the next run's message: on a full disk, only that is lost
            os.ftruncate(fd, 0)  # the file checked above, by descriptor: no name is followed
            os.write(fd, f"{os.getpid()} {self.what} {_pid_namespace()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        os.environ[LOCK_HELD_ENV] = self.path
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.environ.pop(LOCK_HELD_ENV, None)
            os.close(self._fd)
            self._fd = None


def open_lock_file(path: str, db_path: str) -> int:
    """Open (creating it if need be) the lock file ``path``, never through a link.

    Anyone who can write to the database's directory can plant a symlink or a
    hard link there, so: ``O_NOFOLLOW`` (a symlink is refused, never followed
    or created through), ``O_NONBLOCK`` (a planted FIFO cannot hang the open),
    and what was opened must be a regular file with one link, owned by us or
    by the database's owner. Anything else is exit 2 naming the path; nothing
    is written. ``lock_acquire`` in lib/common.sh applies the same rules.
    """
    refuse = f"refusing to use lock file {path}: "
    advice = "; remove it and retry; nothing was changed"
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise OpsError(EX_USAGE, refuse + "it is a symbolic link (a link planted there "
                                     "would make this run overwrite its target)" + advice) from None
        if os.path.lexists(path) and not os.path.isfile(path):
            raise OpsError(EX_USAGE, refuse + "not a regular file" + advice) from None
        raise OpsError(EX_FAIL, f"cannot create lock file {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    owners = {os.geteuid()}
    try:
        owners.add(os.stat(db_path).st_uid)
    except OSError:
        pass
    problem = ""
    if not stat.S_ISREG(st.st_mode):
        problem = "not a regular file"
    elif st.st_nlink != 1:
        problem = f"it has {st.st_nlink} hard links (a link planted there would make this run " \
                  "overwrite another file)"
    elif st.st_uid not in owners:
        problem = f"owned by uid {st.st_uid}, neither this user nor the database's owner"
    if problem:
        os.close(fd)
        raise OpsError(EX_USAGE, refuse + problem + advice)
    return fd


def holders(paths: list[str], include_self: bool = False,
            ) -> tuple[list[tuple[int, str]], bool]:
    """(pid, command) of other processes (and, with ``include_self``, this one)
    with any of ``paths`` open, and whether every process could be inspected
    (only root sees other users' descriptors).

    The one ``/proc/*/fd`` scan: a restore names the processes it would
    replace a file under, db_metrics counts them (sqlite_open_processes). A
    descriptor is matched by the file it is open on (device and inode), not
    only by its path: an application that opened the same file through a bind
    mount or a container's volume (the same name in another directory) holds
    it as much as one that used ``paths``."""
    wanted = {os.path.realpath(p) for p in paths}
    wanted_files = {found for p in paths if (found := file_key(p)) is not None}
    # Only a descriptor whose path ends in one of the names is stat()ed: a
    # stat reaches the file system, and one of a stopped FUSE daemon or a dead
    # NFS server would hang the scan. (A mount shows the same file under the
    # same name in another directory.)
    names = {os.path.basename(p) for p in wanted}
    me, found, complete = _self_pid(), [], True  # /proc's number for this process
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return [], False
    for pid in pids:
        if pid == me and not include_self:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            complete = False
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in wanted or (os.path.basename(target) in names and wanted_files
                                    and file_key(f"/proc/{pid}/fd/{fd}") in wanted_files):
                found.append((pid, _command_of(pid)))
                break
    return found, complete


def file_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (following links), or None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
        text = " ".join(w.decode(errors="replace") for w in words if w)
    except OSError:
        text = ""
    return (text[:80] + "...") if len(text) > 80 else (text or "?")


def dir_problem(path: str | os.PathLike[str]) -> str:
    """Why files in directory ``path`` could be planted or swapped by someone
    else ("writable by other users (mode 777)", "owned by ..."), or "".
    Root-owned directories are trusted. ``dir_problem`` in lib/common.sh
    applies the same rule."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"writable by other users (mode {mode:o})"
    if st.st_uid not in (os.geteuid(), 0):
        return f"owned by {_user(st.st_uid)}, not by this user ({_user(os.geteuid())})"
    return ""


def _user(uid: int) -> str:
    """A user's name ("uid N" when it has none), as ``id -nu`` says it."""
    import pwd  # lazily: the migrate no-op does not need it

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def require_regular_file(path: str | os.PathLike[str]) -> None:
    """Exit 2 "not a regular file: PATH" for a FIFO, a directory, a device...

    Called first by every command given a database path, before anything is
    opened or created: a FIFO would hang the first open, a directory would
    fail half-way. A symlink to a regular file is fine, and so is a path that
    does not exist (each caller says what a missing database means to it).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OpsError(EX_USAGE, f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise OpsError(EX_USAGE, f"not a regular file: {os.fspath(path)}")



# After "not an SQLite database: PATH": exit 2 reads as a mistyped command,
# but a database whose page 1 was overwritten looks the same.
NOT_SQLITE_HINT = (" (a wrong --db, or the database's first page is destroyed: if it held "
                   "the data, see the incident runbook)")


def require_database(path: str | os.PathLike[str]) -> None:
    """Exit 2 unless ``path`` is a readable SQLite database file: missing,
    not a regular file, unreadable and not SQLite each say so."""
    path = os.fspath(path)
    require_regular_file(path)
    if not os.path.exists(path):
        raise OpsError(EX_USAGE, f"database not found: {path} (set --db or DB_PATH)")
    if not os.access(path, os.R_OK):
        raise OpsError(EX_USAGE, f"cannot read {path}: permission denied")
    if not is_sqlite_file(path):
        raise OpsError(EX_USAGE, f"not an SQLite database: {path}{NOT_SQLITE_HINT}")

def short_host_name() -> str:
    """This machine's host name up to the first dot (OFFSITE_HOST's default)."""
    import socket  # lazily: the migrate no-op does not need it

    return socket.gethostname().split(".", 1)[0]


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier: table names may hold spaces and quotes."""
    return '"' + name.replace('"', '""') + '"'


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """A ``file:`` URI opening ``path`` read-only (see :func:`file_uri`)."""
    return file_uri(path, "ro")


def file_uri(path: str | os.PathLike[str], mode: str) -> str:
    """A ``file:`` URI opening ``path`` with ``mode`` (``ro``, or ``rw``: never
    created), every special character (space, quote, ``?``, ``#``, ``%``,
    newline) percent-encoded."""
    from urllib.parse import quote  # lazily: the migrate no-op does not need it

    return "file:" + quote(os.path.abspath(os.fspath(path)), safe="/") + f"?mode={mode}"


# SQLite's lock bytes in the database file (os_unix.c): a writer holds a lock
# on RESERVED (and PENDING on its way to EXCLUSIVE) from its first write to its
# commit, so while any process holds either, a -journal beside the file is
# that live writer's, not a killed one's. In WAL mode the writer holds the
# WAL write lock in the -shm file instead.
PENDING_BYTE = 0x40000000
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_SIZE = 510  # the readers' bytes, after RESERVED
WAL_WRITE_LOCK_BYTE = 120


def _listed_locks(inode: int) -> list[tuple[int, str, int, int | None]] | None:
    """The POSIX and OFD locks /proc/locks lists on the file ``inode``:
    (pid, "READ" or "WRITE", first byte, last byte or None for EOF). None
    when /proc/locks cannot be read. Only this PID namespace's processes are
    listed. Matched by inode number alone: btrfs and overlayfs report another
    device number in stat() than /proc/locks prints."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:  # "1: POSIX  ADVISORY  WRITE 1958 fe:00:2146320 1073741825 1073741825"
        fields = line.split()
        if len(fields) < 8 or fields[1] not in ("POSIX", "OFDLCK"):
            continue  # "->" marks a process waiting for the lock, not holding it
        try:
            if int(fields[5].rsplit(":", 1)[1]) != inode:
                continue
            found.append((int(fields[4]), fields[3], int(fields[6]),
                          None if fields[7] == "EOF" else int(fields[7])))
        except (ValueError, IndexError):
            continue
    return found


def _self_pid() -> int:
    """This process's PID as /proc (and so /proc/locks) numbers it, which is
    not os.getpid() where /proc belongs to another PID namespace."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


# A lock span asked about: (first byte, length (0: to the end), write locks only).
Span = tuple[int, int, bool]


def _overlaps(lock: tuple[int, str, int, int | None], span: Span) -> bool:
    offset, length, write_only = span
    if write_only and lock[1] != "WRITE":
        return False
    return ((length == 0 or lock[2] <= offset + length - 1)
            and (lock[3] is None or lock[3] >= offset))


# Every lock byte SQLite takes in a database file: PENDING, RESERVED, SHARED.
SQLITE_LOCK_BYTES: list[Span] = [(PENDING_BYTE, 2 + SHARED_SIZE, False)]

# Descriptors that must never be closed (see locks_held).
_KEPT_OPEN: list[int] = []


def locks_held(path: str, spans: list[Span]) -> bool | None:
    """Whether another process holds a lock on any of ``spans`` of ``path``
    (with a span's write_only, a write lock): first from /proc/locks, then
    asked of the kernel with F_GETLK, which answers for every process in any
    PID namespace (a sidecar container's application; /proc/locks lists only
    this namespace's). It only asks; it never takes a lock.

    Asking means opening the file, and closing that descriptor drops every
    POSIX lock this process holds on it (SQLite's own connections' too). So
    where /proc/locks shows this process holding one, or cannot be read (this
    process's locks unknown), it is not asked. None whenever the answer is not
    known for every process (not asked, the open or F_GETLK refused, the file
    replaced meanwhile, no regular file); False only when the kernel said no
    or the file is gone. No other thread of
    this process may open the file meanwhile (the callers: one operation, or
    the metrics server's one reader at a time)."""
    import struct

    try:
        before = os.stat(path)
    except FileNotFoundError:
        return False  # nobody holds a lock on a file that is not there
    except OSError:
        return None
    listed = _listed_locks(before.st_ino) if stat.S_ISREG(before.st_mode) else None
    if listed is None:
        return None
    me = _self_pid()
    if any(lock[0] != me and _overlaps(lock, span) for lock in listed for span in spans):
        return True
    if any(lock[0] == me for lock in listed):
        return None  # asking could drop this process's locks: this namespace's answer only
    try:
        # (a symlink is followed, as SQLite follows it; a FIFO swapped in
        # must not block the open)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            _KEPT_OPEN.append(fd)  # replaced meanwhile: this process may hold locks on it
            fd = -1
            return None
        # struct flock on Linux: short l_type, short l_whence, off_t l_start,
        # off_t l_len, pid_t l_pid (+ padding).
        for offset, length, write_only in spans:
            kind = fcntl.F_RDLCK if write_only else fcntl.F_WRLCK  # what would clash with it
            query = struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, length, 0)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
            if struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK:
                return True
        return False
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def sqlite_locks_held(db: str) -> bool | None:
    """Whether another process, in any PID namespace, holds one of SQLite's
    locks on ``db``: any of its lock bytes (a transaction under way), or any
    byte of its -shm file, which a WAL-mode connection holds for as long as it
    is open. What the /proc scan (:func:`holders`) cannot see: a process in
    another PID namespace, or another user's when this one is not root. An
    idle connection to a rollback-journal database holds no lock, and only
    that scan finds it."""
    answers = (locks_held(db, SQLITE_LOCK_BYTES), locks_held(db + "-shm", [(0, 0, False)]))
    if any(answers):
        return True
    return None if None in answers else False


def writer_lock_held(db: str) -> bool | None:
    """Whether any other process holds a lock on ``db``'s RESERVED byte, or a
    write lock on its PENDING byte (a live writer mid-transaction, or a
    process rolling the journal back; a reader takes PENDING only as a read
    lock, for a moment), in any PID namespace (:func:`locks_held`). None when
    it cannot be told.

    /proc/locks matches by inode number alone: another file with the same
    inode number holding SQLite's lock bytes at the same moment only makes
    this answer "held" (the caller then leaves the journal to SQLite)."""
    return locks_held(db, [(RESERVED_BYTE, 1, False), (PENDING_BYTE, 1, True)])


HOT_JOURNAL_ROLLED_BACK = ("rolled back the hot journal of {db} (a writer was killed "
                           "mid-transaction; its uncommitted changes were discarded, as SQLite "
                           "does)")


def _journal_identity(journal: str) -> tuple[int, bytes] | None:
    """(inode, the first 28 bytes: the header with its random nonce) of a
    journal SQLite would call hot by its content, or None: there is none, it
    is empty (TRUNCATE mode's leftover) or its header is zeroed (PERSIST mode's)."""
    try:
        with open(journal, "rb") as file:
            header = file.read(28)
            inode = os.fstat(file.fileno()).st_ino
    except OSError:
        return None
    return (inode, header) if header[:1] not in (b"", b"\0") else None


def hot_journal(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a hot rollback journal: one a writer killed
    mid-transaction left (SQLite's own test: a journal with a header and no
    process holding the database's RESERVED lock). A live writer's journal is
    not hot: it is checked before and after the locks are read, so a writer
    that committed in between and began again is not taken for a killed one.
    Where /proc/locks cannot be read, a journal with a header counts as hot,
    and SQLite's own test decides at the read-write open."""
    db = os.path.abspath(os.fspath(path))
    seen = _journal_identity(db + "-journal")
    if seen is None or writer_lock_held(db):
        return False
    return _journal_identity(db + "-journal") == seen


def roll_back_hot_journal(path: str | os.PathLike[str], busy_timeout_ms: int = 5000) -> bool:
    """Roll back the hot ``-journal`` a writer killed mid-transaction left.

    A rollback-journal (DELETE mode) database whose writer died mid-transaction
    still holds that transaction's half-written pages; the ``-journal`` beside
    it holds the originals. SQLite puts them back on the next read by a
    connection that may write, and refuses to read at all through a read-only
    one ("attempt to write a readonly database"). So before the read-only
    opens of a live database (the snapshot, the checks), this opens it
    read-write and reads one pragma: SQLite rolls the journal back (taking its
    exclusive lock, as the application itself would) and nothing else changes.

    Only a journal that is hot (:func:`hot_journal`) is touched: a live
    writer's journal comes and goes with its transactions, and its commit is
    no rollback. Returns True when a hot journal was there and is gone (this
    run or the application rolled it back: HOT_JOURNAL_ROLLED_BACK says so).
    OpsError(1) when it cannot be rolled back: the database is locked (a
    process took it in between) or this user may not write it.
    """
    import sqlite3  # lazily: the migrate no-op does not need it

    db = os.path.abspath(os.fspath(path))
    if not hot_journal(db):
        return False
    try:
        conn = sqlite3.connect(file_uri(db, "rw"), uri=True, timeout=busy_timeout_ms / 1000,
                               isolation_level=None)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if not os.path.exists(db + "-journal"):
            return True  # the application rolled it back first
        if sqlite_error_code(exc) == EX_BUSY:
            why = (f"{exc}: a process took the database before the journal could be rolled "
                   "back; retry when it has let go")
        else:
            why = f"{exc}; run this as the database's owner (or let the application open it once)"
        raise OpsError(EX_FAIL, f"{db} has a hot rollback journal (a writer was killed "
                                f"mid-transaction) that cannot be rolled back: {why}") from None
    return not os.path.exists(db + "-journal")


def ensure_private_dir(path: str, setting: str = "--dir or BACKUP_DIR") -> None:
    """Make ``path`` a directory this run can write into, creating it (0700)
    when missing: only it, never its parents (a missing parent means a wrong
    setting, ``setting`` being the one that names it, and making the whole tree
    would hide the typo). A symlink to a directory is one (BACKUP_DIR often
    is); anything else at ``path`` is exit 2."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OpsError(EX_USAGE, f"not a directory: {path}")
    if not os.path.isdir(path):
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise OpsError(EX_USAGE, f"cannot create {path}: {parent} does not exist; check the "
                                     f"setting that names it ({setting}), or create it; nothing "
                                     "was changed")
        try:
            os.mkdir(path, 0o700)
        except OSError as exc:
            if not os.path.isdir(path):  # else a run started at the same moment made it: fine
                raise OpsError(EX_FAIL, f"cannot create directory {path}: "
                                        f"{exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise OpsError(EX_FAIL, f"cannot write to {path}: permission denied")


def free_bytes(directory: str | os.PathLike[str]) -> int | None:
    """Bytes this (unprivileged) user may still write in ``directory``'s file
    system: f_bavail, without the blocks reserved for root, as ``df`` shows and
    lib/common.sh's free_bytes reads. None when it cannot be told: the caller
    goes ahead, and the write itself fails with the reason."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path (a directory after a rename in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shell_quote(word: str) -> str:
    """``word`` for a bash command line, as bash's printf %q writes it: a
    control character (a newline in a path) as $'\\n', so the command stays
    on one line."""
    if word.isprintable():
        import shlex  # lazily: the migrate no-op does not need it

        return shlex.quote(word)
    out = []
    for ch in word:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch in "\\'":
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def shell_command(*words: str) -> str:
    """``words`` as one bash command line, ready to paste (:func:`shell_quote`)."""
    return " ".join(shell_quote(w) for w in words)


def tool_complaint(stderr: str | bytes, returncode: int) -> str:
    """Why a tool (zstd, gzip) that exited ``returncode`` failed: the last line
    it wrote on stderr, or its exit status when it wrote nothing."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {returncode}"


class Writeback:
    """Has the kernel start writing a file to disk while it is still being
    written, one step behind the writer, so that the fsync at the end waits
    for the last step instead of the whole file (an 800 MB restore spent a
    quarter of its time in that fsync). Linux ``sync_file_range`` with
    SYNC_FILE_RANGE_WRITE only starts the writes: it waits for none of them
    and makes nothing durable; the caller's fsync still does that. Elsewhere,
    or refused, it does nothing. ``fd`` may be any descriptor of the file. A
    ``scratch`` file (removed, never renamed into place) is not sent at all:
    writing it to the disk would only take the disk from the next step."""

    STEP = 32 << 20  # bytes: a few hundred ms of disk, small enough to overlap

    def __init__(self, fd: int, scratch: bool = False) -> None:
        self.fd, self.started, self.scratch = fd, 0, scratch

    def advance(self, written: int) -> None:
        """``written`` bytes of the file are written so far."""
        if not self.scratch and written - self.started >= self.STEP:
            start_writeback(self.fd, self.started, written - self.started)
            self.started = written


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes of ``fd``'s file from ``offset`` (see Writeback)."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure leaves it to the fsync


_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: most runs of the toolkit write no big file

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"), recorded beside its
    PID in the lock file: a PID means nothing in another namespace."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def holder_text(recorded: str) -> str:
    """" (pid N WHAT)" from a lock file's "N WHAT [pid:[NS]]", saying when N is
    a PID of another PID namespace (a container, or the host), which is not
    the process of that number here: nobody should kill that one. "" when
    nothing is recorded. lib/common.sh's lock_acquire says it the same way."""
    text = recorded.strip()
    if not text:
        return ""
    head, _, namespace = text.rpartition(" ")
    if not (namespace.startswith("pid:[") and head):
        return f" (pid {text})"
    if namespace == _pid_namespace() or not _pid_namespace():  # (ours unknown: no claim)
        return f" (pid {head})"
    return (f" (pid {head}, in another PID namespace: a container or the host, where that "
            "number is not this one's process)")


def _read_holder(fd: int) -> str:
    try:
        return holder_text(os.pread(fd, 200, 0).decode(errors="replace"))
    except OSError:
        return ""


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database

# SQLite's primary result codes for "the database stayed locked" and "the file is damaged".
SQLITE_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
SQLITE_DAMAGED_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_WORDS = ("locked", "busy")
_DAMAGED_WORDS = ("malformed", "not a database", "corrupt")


def abort_when_busy(status: int, remaining: int, total: int) -> None:
    """Backup-API progress callback, called after every step: stop at a lock
    the busy timeout did not outlast. Python's ``Connection.backup`` would
    otherwise sleep and retry for as long as the lock stays (an exception here
    aborts the copy, as does the one a signal handler raises here)."""
    if status in SQLITE_BUSY_CODES:
        import sqlite3  # already loaded: only a backup-API copy calls this

        raise sqlite3.OperationalError("database is locked")


def sqlite_error_code(exc: Exception) -> int:
    """The contract's exit code for an sqlite3 error: EX_BUSY when the database
    stayed locked past the busy timeout, EX_INTEGRITY when the file is damaged
    (corrupt, or not a database behind an SQLite header), else EX_FAIL. From the
    result code where Python gives it (3.11+), else from SQLite's message."""
    primary = getattr(exc, "sqlite_errorcode", None)
    if primary is not None:
        primary &= 0xFF
        if primary in SQLITE_BUSY_CODES:
            return EX_BUSY
        return EX_INTEGRITY if primary in SQLITE_DAMAGED_CODES else EX_FAIL
    text = str(exc).lower()
    if any(word in text for word in _BUSY_WORDS):
        return EX_BUSY
    return EX_INTEGRITY if any(word in text for word in _DAMAGED_WORDS) else EX_FAIL


INTEGRITY_PRAGMAS = ("integrity_check", "quick_check")


def check_rows(conn: sqlite3.Connection, pragma: str = "quick_check") -> list[str]:
    """The rows of ``PRAGMA integrity_check`` or ``quick_check`` on ``conn``
    (["ok"] when sound), read to their end. SQLite stopping the check because
    the file is damaged is a row too. So are the rows of damage the check had
    already given when any other error stopped it (an I/O error on a damaged
    page, an interrupt): what it found stands, with the error as its last row.
    Any other error is raised: the check found nothing and ruled nothing out."""
    import sqlite3  # already loaded: the caller holds a connection

    if pragma not in INTEGRITY_PRAGMAS:
        raise ValueError(f"not an integrity pragma: {pragma!r}")
    rows: list[str] = []
    try:
        for row in conn.execute(f"PRAGMA {pragma}"):
            rows.append(str(row[0]))
    except sqlite3.Error as exc:
        if sqlite_error_code(exc) == EX_INTEGRITY or rows not in ([], ["ok"]):
            return rows + [f"{pragma} stopped: {exc}" if rows else str(exc)]
        raise
    return rows


def is_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the SQLite 3 header string."""
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_HEADER
    except OSError:
        return False


def fail(prog: str, error: OpsError) -> int:
    """Print an expected failure as one line on stderr and return its exit code."""
    # One line, whatever the message holds (a path may contain a newline).
    message = error.message.replace("\n", "\\n")
    print(f"{prog}: {message}", file=sys.stderr)
    return error.code


def hold(path: str) -> int | None:
    """A descriptor of this run's own temp entry ``path`` with an exclusive
    flock(2) on it, until it is closed (at the latest when the process ends,
    however it ends): :func:`sweep_own_temps` leaves what a live run holds,
    even a run that let go of the database's lock meanwhile (a restore
    waiting at its prompt). flock, not fcntl: the lock belongs to this open
    file, not to the process, so no other descriptor's close drops it. None
    where the file system has no such locks (some network ones): the run goes
    on, unprotected from that rare sweep, as before there was one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _held(path: str) -> bool:
    """Whether a live run holds ``path`` (:func:`hold`). A shared lock tests
    for it: it needs no descriptor open for writing (NFS's emulation of flock
    wants one for an exclusive lock), and never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # no such locks here: nothing could have been held either
    finally:
        os.close(fd)
    return False


def sweep_own_temps(directory: str, is_temp: Callable[[str], bool]) -> None:
    """Remove the entries of ``directory`` whose names ``is_temp`` accepts, that
    this user owns and that no live run holds (:func:`hold`): what a killed
    run left (never another user's, never a waiting run's). Only with the
    database's lock held."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not is_temp(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid() or _held(entry.path):
                continue
            if entry.is_dir(follow_symlinks=False):
                import shutil

                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            continue


class Log:
    """Timestamped lines on stderr, as lib/common.sh writes them (stdout is for
    results); copied to syslog with LOG_SYSLOG=1. ``one_line``: a newline in a
    message is shown as \\n (the restore's lines name paths that may hold one)."""

    def __init__(self, prog: str, quiet: bool = False, syslog: bool = False,
                 one_line: bool = False) -> None:
        self.prog, self.quiet, self.syslog, self.one_line = prog, quiet, syslog, one_line

    def _line(self, level: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} {self.prog}: {level}: {message}"
        print(line.replace("\n", "\\n") if self.one_line else line, file=sys.stderr,
              flush=True)
        self._syslog(f"{level}: {message}")

    def _syslog(self, text: str) -> None:
        if not self.syslog:
            return
        import shutil
        import subprocess

        if shutil.which("logger"):
            subprocess.run(["logger", "-t", self.prog, "--", text], check=False,
                           stdin=subprocess.DEVNULL)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._line("info", message)

    def warn(self, message: str) -> None:
        self._line("warning", message)

    def die(self, error: OpsError) -> None:
        """The failure's one line (a newline in it shown as \\n), as die() writes it."""
        fail(self.prog, error)
        self._syslog(f"error: {error.message}")


EX_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def run_interruptible(main: Callable[[], int]) -> int:
    """Run a module's ``main`` so that Ctrl-C (or SIGTERM/SIGHUP, turned into
    the same KeyboardInterrupt) ends it with exit 130 and no traceback; the
    calling script says what the interruption left behind."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    on_stop_signals(interrupt)  # (signals ignored at the start stay ignored)
    try:
        return main()
    except KeyboardInterrupt:
        return EX_INTERRUPTED


def create_lock_file(path: str) -> None:
    """Create the empty lock file ``path`` if there is none, never through a
    symlink (O_CREAT|O_EXCL|O_NOFOLLOW). Whatever is already there (a
    concurrent run's file, or something planted) is left for the caller's
    checks. OSError when it cannot be created."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass


def main(argv: list[str] | None = None) -> int:
    """The bash scripts' way to two things of this module:

    ``python3 -m sqlite_ops.common roll-back-journal [--busy-timeout-ms N] -- DB``
        :func:`roll_back_hot_journal` (prints a line when it rolled one back);
    ``python3 -m sqlite_ops.common lock-file [--create] -- DB``
        prints the database's lock file (:func:`lock_path_for`, followed by
        "/" so a trailing newline survives ``$(...)``); with ``--create``,
        creates it when missing (:func:`create_lock_file`; exit 1 when it
        cannot be, the path still printed).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="sqlite_ops.common")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("roll-back-journal")
    cmd.add_argument("--busy-timeout-ms", type=int, default=5000)
    cmd.add_argument("--prog", default="sqlite-ops")
    cmd.add_argument("db")
    cmd = sub.add_parser("lock-file")
    cmd.add_argument("--create", action="store_true")
    cmd.add_argument("db")
    args = parser.parse_args(argv)
    if args.command == "lock-file":
        path = lock_path_for(args.db)
        sys.stdout.write(path + "/\n")
        sys.stdout.flush()
        if args.create:
            try:
                create_lock_file(path)
            except OSError:
                return EX_FAIL
        return EX_OK
    try:
        if roll_back_hot_journal(args.db, args.busy_timeout_ms):
            print(HOT_JOURNAL_ROLLED_BACK.format(db=args.db))
    except OpsError as error:
        return fail(args.prog, error)
    return EX_OK


if __name__ == "__main__":
    sys.exit(run_interruptible(main))
