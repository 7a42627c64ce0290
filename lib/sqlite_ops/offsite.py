"""Offsite copies: verified backups leave the machine through rclone, and come back.

``offsite_sync.sh`` (lock, settings, metrics file) runs ``python3 -m
sqlite_ops.offsite sync``; the restore (``restore_database.sh --from``) and the
local prune call the library:

``sync``             copy every wanted verified local backup of one database that
                     is not yet on each remote, newest first: the data file, then
                     a check of the copy, then the manifest last (a manifest on
                     the remote means the copy is complete and was verified);
                     then remote retention (:class:`Syncer`)
``remote_copies``    the copies of one database on a remote, newest first
``fetch``            download ``latest`` (or a named copy) and its manifest into a
                     local directory, where the restore verifies it exactly like a
                     local backup
``pending_backups``  the local backups not yet safely on every remote (the local
                     prune keeps them)

Layout on a remote: ``REMOTE/<host>/<name>/<backup file>`` plus
``<backup file>.manifest.json``. Many hosts can share one bucket; each only ever
prunes files whose manifest names its host, its database's name and its
database's path.

What each remote holds is recorded locally, in ``BACKUP_DIR/.offsite/<name>.json``,
after each verified upload: file name, SHA-256, size, how the copy was checked and
the SHA-256 of the manifest text uploaded. A sync re-reads the remote's listing
every run and forgets what is gone or has the wrong size, so the record never
vouches for more than the remote shows. The local prune reads it: a backup not
recorded on every remote is still pending and is never pruned.

A copy counts by its data file's SHA-256 and size, not by its manifest. When the
drill (INTEGRITY_CHECK=drill) adds its ``integrity_check`` record and the
foreign-key count (catalog.drill_fields) to the local manifest after the copy
went offsite, the next sync sees the local manifest's
hash differ from the recorded one (a local comparison: the nothing-to-do sync
still costs one listing) and uploads the manifest again, never the data file, with
the same read-back check. A manifest that changed in anything else is left as it
was on the remote, with a warning.

How a copy is checked: with the strongest hash the backend computes (sha256,
else sha1, else md5: rclone's sftp backend offers md5 and sha1, crypt none)
against the same hash of the local file; when the backend has none, the copy is
downloaded again and its SHA-256 compared with the manifest's ("download
check"). The output says which.

A sync drives one ``rclone rcd`` (``RcloneDaemon``) over loopback HTTP for the
whole run, so rclone starts once and its connection to the remote is reused by
every listing, upload, check and removal; listing and fetching for a restore
run one-off rclone commands (``Rclone``). rclone's configuration file is the user's
(``RCLONE_CONFIG`` passes through the environment): no secret is ever put on a
command line, in a manifest, the record or a log line (rclone's messages are
scrubbed of any ``RCLONE_CONFIG_*`` secret values before they are shown; the
remote control's own random credentials travel in rcd's environment only).
Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlite_ops import catalog, hashing
from sqlite_ops.common import (
    EX_BUSY,
    EX_FAIL,
    EX_OK,
    EX_USAGE,
    EX_VERIFY,
    OpsError,
    ensure_private_dir,
    fail,
    short_host_name,
)
from sqlite_ops.progress import INTERVAL as PROGRESS_INTERVAL
from sqlite_ops.progress import Progress, wanted
from sqlite_ops.promfile import escape_label, family

PROG = "offsite_sync.sh"
STATE_DIR = ".offsite"  # in BACKUP_DIR: what each remote holds, and the offsite lock
RECORD_FORMAT = 1
HASH_PREFERENCE = ("sha256", "sha1", "md5")  # strongest first

# rclone settings this toolkit chooses unless the user set them (RCLONE_* variables
# win): a dead remote fails within a minute instead of retrying for many; the next
# run is the retry, and it is idempotent.
RCLONE_DEFAULTS = (
    ("--contimeout", "RCLONE_CONTIMEOUT", "15s"),
    ("--timeout", "RCLONE_TIMEOUT", "60s"),
    ("--retries", "RCLONE_RETRIES", "1"),
    ("--low-level-retries", "RCLONE_LOW_LEVEL_RETRIES", "3"),
)

# rclone exits 1 for most failures; the message says which kind.
_UNREACHABLE = ("dial tcp", "connection refused", "no route to host", "i/o timeout",
                "no such host", "connection reset", "connection lost", "broken pipe",
                "network is unreachable", "eof", "timeout", "temporary failure")
# What is not there (a listing of it is empty, a deletion of it is done). Not
# rclone's notice 'Config file "..." not found - using defaults'.
_MISSING = ("directory not found", "object not found", "file not found", "404 not found")
# A name that cannot be resolved now says nothing else about the remote.
# (Go's resolver names the host unquoted: "lookup quota-nas: no such host".)
_UNREACHABLE_FIRST = ("temporary failure in name resolution", "no such host", "dial tcp")
_CREDENTIALS = ("unable to authenticate", "permission denied (publickey",
                "authentication failed", "access denied", "invalidaccesskeyid",
                "signaturedoesnotmatch", "unauthorized", "403 forbidden",
                "bad password", "wrong password")
_CONFIG = ("didn't find section in config file", "config file not found",
           "unknown backend", "failed to load config")
_HOST_KEY = ("knownhosts", "key mismatch", "host key")
_FULL = ("no space left", "quota", "quotaexceeded", "disk full", "insufficient storage", "507",
         "ssh_fx_failure", "storagefull")
_SECRET_KEY = re.compile(r"^RCLONE_CONFIG_\w*(PASS|PASSWORD|SECRET|KEY|TOKEN|SALT)\w*$")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_. -]*$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Unreachable(OpsError):
    """The remote cannot be reached now: try again later (exit 75)."""

    def __init__(self, message: str) -> None:
        super().__init__(EX_BUSY, message)


# ---------------------------------------------------------------------------
# Names and paths
# ---------------------------------------------------------------------------


def check_remote(remote: str) -> str:
    """``name:path`` of an rclone remote in the user's config, or an absolute local
    path. Connection strings (``:backend,key=value:``) are refused: they put
    settings, often secrets, on command lines and in logs."""
    remote = remote.strip()
    name, colon, _ = remote.partition(":")
    if remote.startswith("/") and "\n" not in remote:
        return remote
    if not colon or not _REMOTE_NAME.match(name) or "," in name:
        shown = remote if not re.search(r"[,=]", remote) else remote.split(",", 1)[0] + ",..."
        raise OpsError(EX_USAGE, f"not an rclone remote: {shown!r}: give the name of a remote "
                                 "from rclone's config file followed by ':' and a path "
                                 "(nas:sqlite-ops), or an absolute directory; credentials "
                                 "belong in rclone's config file, never in OFFSITE_REMOTES")
    return remote


def check_host(host: str) -> str:
    if not _HOST.match(host) or host in (".", ".."):
        raise OpsError(EX_USAGE, f"not a usable host name: {host!r} (letters, digits, '.', '_' "
                                 "and '-'; set OFFSITE_HOST)")
    return host


def remote_dir(remote: str, host: str, name: str) -> str:
    """``REMOTE/<host>/<name>``; ``nas:`` stays relative to the remote's root."""
    base = remote if remote.endswith(":") else remote.rstrip("/") + "/"
    return f"{base}{host}/{name}"


def state_path(backup_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(backup_dir) / STATE_DIR / f"{name}.json"


# ---------------------------------------------------------------------------
# rclone
# ---------------------------------------------------------------------------


def secrets_in_env(env: dict[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [value for key, value in env.items()
            if _SECRET_KEY.match(key) and len(value) >= 4]


def scrub(text: str, env: dict[str, str] | None = None) -> str:
    """``text`` with every secret rclone was given through the environment masked."""
    for secret in secrets_in_env(env):
        text = text.replace(secret, "***")
    return text


_LOG_DATE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s+")  # rclone's "2026/01/01 12:00:00 "


def _last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR" in line or "Failed" in line or "error" in line:
            text = line
            break
    else:
        text = lines[-1] if lines else "no message"
    return _LOG_DATE.sub("", scrub(text))


def _said(words: tuple[str, ...], text: str) -> bool:
    """Whether ``text`` holds one of ``words`` as a word of its own: "eof" is
    not in "geofence", nor "507" in a backup named ``..._20260507_...``."""
    return re.search(r"(?<![a-z0-9_])(?:" + "|".join(map(re.escape, words)) + r")(?![a-z0-9_])",
                     text) is not None


def _rclones_words(stderr: str) -> str:
    """rclone's own words in its messages, lowercased: without the names it
    quotes (``"remote:path"``) or logs a line about (``ERROR : name: ...``),
    which are the user's and may hold any word ("timeout", "failure")."""
    lines = []
    for line in stderr.lower().splitlines():
        line = _LOG_DATE.sub("", line)
        line = re.sub(r"^(error|notice|info|debug|critical)\s*: [^:]*: ", r"\1 : ", line)
        lines.append(re.sub(r'"[^"]*"', '""', line))
    return "\n".join(lines)


def classify(remote: str, what: str, stderr: str, code: int) -> OpsError:
    """An rclone failure as the contract's exit code and one clear line, told
    from rclone's own words in it, never from a file or remote name."""
    detail = _last_error(stderr)
    lowered = _rclones_words(stderr)
    unreachable = Unreachable(f"{remote}: {what}: cannot reach the remote ({detail}); nothing "
                              "local was changed; the next run catches up")
    if _said(_UNREACHABLE_FIRST, lowered):
        return unreachable
    if _said(_CONFIG, lowered):
        return OpsError(EX_USAGE, f"{remote}: {what}: {detail}; check the remote's name in "
                                  "OFFSITE_REMOTES and rclone's config (RCLONE_CONFIG, "
                                  "`rclone config file`)")
    if _said(_HOST_KEY, lowered):
        return OpsError(EX_USAGE, f"{remote}: {what}: the server's host key is not the one "
                                  f"known for it ({detail}); check that it is the right "
                                  "server before trusting its new key; nothing was sent")
    if _said(_CREDENTIALS, lowered):
        return OpsError(EX_USAGE, f"{remote}: {what}: the remote refused the credentials "
                                  f"({detail}); fix them with `rclone config`; nothing "
                                  "local was changed")
    if _said(_FULL, lowered) and "connection" not in lowered:
        return OpsError(EX_FAIL, f"{remote}: {what}: {detail} (is the remote full?); the "
                                 "half-written copy never counts; nothing local was changed")
    if _said(_UNREACHABLE, lowered) or code == 5:
        return unreachable
    return OpsError(EX_FAIL, f"{remote}: {what}: rclone exit {code}: {detail}; nothing local "
                             "was changed")


class Rclone:
    """Runs rclone with the user's configuration and this toolkit's time limits."""

    def __init__(self, executable: str | None = None, *, quiet: bool = True,
                 prog: str = PROG) -> None:
        """``quiet`` false: a transfer shows a progress line on a terminal."""
        found = executable or shutil.which("rclone")
        if not found:
            raise OpsError(EX_USAGE, "'rclone' is not installed; install the 'rclone' package "
                                     "(apt-get install rclone): offsite copies need it")
        self.executable = found
        self.quiet, self.prog = quiet, prog
        self.flags = [item for flag, env, value in RCLONE_DEFAULTS
                      if not os.environ.get(env) for item in (flag, value)]

    def run(self, remote: str, what: str, *args: str, missing_ok: bool = False,
            stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
        command = [self.executable, *self.flags, *args]
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout,
                                 stderr=subprocess.PIPE)
        try:
            out, err = child.communicate()
        except BaseException:  # interrupted: no rclone may go on writing after us
            child.kill()
            child.wait()
            raise
        proc = subprocess.CompletedProcess(command, child.returncode, out, err)
        stderr = err.decode(errors="replace")
        if proc.returncode == 0:
            return proc
        # 3: directory not found, 4: file not found.
        if missing_ok and (proc.returncode in (3, 4) or _said(_MISSING, _rclones_words(stderr))):
            return proc
        raise classify(remote, what, stderr, proc.returncode)

    def listing(self, remote: str, directory: str) -> dict[str, int]:
        """File name -> size of the files directly in ``directory`` (empty when missing)."""
        proc = self.run(remote, "listing", "lsjson", "--files-only", "--no-mimetype",
                        "--no-modtime", "--max-depth", "1", "--", directory + "/",
                        missing_ok=True)
        if proc.returncode != 0:
            return {}
        try:
            entries = json.loads(proc.stdout or b"[]")
        except ValueError:
            raise OpsError(EX_FAIL, f"{remote}: rclone lsjson printed no JSON") from None
        return {e["Name"]: int(e["Size"]) for e in entries if not e.get("IsDir")}

    def hashes(self, remote: str) -> list[str]:
        """The hash types the remote's backend computes (lower case)."""
        proc = self.run(remote, "reading the backend's features", "backend", "features",
                        "--", remote)
        try:
            return [h.lower() for h in json.loads(proc.stdout).get("Hashes") or []]
        except ValueError:
            return []

    def remote_hash(self, remote: str, path: str, kind: str) -> tuple[str, int] | None:
        """(hash, size) of one remote file, or None when the backend gives no such hash."""
        proc = self.run(remote, "reading the copy's hash", "lsjson", "--files-only",
                        "--no-mimetype", "--hash-type", kind, "--", path)
        try:
            entries = json.loads(proc.stdout or b"[]")
        except ValueError:
            return None
        for entry in entries:
            value = (entry.get("Hashes") or {}).get(kind)
            if value:
                return str(value).lower(), int(entry.get("Size", -1))
        return None

    def download_sha256(self, remote: str, path: str) -> tuple[str, int]:
        """SHA-256 and size of a remote file, streamed (``rclone cat``)."""
        command = [self.executable, *self.flags, "cat", "--", path]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout and proc.stderr
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        reader.start()
        try:
            digest, size = hashing.sha256_stream(proc.stdout)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.wait()
            reader.join()
        if proc.returncode != 0:
            raise classify(remote, "download check", b"".join(errors).decode(errors="replace"),
                           proc.returncode)
        return digest, size

    def upload(self, remote: str, local: str | os.PathLike[str], dest: str,
               checked_after: bool = False) -> None:
        """``rclone copyto``. --ignore-times: always transfer (a half-uploaded file of
        the right size from a killed run must be replaced); no --immutable for the
        same reason. ``checked_after``: the caller checks the copy itself, so
        rclone's own hash comparison (a second full read by the server) is skipped."""
        extra = ["--ignore-checksum"] if checked_after else []
        self.run(remote, f"upload of {os.path.basename(dest)}", "copyto", "--ignore-times",
                 *extra, "--", os.fspath(local), dest)

    def put(self, remote: str, data: bytes, dest: str, work: str | os.PathLike[str]) -> None:
        """Upload ``data`` (a manifest) as ``dest``, checked: rclone compares the hashes
        itself. The temporary file lives in ``work``."""
        self._put_file(remote, data, dest, work, checked_after=False)

    def _put_file(self, remote: str, data: bytes, dest: str, work: str | os.PathLike[str],
                  checked_after: bool) -> None:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            local = Path(tmp) / os.path.basename(dest)
            local.write_bytes(data)
            self.upload(remote, local, dest, checked_after=checked_after)

    def download(self, remote: str, source: str, local: str | os.PathLike[str],
                 size: int | None = None) -> None:
        """``rclone copyto`` into ``local`` (whose directory holds nothing else of
        that name); its progress is the size of what rclone has written there
        (the file itself, or its ``.partial`` name on newer rclone)."""
        name = os.path.basename(local)
        directory = os.path.dirname(os.path.abspath(local))

        def written() -> int:
            return sum(os.path.getsize(os.path.join(directory, entry))
                       for entry in os.listdir(directory) if entry.startswith(name))

        with Progress(f"downloading {os.path.basename(source)}", size, prog=self.prog,
                      quiet=self.quiet, probe=written) as bar:
            self.run(remote, f"download of {os.path.basename(source)}", "copyto",
                     "--ignore-times", "--", source, os.fspath(local))
            bar.complete()

    def delete(self, remote: str, path: str) -> None:
        self.run(remote, f"removal of {os.path.basename(path)}", "deletefile", "--", path,
                 missing_ok=True)


def split_path(path: str) -> tuple[str, str]:
    """``nas:dir/sub/file`` as (``nas:dir/sub``, ``file``): the directory and the name
    in it, as rclone's remote control takes them."""
    head, slash, tail = path.rpartition("/")
    if slash:
        return (head + "/" if head.endswith(":") or not head else head), tail
    head, colon, tail = path.partition(":")
    return head + colon, tail


def _parent_death_signal() -> Any:
    """A function that, run in a child before exec, has the kernel kill the child
    when this process dies (Linux ``prctl(PR_SET_PDEATHSIG)``); None elsewhere."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _rc_error(exc: urllib.error.HTTPError) -> str:
    """rclone's message in a failed remote-control answer ({"error": ..., "status": ...})."""
    try:
        answer = json.load(exc)
    except ValueError:
        answer = None
    return str(answer.get("error") or exc) if isinstance(answer, dict) else str(exc)


class RcloneDaemon(Rclone):
    """One ``rclone rcd`` for a whole sync: the listing, the uploads, the hash checks
    and the removals are calls to it over loopback HTTP, so rclone starts once and
    keeps its connections (one SSH handshake per sync, not one per step).

    It listens on 127.0.0.1, on a port the kernel picks, and answers only to a user
    and password made up for this run and passed in its environment, never on its
    command line (which the process list shows). It stops when the sync ends and is
    killed with it: no rclone goes on writing after us. Remote files are read
    through it too (``--rc-serve``: the download check, reading a manifest back);
    the manifests the remote retention reads still come with one ``rclone copy``."""

    STARTUP_SECONDS = 30

    def __init__(self, executable: str | None = None, *, quiet: bool = True,
                 prog: str = PROG) -> None:
        super().__init__(executable, quiet=quiet, prog=prog)
        self._proc: subprocess.Popen[bytes] | None = None
        self._url = ""
        self._auth = ""
        self._log: collections.deque[str] = collections.deque(maxlen=20)
        # Straight to 127.0.0.1, whatever http_proxy says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> RcloneDaemon:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        user, password = secrets.token_hex(8), secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_RC_")}
        env.update(RCLONE_RC_USER=user, RCLONE_RC_PASS=password)
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._proc = subprocess.Popen(
            [self.executable, *self.flags, "rcd", "--rc-addr", "127.0.0.1:0", "--rc-serve"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_parent_death_signal())  # safe: no other thread runs yet
        try:
            port = self._await_port()
        except BaseException:
            self.stop()
            raise
        self._url = f"http://127.0.0.1:{port}/"
        threading.Thread(target=self._drain, daemon=True).start()

    def _await_port(self) -> str:
        """The port from rclone's "Serving remote control on http://127.0.0.1:N/"."""
        assert self._proc and self._proc.stderr
        stream, seen, deadline = self._proc.stderr, b"", time.monotonic() + self.STARTUP_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(stream.fileno(), 4096) if ready else b""
            seen += chunk
            found = re.search(rb"Serving remote control on http://127\.0\.0\.1:(\d+)/", seen)
            if found:
                self._log.extend(seen.decode(errors="replace").splitlines())
                return found.group(1).decode()
            if ready and not chunk:  # it exited
                break
        raise OpsError(EX_FAIL, "rclone's remote control (rclone rcd) did not start: "
                                f"{_last_error(seen.decode(errors='replace'))}")

    def _drain(self) -> None:
        """Read rclone's log (its errors also come back in each call's answer)."""
        assert self._proc and self._proc.stderr
        for line in self._proc.stderr:
            self._log.append(line.decode(errors="replace"))

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.kill()  # nothing of ours is in flight: an interrupted upload stops now
        self._proc.wait()
        self._proc = None

    def call(self, remote: str, what: str, method: str, params: dict[str, Any],
             missing_ok: bool = False) -> dict[str, Any] | None:
        """One remote-control call (``method`` with ``params``, as rclone's rc documents
        them); its answer, or None when ``missing_ok`` and rclone says not found."""
        request = urllib.request.Request(
            self._url + method, data=json.dumps(params).encode(),
            headers={"Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with self._opener.open(request) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            status, message = exc.code, _rc_error(exc)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log = " ".join(self._log)
            raise OpsError(EX_FAIL, f"{remote}: {what}: rclone's remote control stopped "
                                    f"answering ({getattr(exc, 'reason', exc)}; "
                                    f"{_last_error(log)}); nothing local was changed") from None
        if missing_ok and (status == 404 or _said(_MISSING, _rclones_words(message))):
            return None
        raise classify(remote, what, message, 1)

    @contextlib.contextmanager
    def _get(self, remote: str, what: str, path: str) -> Iterator[BinaryIO]:
        """The content of a remote file, streamed (``--rc-serve``: ``/[fs]/name``)."""
        directory, name = split_path(path)
        url = self._url + urllib.parse.quote(f"[{directory}]/{name}")
        request = urllib.request.Request(url, headers={"Authorization": self._auth})
        try:
            with self._opener.open(request) as response:
                yield response
        except urllib.error.HTTPError as exc:
            raise classify(remote, what, _rc_error(exc), 1) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # Cut short: the remote went away mid-read (or rclone did).
            raise classify(remote, what, f"connection lost: {exc}", 1) from None

    def download_sha256(self, remote: str, path: str) -> tuple[str, int]:
        with self._get(remote, "download check", path) as stream:
            return hashing.sha256_stream(stream)

    def put(self, remote: str, data: bytes, dest: str, work: str | os.PathLike[str]) -> None:
        """Upload ``data`` and read it back: a byte-for-byte check over the open
        connection, cheaper than the server hashing it (one more SSH session)."""
        self._put_file(remote, data, dest, work, checked_after=True)
        with self._get(remote, "reading back the manifest", dest) as stream:
            back = stream.read(len(data) + 1)
        if back != data:
            self.delete(remote, dest)  # a wrong manifest must not make the copy count
            raise OpsError(EX_FAIL, f"{remote}: {os.path.basename(dest)} read back differs "
                                    "from what was sent; the copy does not count; the next "
                                    "run uploads it again")

    def listing(self, remote: str, directory: str) -> dict[str, int]:
        answer = self.call(remote, "listing", "operations/list", {
            "fs": directory, "remote": "",
            "opt": {"filesOnly": True, "noMimeType": True, "noModTime": True}},
            missing_ok=True)
        entries = (answer or {}).get("list") or []
        return {e["Name"]: int(e["Size"]) for e in entries if not e.get("IsDir")}

    def hashes(self, remote: str) -> list[str]:
        answer = self.call(remote, "reading the backend's features", "operations/fsinfo",
                           {"fs": remote}) or {}
        return [h.lower() for h in answer.get("Hashes") or []]

    def remote_hash(self, remote: str, path: str, kind: str) -> tuple[str, int] | None:
        directory, name = split_path(path)
        answer = self.call(remote, "reading the copy's hash", "operations/stat", {
            "fs": directory, "remote": name,
            "opt": {"showHash": True, "hashTypes": [kind]}}) or {}
        item = answer.get("item")
        if not item:
            return "", -1  # gone: not the copy we sent
        value = (item.get("Hashes") or {}).get(kind)
        return (str(value).lower(), int(item.get("Size", -1))) if value else None

    def upload(self, remote: str, local: str | os.PathLike[str], dest: str,
               checked_after: bool = False) -> None:
        """As ``Rclone.upload``: always transferred, rclone's own hash comparison
        skipped when the caller checks the copy itself."""
        config: dict[str, bool] = {"IgnoreTimes": True}
        if checked_after:
            config["IgnoreChecksum"] = True
        directory, name = split_path(dest)
        params = {"srcFs": os.path.dirname(os.path.abspath(local)),
                  "srcRemote": os.path.basename(local), "dstFs": directory, "dstRemote": name,
                  "_config": config}
        if wanted(quiet=self.quiet):
            self._watched(remote, f"upload of {name}", "operations/copyfile", params,
                          os.path.getsize(local), f"uploading {name}")
        else:
            self.call(remote, f"upload of {name}", "operations/copyfile", params)

    def _watched(self, remote: str, what: str, method: str, params: dict[str, Any],
                 total: int, label: str) -> None:
        """``method`` as an rclone job, its bytes (rclone's stats of that job) on
        the progress line until it finishes; its error as the call's would be."""
        job = (self.call(remote, what, method, {**params, "_async": True}) or {})["jobid"]
        status: dict[str, Any] = {}
        with Progress(label, total, prog=self.prog) as bar:
            while not status.get("finished"):
                time.sleep(PROGRESS_INTERVAL)
                status = self.call(remote, what, "job/status", {"jobid": job}) or {}
                stats = self.call(remote, what, "core/stats", {"group": f"job/{job}"}) or {}
                bar.done = int(stats.get("bytes") or 0)
        if not status.get("success"):
            raise classify(remote, what, str(status.get("error") or "the job failed"), 1)

    def delete(self, remote: str, path: str) -> None:
        directory, name = split_path(path)
        self.call(remote, f"removal of {name}", "operations/deletefile",
                  {"fs": directory, "remote": name}, missing_ok=True)


# ---------------------------------------------------------------------------
# The local record of what each remote holds
# ---------------------------------------------------------------------------


@dataclass
class Record:
    """``BACKUP_DIR/.offsite/<name>.json``: per remote directory, the copies this
    host uploaded and verified (file -> sha256, size_bytes, verified_by, uploaded_at,
    and ``manifest_digests()`` of the manifest uploaded: absent in entries recorded
    by older versions, and for copies found on the remote without a record, whose
    manifest's content is unknown)."""

    path: Path
    remotes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Hash types each backend computes (``rclone backend features``), asked once:
    # they belong to the backend type, and asking costs a connection per run. A
    # stale entry (a remote reconfigured) only costs speed: a hash the backend
    # does not have comes back empty, and the copy gets a download check.
    hashes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, backup_dir: str | os.PathLike[str], name: str) -> Record:
        path = state_path(backup_dir, name)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            remotes = data.get("remotes") if isinstance(data, dict) else None
            hashes = data.get("hashes") if isinstance(data, dict) else None
        except FileNotFoundError:
            remotes, hashes = {}, {}
        except (OSError, ValueError):
            remotes, hashes = {}, {}  # unreadable: everything is pending, nothing is lost
        return cls(path, remotes if isinstance(remotes, dict) else {},
                   hashes if isinstance(hashes, dict) else {})

    def copies(self, directory: str) -> dict[str, dict[str, Any]]:
        return self.remotes.setdefault(directory, {})

    def has(self, directory: str, backup: catalog.Backup) -> bool:
        entry = self.remotes.get(directory, {}).get(backup.path.name)
        sha = (backup.manifest or {}).get("sha256")
        return bool(entry and sha and entry.get("sha256") == sha
                    and entry.get("size_bytes") == backup.size_bytes)

    def save(self) -> None:
        ensure_private_dir(str(self.path.parent))
        catalog.write_json_atomic(self.path, {"format": RECORD_FORMAT, "remotes": self.remotes,
                                              "hashes": self.hashes})


# ---------------------------------------------------------------------------
# Which local backups go offsite, and which are still pending
# ---------------------------------------------------------------------------


def wanted_backups(backups: list[catalog.Backup], now: float, retention_days: int,
                   keep_min: int) -> list[catalog.Backup]:
    """The verified local backups a remote should hold, newest first: those remote
    retention would keep (a copy it would prune at once is not sent)."""
    verified = [b for b in backups if b.verified and (b.manifest or {}).get("sha256")]
    plan = catalog.plan_prune(verified, now, retention_days, keep_min)
    kept = {id(b) for b in plan.keep}
    return [b for b in verified if id(b) in kept]


def pending_backups(backup_dir: str | os.PathLike[str], name: str, source: str,
                    remotes: list[str], host: str, retention_days: int, keep_min: int,
                    now: float | None = None) -> dict[str, list[catalog.Backup]]:
    """Per remote, the wanted local backups the record does not show there."""
    now = time.time() if now is None else now
    backups = catalog.list_backups(backup_dir, name, source)
    wanted = wanted_backups(backups, now, retention_days, keep_min)
    record = Record.load(backup_dir, name)
    return {remote: [b for b in wanted if not record.has(remote_dir(remote, host, name), b)]
            for remote in remotes}


# ---------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------


@dataclass
class Options:
    db: str
    backup_dir: str
    remotes: list[str]
    host: str
    retention_days: int
    keep_min: int
    dry_run: bool = False


@dataclass
class RemoteResult:
    remote: str
    directory: str
    uploaded: list[str] = field(default_factory=list)
    present: int = 0
    manifests_updated: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    pending: int = 0
    newest: float | None = None
    error: OpsError | None = None


def _drill_record(manifest: dict[str, Any]) -> bool:
    """The manifest holds the drill's passed integrity_check of its own content."""
    check = manifest.get("integrity_check")
    return (isinstance(check, dict) and check.get("checked_by") == "drill"
            and check.get("result") == "ok" and check.get("db_sha256") == manifest.get("db_sha256"))


def _local_hashes(path: Path, kinds: tuple[str, ...], out: dict[str, Any]) -> None:
    """Hex digests of ``path`` (always sha256, plus ``kinds``) in one read, into ``out``."""
    try:
        digests = {kind: hashlib.new(kind) for kind in {"sha256", *kinds}}
        with open(path, "rb") as handle:
            while block := handle.read(hashing.CHUNK):
                for digest in digests.values():
                    digest.update(block)
        out.update({kind: d.hexdigest() for kind, d in digests.items()})
    except OSError as exc:
        out["error"] = exc


class Syncer:
    """One sync of one database's backups to its remotes."""

    def __init__(self, opts: Options, rclone: Rclone, prog: str = PROG) -> None:
        self.opts = opts
        self.rclone = rclone
        self.name = catalog.db_name(opts.db)
        self.record = Record.load(opts.backup_dir, self.name)
        self.unusable: set[Path] = set()  # local backups that do not match their manifest
        self.log = lambda message: print(f"{prog}: {message}", file=sys.stderr)
        if not opts.dry_run:  # the record, and the manifests' temp files, live there
            ensure_private_dir(str(self.record.path.parent))

    def run(self) -> list[RemoteResult]:
        now = time.time()
        backups = catalog.list_backups(self.opts.backup_dir, self.name, self.opts.db)
        wanted = wanted_backups(backups, now, self.opts.retention_days, self.opts.keep_min)
        return [self.sync_remote(remote, wanted, now) for remote in self.opts.remotes]

    def sync_remote(self, remote: str, wanted: list[catalog.Backup],
                    now: float) -> RemoteResult:
        directory = remote_dir(remote, self.opts.host, self.name)
        result = RemoteResult(remote, directory)
        try:
            listing = self.rclone.listing(remote, directory)
            self._forget_missing(directory, listing)
            for backup in wanted:  # newest first: the freshest data leaves soonest
                if self._complete(remote, directory, backup, listing):
                    result.present += 1
                    if self._update_manifest(remote, directory, backup):
                        result.manifests_updated.append(backup.path.name)
                elif backup.path in self.unusable:
                    continue  # said once; the remote's copy, if any, is left as it is
                elif self.opts.dry_run:
                    print(f"Would upload: {directory}/{backup.path.name}", flush=True)
                elif self._upload(remote, directory, backup):
                    result.uploaded.append(backup.path.name)
                    listing[backup.path.name] = backup.size_bytes
                    listing[backup.path.name + catalog.MANIFEST_SUFFIX] = 1
            result.pruned = self._retention(remote, directory, listing, now)
        except OpsError as exc:
            result.error = exc
        copies = self.record.copies(directory)
        result.pending = sum(1 for b in wanted if not self.record.has(directory, b))
        result.newest = max((t for t in (self._copy_time(f, e) for f, e in copies.items())
                             if t is not None), default=None)
        return result

    @staticmethod
    def _copy_time(file: str, entry: dict[str, Any]) -> float | None:
        """A recorded copy's time: its manifest's created_at (the catalog's rule)."""
        recorded = catalog.parse_iso_utc(entry.get("created_at"))
        parsed = catalog.parse_backup_name(file)
        return recorded if recorded is not None else (parsed[1] if parsed else None)

    def _forget_missing(self, directory: str, listing: dict[str, int]) -> None:
        """The record never vouches for more than the remote lists."""
        copies = self.record.copies(directory)
        gone = [f for f, entry in copies.items()
                if listing.get(f) != entry.get("size_bytes")
                or f + catalog.MANIFEST_SUFFIX not in listing]
        for file in gone:
            del copies[file]
        if gone and not self.opts.dry_run:
            self.record.save()

    def _complete(self, remote: str, directory: str, backup: catalog.Backup,
                  listing: dict[str, int]) -> bool:
        """Already on the remote: recorded (and listed with the right size), or a
        complete copy from a run whose record was lost (checked now, then recorded)."""
        if self.record.has(directory, backup):
            return True
        file = backup.path.name
        if listing.get(file) != backup.size_bytes or file + catalog.MANIFEST_SUFFIX not in listing:
            return False
        if self.opts.dry_run:
            return False
        how = self._check_copy(remote, f"{directory}/{file}", backup)
        if how is None:
            return False
        self._remember(directory, backup, how)
        return True

    def _hash_kind(self, remote: str, directory: str) -> str | None:
        """The strongest hash the remote's backend computes (asked once, then recorded;
        asked of ``directory``, which the sync's other calls use too)."""
        backend = remote.split(":", 1)[0] + ":" if ":" in remote else "local"
        if not isinstance(self.record.hashes.get(backend), list):
            self.record.hashes[backend] = self.rclone.hashes(directory)
        return next((k for k in HASH_PREFERENCE if k in self.record.hashes[backend]), None)

    def _check_copy(self, remote: str, path: str, backup: catalog.Backup,
                    local: dict[str, Any] | None = None) -> str | None:
        """How the remote copy was proven equal to the local backup, or None if it is not."""
        kind = self._hash_kind(remote, split_path(path)[0])
        if local is None:
            local = {}
            _local_hashes(backup.path, (kind,) if kind else (), local)
        if "error" in local:
            raise OpsError(EX_FAIL, f"cannot read {backup.path}: {local['error']}")
        if local["sha256"] != backup.manifest.get("sha256"):
            # Never sent, and never sent over the remote's copy: the remote may
            # hold the only sound one (the local file or manifest went bad).
            self.unusable.add(backup.path)
            self.log(f"warning: {backup.path} does not match its manifest's SHA-256 (damaged "
                     "on this disk?); it is not copied offsite")
            return None
        if kind:
            theirs = self.rclone.remote_hash(remote, path, kind)
            if theirs is not None:
                return kind if theirs == (local[kind], backup.size_bytes) else None
        digest, size = self.rclone.download_sha256(remote, path)
        ok = digest == backup.manifest.get("sha256") and size == backup.size_bytes
        return "download check" if ok else None

    def _upload(self, remote: str, directory: str, backup: catalog.Backup) -> bool:
        """Data file, check, manifest last, record. False when the local file is unusable."""
        file = backup.path.name
        dest = f"{directory}/{file}"
        kind = self._hash_kind(remote, directory)
        local: dict[str, Any] = {}
        # Hash the local file while rclone uploads it: one read, in parallel.
        hasher = threading.Thread(target=_local_hashes,
                                  args=(backup.path, (kind,) if kind else (), local))
        hasher.start()
        try:
            if not backup.path.exists():
                return False  # pruned since the listing: nothing to send
            self.rclone.upload(remote, backup.path, dest, checked_after=True)
        finally:
            hasher.join()
        how = self._check_copy(remote, dest, backup, local)
        if how is None:
            if "sha256" in local and local["sha256"] != backup.manifest.get("sha256"):
                self.rclone.delete(remote, dest)
                return False
            raise OpsError(EX_FAIL, f"{remote}: the copy of {file} differs from the local "
                                    "backup after upload; it is not counted (no manifest "
                                    "was uploaded); the next run uploads it again")
        self.rclone.put(remote, self.manifest_text(backup.manifest).encode(),
                        dest + catalog.MANIFEST_SUFFIX, self.record.path.parent)
        self._remember(directory, backup, how, self.manifest_digests(backup.manifest))
        print(f"Uploaded: {dest} ({catalog.iso_utc(backup.created_at)}, "
              f"{backup.size_bytes} bytes, verified by {how})", flush=True)
        return True

    def _remember(self, directory: str, backup: catalog.Backup, how: str,
                  manifest: dict[str, str] | None = None) -> None:
        """Record a verified copy; ``manifest``: the digests of the manifest uploaded
        with it (None: a copy found on the remote, its manifest's content unknown)."""
        self.record.copies(directory)[backup.path.name] = {
            "sha256": backup.manifest["sha256"], "size_bytes": backup.size_bytes,
            "created_at": catalog.iso_utc(backup.created_at), "verified_by": how,
            "uploaded_at": catalog.iso_utc(time.time()), **(manifest or {})}
        self.record.save()

    # -- the manifest of a copy already there ------------------------------

    def manifest_text(self, manifest: dict[str, Any]) -> str:
        """The manifest as a remote gets it: ``host`` set, one serialisation."""
        return json.dumps({**manifest, "host": self.opts.host}, indent=2, sort_keys=True) + "\n"

    def manifest_digests(self, manifest: dict[str, Any]) -> dict[str, str]:
        """SHA-256 of the manifest text a remote gets, and of that text without
        what the drill adds (catalog.drill_fields: the only change a sync sends
        again on its own): equal second digests mean the manifests differ in
        the drill's records alone."""
        added = catalog.drill_fields(manifest)
        without = {k: v for k, v in manifest.items() if k not in added}
        return {key: hashlib.sha256(self.manifest_text(m).encode()).hexdigest()
                for key, m in (("manifest_sha256", manifest),
                               ("manifest_sha256_without_drill", without))}

    def _update_manifest(self, remote: str, directory: str, backup: catalog.Backup) -> bool:
        """Upload the manifest of a copy already there again, and only it, when the
        drill has since added its integrity_check record to the local one: a restore
        from the remote then trusts that check instead of running it. The same
        upload and read-back check as the first one. Nothing but local hashing when
        the manifest is the one uploaded: the nothing-to-do sync makes no remote call.

        An entry recorded without manifest digests (by an older version, or a copy
        found on the remote unrecorded) cannot say what the remote manifest holds:
        it is sent once if the local one has the drill's record. A manifest that
        changed in anything else is not sent: the copy on the remote was proven
        against the manifest it has (a changed ``sha256`` never gets here: the copy
        no longer counts and the usual upload, with its check of the local file
        against its manifest, takes over)."""
        file = backup.path.name
        copies = self.record.copies(directory)
        entry, manifest = copies[file], backup.manifest
        digests = self.manifest_digests(manifest)
        if entry.get("manifest_sha256") == digests["manifest_sha256"]:
            return False
        dest = f"{directory}/{file}{catalog.MANIFEST_SUFFIX}"
        if "manifest_sha256" not in entry:
            if not _drill_record(manifest):
                return False  # nothing the drill added; what the remote has is as good
        elif (entry.get("manifest_sha256_without_drill")
              != digests["manifest_sha256_without_drill"] or not _drill_record(manifest)):
            self.log(f"warning: {backup.manifest_path} changed since it was uploaded, in "
                     "more than the records a drill adds; it is not sent "
                     f"again: {dest} stays the manifest the copy was verified with (if the "
                     "change is intended, delete that remote manifest and the next sync "
                     "uploads the copy anew)")
            return False
        if self.opts.dry_run:
            print(f"Would update manifest: {dest} (integrity_check recorded by the drill)",
                  flush=True)
            return False
        try:
            self.rclone.put(remote, self.manifest_text(manifest).encode(), dest,
                            self.record.path.parent)
        except OpsError:
            # The remote manifest may now be missing or cut short: the copy counts
            # again only once a sync has checked it.
            del copies[file]
            self.record.save()
            raise
        entry.update(digests)
        self.record.save()
        print(f"Updated manifest: {dest} (integrity_check recorded by the drill)", flush=True)
        return True

    # -- remote retention --------------------------------------------------

    def _retention(self, remote: str, directory: str, listing: dict[str, int],
                   now: float) -> list[str]:
        """Prune this host's and this database's copies with the local rules, by
        their manifests on the remote (catalog.plan_prune, the same code)."""
        cutoff = now - self.opts.retention_days * catalog.DAY
        names = {f: parsed for f in listing
                 if (parsed := catalog.parse_backup_name(f)) and parsed[0] == self.name}
        # The manifests decide (their created_at is a backup's time); the names
        # only say whether any copy can be old enough to bother reading them
        # (a day's margin for a name that disagrees with its manifest).
        if not any(p[1] < cutoff + catalog.DAY for p in names.values()):
            return []
        manifests = self._remote_manifests(remote, directory, listing)
        ours: list[catalog.Backup] = []
        for file, (name, name_time, compression) in names.items():
            backup = catalog.Backup(path=Path(file), name=name, name_time=name_time,
                                    compression=compression, size_bytes=listing[file])
            backup.manifest, backup.manifest_error = manifests.get(
                file + catalog.MANIFEST_SUFFIX, (None, "no manifest"))
            if backup.manifest is None or self._ours(backup.manifest):
                ours.append(backup)  # without a manifest: kept (plan_prune never prunes it)
        plan = catalog.plan_prune(ours, now, self.opts.retention_days, self.opts.keep_min)
        copies = self.record.copies(directory)
        pruned = []
        for backup in plan.prune:
            path = f"{directory}/{backup.path.name}"
            if self.opts.dry_run:
                print(f"Would prune: {path}", flush=True)
                continue
            self.rclone.delete(remote, path)  # data first: an orphan manifest never counts
            self.rclone.delete(remote, path + catalog.MANIFEST_SUFFIX)
            copies.pop(backup.path.name, None)
            self.record.save()
            print(f"Pruned: {path}", flush=True)
            pruned.append(backup.path.name)
        for file, (manifest, _) in manifests.items():
            data = file[: -len(catalog.MANIFEST_SUFFIX)]
            created = catalog.parse_iso_utc((manifest or {}).get("created_at"))
            if (data in listing or manifest is None or not self._ours(manifest)
                    or created is None or created >= cutoff):
                continue
            if self.opts.dry_run:
                print(f"Would prune: {directory}/{file} (a manifest without its backup)")
            else:
                self.rclone.delete(remote, f"{directory}/{file}")
                print(f"Pruned: {directory}/{file} (a manifest without its backup)", flush=True)
        return pruned

    def _ours(self, manifest: dict[str, Any]) -> bool:
        return (manifest.get("host") == self.opts.host and manifest.get("name") == self.name
                and not catalog.from_other_database(manifest, self.opts.db))

    def _remote_manifests(self, remote: str, directory: str, listing: dict[str, int]
                          ) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
        """The remote's manifests of this database, read through the catalog's schema
        check. Kept in BACKUP_DIR/.offsite/manifests/<dir>/ so that a sync fetches
        only new or changed ones (one rclone call)."""
        wanted = [f for f in listing if f.endswith(catalog.MANIFEST_SUFFIX)
                  and (parsed := catalog.parse_backup_name(f[: -len(catalog.MANIFEST_SUFFIX)]))
                  and parsed[0] == self.name]
        cache = (self.record.path.parent / "manifests"
                 / hashlib.sha256(directory.encode()).hexdigest()[:16])
        ensure_private_dir(str(cache.parent))
        ensure_private_dir(str(cache))
        for stale in cache.iterdir():
            if stale.name not in wanted:
                stale.unlink()
        if wanted:
            with tempfile.NamedTemporaryFile("w", dir=cache.parent, encoding="utf-8") as names:
                names.write("".join(f + "\n" for f in wanted))
                names.flush()
                self.rclone.run(remote, "download of the manifests", "copy", "--max-depth",
                                "1", "--files-from-raw", names.name, "--", directory,
                                str(cache))
        return {f: catalog.read_manifest(cache / f) for f in wanted}


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

OFFSITE_METRICS = (
    ("sqlite_offsite_last_success_timestamp_seconds",
     "Time of the last sync that brought this remote up to date."),
    ("sqlite_offsite_newest_backup_timestamp_seconds",
     "Time (from its name) of the newest verified copy on the remote: what a restore "
     "from there would bring back."),
    ("sqlite_offsite_pending_backups",
     "Verified local backups not yet verified on the remote."),
    ("sqlite_offsite_last_run_success", "1 when the last sync to this remote succeeded, else 0."),
)


def metrics_text(name: str, results: list[RemoteResult], now: float) -> str:
    """This run's gauges; a failed remote keeps its last success time (promfile merge)."""
    lines = []
    for metric, help_text in OFFSITE_METRICS:
        samples = []
        for r in results:
            labels = f'db="{escape_label(name)}",remote="{escape_label(r.remote)}"'
            value: float | None
            if metric.endswith("last_success_timestamp_seconds"):
                value = now if r.error is None else None
            elif metric.endswith("newest_backup_timestamp_seconds"):
                value = r.newest if r.newest is not None else 0
            elif metric.endswith("pending_backups"):
                value = r.pending
            else:
                value = 1 if r.error is None else 0
            if value is not None:
                samples.append((labels, f"{value:.0f}"))
        lines += family(metric, help_text, samples)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# list and fetch (restore --from)
# ---------------------------------------------------------------------------


@dataclass
class RemoteCopy:
    file: str
    created_at: float
    size_bytes: int
    manifest: dict[str, Any] | None
    status: str  # "complete", or why it is not

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def remote_copies(rclone: Rclone, remote: str, host: str, name: str,
                  work: Path) -> list[RemoteCopy]:
    """The copies of ``name`` under REMOTE/<host>/<name>/, newest first, with their
    manifests (downloaded into ``work``). Complete: the manifest is there, says
    verified, and names the data file's size."""
    directory, now = remote_dir(remote, host, name), time.time()
    listing = rclone.listing(remote, directory)
    manifests = [f for f in listing if f.endswith(catalog.MANIFEST_SUFFIX)
                 and f[: -len(catalog.MANIFEST_SUFFIX)] in listing]
    if manifests:
        ensure_private_dir(str(work))
        list_file = work / ".manifests"
        list_file.write_text("".join(f + "\n" for f in manifests), encoding="utf-8")
        rclone.run(remote, "download of the manifests", "copy", "--files-from-raw",
                   str(list_file), "--", directory, str(work))
    copies = []
    for file, size in listing.items():
        parsed = catalog.parse_backup_name(file)
        if parsed is None or parsed[0] != name:
            continue
        backup = catalog.Backup(path=Path(file), name=parsed[0], name_time=parsed[1],
                                compression=parsed[2], size_bytes=size)
        backup.manifest, error = catalog.read_manifest(work / (file + catalog.MANIFEST_SUFFIX))
        manifest = backup.manifest
        if manifest is None and error == "no manifest":
            status = "incomplete: no manifest (an upload that did not finish)"
        elif manifest is None:
            status = error or "manifest unreadable"
        elif manifest.get("size_bytes") != size:
            status = f"incomplete: {size} bytes, the manifest says {manifest.get('size_bytes')}"
        elif not backup.verified:
            problem = catalog.manifest_problem(manifest, catalog.NEEDED)
            status = f"manifest incomplete: {problem}" if problem else "not verified"
        elif backup.in_future(now):
            status = "dated in the future (a wrong clock?): never latest"
        else:
            status = "complete"
        copies.append(RemoteCopy(file, backup.created_at, size, manifest, status))
    copies.sort(key=lambda c: (c.created_at, c.file), reverse=True)
    return copies


def fetch(rclone: Rclone, remote: str, host: str, name: str, spec: str, into: Path) -> Path:
    """Download ``spec`` (``latest``: the newest complete copy; or a file name) and
    its manifest into ``into``; returns the local data file. The caller verifies it
    exactly as a local backup."""
    if spec != "latest" and ("/" in spec or catalog.parse_backup_name(spec) is None):
        raise OpsError(EX_USAGE, f"with --from, name a backup file as --list shows it, or "
                                 f"'latest', not {spec!r}")
    copies = remote_copies(rclone, remote, host, name, into / ".manifests")
    directory = remote_dir(remote, host, name)
    if spec == "latest":
        chosen = next((c for c in copies if c.complete), None)
        if chosen is None:
            raise OpsError(EX_USAGE, f"no complete copy of '{name}' in {directory} "
                                     f"({len(copies)} file(s) there); check --host, or "
                                     "--list --from")
    else:
        chosen = next((c for c in copies if c.file == spec), None)
        if chosen is None:
            raise OpsError(EX_USAGE, f"{spec} is not in {directory}; see --list --from")
        if not chosen.complete:
            raise OpsError(EX_VERIFY, f"{directory}/{spec}: {chosen.status}; it is never "
                                      "restored; nothing was changed")
    local = into / chosen.file
    rclone.download(remote, f"{directory}/{chosen.file}", local, chosen.size_bytes)
    shutil.copyfile(into / ".manifests" / (chosen.file + catalog.MANIFEST_SUFFIX),
                    into / (chosen.file + catalog.MANIFEST_SUFFIX))
    return local


def print_copies(copies: list[RemoteCopy], directory: str, as_json: bool) -> None:
    latest = next((c.file for c in copies if c.complete), None)
    if as_json:
        json.dump({"remote_dir": directory, "latest": latest, "backups": [
            {"file": c.file, "created_at": catalog.iso_utc(c.created_at),
             "size_bytes": c.size_bytes, "status": c.status, "latest": c.file == latest,
             "schema_version": (c.manifest or {}).get("schema_version"),
             "host": (c.manifest or {}).get("host"), "source": (c.manifest or {}).get("source")}
            for c in copies]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    now = time.time()
    print(f"Copies in {directory} (newest first; `latest` is marked *):")
    print(f"  {'FILE':<40} {'CREATED (UTC)':<20} {'AGE':>10} {'SIZE':>12}  STATUS")
    for c in copies:
        age = max(now - c.created_at, 0) / 3600
        print(f"{'*' if c.file == latest else ' '} {c.file:<40} "
              f"{catalog.iso_utc(c.created_at).replace('T', ' ')[:19]:<20} {age:>9.1f}h "
              f"{c.size_bytes:>12}  {c.status}")
    if not copies:
        print("  (none)")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> Options:
    remotes = [check_remote(r) for r in args.remote]
    if not remotes:
        raise OpsError(EX_USAGE, "no remote: set OFFSITE_REMOTES or pass --remote")
    return Options(db=os.path.abspath(args.db), backup_dir=args.dir, remotes=remotes,
                   host=check_host(args.host or short_host_name()),
                   retention_days=args.retention_days, keep_min=args.keep,
                   dry_run=getattr(args, "dry_run", False))


def _worst(codes: list[int]) -> int:
    """2 (configuration) > 3 > 1 > 75 (try later) > 0."""
    for code in (EX_USAGE, EX_VERIFY, EX_FAIL, EX_BUSY):
        if code in codes:
            return code
    return EX_OK


def _cmd_sync(args: argparse.Namespace) -> int:
    opts = _options(args)
    if not Path(opts.backup_dir).is_dir():
        raise OpsError(EX_USAGE, f"backup directory not found: {opts.backup_dir} (check --dir "
                                 "or BACKUP_DIR)")
    # One rclone, its connections reused, for the whole run.
    with RcloneDaemon(quiet=args.quiet, prog=args.prog) as rclone:
        syncer = Syncer(opts, rclone, args.prog)
        results = syncer.run()
    now = time.time()
    for r in results:
        if r.error is not None:
            print(f"{args.prog}: {r.error.message}", file=sys.stderr)
        elif not opts.dry_run:
            print(f"Offsite sync completed: {r.directory} ({len(r.uploaded)} uploaded, "
                  f"{r.present} already there, {len(r.pruned)} pruned, {r.pending} pending)")
    if args.metrics_out and not opts.dry_run:
        Path(args.metrics_out).write_text(metrics_text(syncer.name, results, now),
                                          encoding="utf-8")
    return _worst([r.error.code for r in results if r.error is not None])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m sqlite_ops.offsite",
                                     description="Offsite copies of verified backups (rclone).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync")
    p.add_argument("--db", required=True)
    p.add_argument("--remote", action="append", default=[])
    p.add_argument("--host", default="")
    p.add_argument("--dir", required=True)
    p.add_argument("--retention-days", type=int, required=True)
    p.add_argument("--keep", type=int, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--metrics-out", help="write this run's gauges here")
    p.set_defaults(func=_cmd_sync)
    return parser


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop the running rclone too
    name = args.prog = os.environ.get("SQLITE_OPS_PROG", prog)  # who speaks: the script
    try:
        return args.func(args)
    except OpsError as exc:
        return fail(name, exc)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; a copy without its manifest never counts, the next "
              "run finishes it", file=sys.stderr)
        return 130
    except OSError as exc:
        return fail(name, OpsError(EX_FAIL, f"{exc.filename or args.command}: "
                                            f"{exc.strerror or exc}"))


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
