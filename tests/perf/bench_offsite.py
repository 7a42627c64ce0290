"""Benchmark: offsite_sync.sh to a loopback SFTP server, against a bare `rclone copyto`.

    python3 tests/perf/bench_offsite.py          # OFFSITE_BENCH_MB=800 for the full size

1. One backup of about OFFSITE_BENCH_MB MiB (default 150, uncompressible
   content so the file is that big) synced to an OpenSSH sshd on 127.0.0.1
   through rclone's sftp backend (one `rclone rcd` for the run: listing,
   upload, sha1 check of the copy against the local file, manifest read back,
   record), next to a bare `rclone copyto` of the same file to the same server
   (which has the server hash the copy too, md5): median of 3 each.
2. 100 small backups: the first sync (the catch-up after an outage: 100 uploads,
   each checked), then a sync with nothing to do (median of 5).

Needs rclone and sshd (tests/install_test_tools.sh). Prints Markdown tables;
asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, SCRIPTS, machine, print_table, run_timed  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "python"))
sys.path.insert(0, str(REPO / "lib"))

import sftpserver  # noqa: E402
from sftpserver import SSHServer  # noqa: E402

from sqlite_ops import catalog  # noqa: E402

SIZE_MB = int(os.environ.get("OFFSITE_BENCH_MB", "150"))
SYNC = str(SCRIPTS / "offsite_sync.sh")


def build_db(path: Path, size_mb: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    chunk = 1 << 20
    for _ in range(size_mb):
        conn.execute("INSERT INTO blobs(data) VALUES (?)", (os.urandom(chunk),))
    conn.commit()
    conn.close()


def backup(env: dict[str, str]) -> Path:
    out = subprocess.run([str(SCRIPTS / "backup_database.sh"), "--quiet"], env=env,
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().rsplit("Backup completed: ", 1)[1])


def clone_backup(backup_path: Path, days_ago: float) -> None:
    """Another backup of the same content, named ``days_ago`` earlier."""
    name, created, compression = catalog.parse_backup_name(backup_path.name)
    new = backup_path.with_name(catalog.backup_file_name(name, created - days_ago * 86400,
                                                         compression))
    shutil.copyfile(backup_path, new)
    manifest = json.loads(Path(str(backup_path) + ".manifest.json").read_text())
    manifest["file"] = new.name
    manifest["created_at"] = catalog.iso_utc(created - days_ago * 86400)
    Path(str(new) + ".manifest.json").write_text(json.dumps(manifest))


def forget_copies(backup_dir: Path) -> None:
    """The record without its copies (so the next sync uploads again), keeping what
    it learnt once about the backend (its hash types), as an hourly sync would."""
    for record in (backup_dir / ".offsite").glob("*.json"):
        data = json.loads(record.read_text())
        data["remotes"] = {}
        record.write_text(json.dumps(data))


def main() -> int:
    missing = [tool for tool in ("rclone", "ssh-keygen") if not shutil.which(tool)]
    if missing or not Path(sftpserver.SSHD).exists():
        print(f"bench_offsite: skipped: {' '.join(missing) or 'sshd'} not installed "
              "(tests/install_test_tools.sh installs rclone and openssh-server)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-offsite-"))
    server = SSHServer(work / "sshd").start()
    try:
        store = work / "store"
        store.mkdir()
        db = work / "big.db"
        build_db(db, SIZE_MB)
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "SQLITE_OPS_CONFIG": "/dev/null",
               "DB_PATH": str(db), "BACKUP_DIR": str(work / "backups"), "COMPRESS": "none",
               "OFFSITE_HOST": "bench", "RCLONE_CONFIG": "/dev/null", **server.rclone_env("nas")}
        big = backup(env)
        size = big.stat().st_size
        copy_times, sync_times = [], []
        for run in range(4):
            bare = store / f"bare-{run}"
            copy_times.append(run_timed(["rclone", "copyto", str(big), f"nas:{bare}"], env)[0])
            bare.unlink()
            shutil.rmtree(store / "bench", ignore_errors=True)
            forget_copies(work / "backups")
            sync_times.append(run_timed([SYNC, "--quiet", "--remote", f"nas:{store}"], env)[0])
        call_s = statistics.median(run_timed(["rclone", "lsjson", f"nas:{store}"], env)[0]
                                   for _ in range(3))
        # The first sync ever also asks the backend which hashes it has.
        copy_s, sync_s = statistics.median(copy_times), statistics.median(sync_times[1:])
        print(f"Machine: {machine()}; rclone to OpenSSH sshd on 127.0.0.1 (sftp)")
        print_table(f"One backup of {size / 2**20:.0f} MiB to loopback SFTP (median of 3)",
                    ["operation", "seconds", "MiB/s", "ratio"],
                    [["bare `rclone copyto`", copy_s, size / 2**20 / copy_s, 1.0],
                     ["`offsite_sync.sh` (one rclone: listing, upload, sha1 check, manifest)",
                      sync_s, size / 2**20 / sync_s, sync_s / copy_s],
                     ["`offsite_sync.sh`, the first ever (also asks for the hash types)",
                      sync_times[0], size / 2**20 / sync_times[0], sync_times[0] / copy_s],
                     ["one rclone call with nothing to move (`lsjson` of the directory)",
                      call_s, "", call_s / copy_s]])

        # 100 small backups already on the remote: the no-op sync.
        small_db = work / "small" / "dash.db"
        small_db.parent.mkdir()
        conn = sqlite3.connect(small_db)
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.close()
        small_env = {**env, "DB_PATH": str(small_db), "BACKUP_DIR": str(work / "small-backups"),
                     "COMPRESS": "gzip", "RETENTION_DAYS": "400", "KEEP_MIN": "200"}
        first = backup(small_env)
        for day in range(1, 100):
            clone_backup(first, day)
        start = time.perf_counter()
        run_timed([SYNC, "--quiet", "--remote", f"nas:{store}"], small_env)
        initial = time.perf_counter() - start
        noop = statistics.median(run_timed([SYNC, "--quiet", "--remote", f"nas:{store}"],
                                           small_env)[0] for _ in range(5))
        print_table("100 backups (median of 5 for the no-op)", ["operation", "seconds"],
                    [["first sync (catch-up): 100 uploads, each checked", initial],
                     ["sync with nothing to do", noop]])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
