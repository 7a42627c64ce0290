"""The recovery-time targets in one table: every ratio against the compression floor.

    python3 tests/perf/bench_targets.py       # BENCH_MB=800 (default), BENCH_RUNS=3

The floor is `zstd -1 -T0 -c db > out; sync`, measured in the same run on the
same file. Two database shapes: `big` (the benchmark database of
tests/perf/benchlib.py: one wide table, two indexes, WAL) and `app` (five
tables with 4 foreign keys and 6 indexes, WAL), both about BENCH_MB MiB.
Every operation runs the real scripts as an operator would; a writer thread
commits 100 times a second during the "under load" backup and its commit
latency is reported. Peak memory is measured on `big` at BENCH_MB/8 and
BENCH_MB. Prints one Markdown table; asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    REPO,
    SCRIPTS,
    Timing,
    bench_db,
    cached_db,
    file_size,
    machine,
    ops_env,
    peak_rss_kib,
    print_table,
    run_timed,
    timings,
)

sys.path.insert(0, str(REPO / "lib"))

from sqlite_ops import fkcheck, hashing  # noqa: E402

SIZE_MB = int(os.environ.get("BENCH_MB", "800"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BACKUP = str(SCRIPTS / "backup_database.sh")
RESTORE = str(SCRIPTS / "restore_database.sh")

APP_SCHEMA = """
CREATE TABLE devices(id INTEGER PRIMARY KEY, ip TEXT NOT NULL UNIQUE, mac TEXT, vendor TEXT,
                     hostname TEXT, last_seen TEXT);
CREATE TABLE scans(id INTEGER PRIMARY KEY, scan_type TEXT NOT NULL, scan_date TEXT NOT NULL,
                   UNIQUE(scan_type, scan_date));
CREATE TABLE services(id INTEGER PRIMARY KEY, device_id INTEGER NOT NULL REFERENCES devices(id),
                      port INTEGER, protocol TEXT, banner TEXT);
CREATE TABLE network_changes(id INTEGER PRIMARY KEY, device_id INTEGER REFERENCES devices(id),
                             scan_id INTEGER REFERENCES scans(id), change TEXT);
CREATE TABLE vulnerabilities(id INTEGER PRIMARY KEY,
                             service_id INTEGER REFERENCES services(id), cve TEXT, notes TEXT);
CREATE INDEX devices_last_seen ON devices(last_seen);
CREATE INDEX services_device ON services(device_id);
CREATE INDEX changes_device ON network_changes(device_id);
CREATE INDEX changes_scan ON network_changes(scan_id);
CREATE INDEX vulns_service ON vulnerabilities(service_id);
"""  # plus the UNIQUE indexes on devices.ip and scans: 6 indexes with changes_scan


def build_app(tmp: Path) -> None:
    """The `app` shape, filled to about SIZE_MB MiB with related rows."""
    rnd = random.Random(SIZE_MB)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(APP_SCHEMA)
    conn.executemany("INSERT INTO scans(id, scan_type, scan_date) VALUES (?, 'nmap', ?)",
                     [(i, f"2026-{i:06d}") for i in range(1, 1001)])
    device = service = 0
    while tmp.stat().st_size + file_size(f"{tmp}-wal") < SIZE_MB << 20:
        conn.execute("BEGIN")
        for _ in range(5000):
            device += 1
            conn.execute("INSERT INTO devices VALUES (?, ?, ?, 'Cisco', ?, '2026-01-01')",
                         (device, f"10.{device >> 16}.{(device >> 8) & 255}.{device & 255}",
                          f"00:11:{device:08x}", f"host-{device}"))
            for port in (22, 80, 443):
                service += 1
                conn.execute("INSERT INTO services VALUES (?, ?, ?, 'tcp', ?)",
                             (service, device, port, "x" * rnd.randrange(20, 80)))
                if service % 3 == 0:
                    conn.execute("INSERT INTO vulnerabilities(service_id, cve, notes) "
                                 "VALUES (?, 'CVE-2026-0001', ?)", (service, "y" * 60))
            conn.execute("INSERT INTO network_changes(device_id, scan_id, change) "
                         "VALUES (?, ?, 'new')", (device, rnd.randrange(1, 1001)))
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def env_for(db: Path, backups: Path, **extra: str) -> dict[str, str]:
    return ops_env(DB_PATH=str(db), BACKUP_DIR=str(backups), **extra)


class Writer(threading.Thread):
    """Commits one row about 100 times a second; records each commit's latency."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db, self.latencies, self.stop = db, [], threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_writes(id INTEGER PRIMARY KEY, v BLOB)")
        while not self.stop.is_set():
            start = time.perf_counter()
            conn.execute("INSERT INTO bench_writes(v) VALUES (randomblob(100))")
            self.latencies.append(time.perf_counter() - start)
            self.stop.wait(max(0.0, 0.01 - (time.perf_counter() - start)))
        conn.close()


def under_writer(live: Path, env: dict[str, str], before,
                 backup: tuple[str, ...] = (BACKUP, "--quiet")) -> tuple[Timing, float, float, str]:
    """(the seconds of the ``backup`` command, commits/s, p99 commit ms, the
    last backup's snapshot_method) while Writer commits."""
    writer = Writer(live)
    writer.start()
    time.sleep(0.5)
    seconds = timings(list(backup), runs=RUNS, env=env, before=before)
    writer.stop.set()
    writer.join()
    lat = sorted(writer.latencies)
    p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
    manifests = sorted(Path(env["BACKUP_DIR"]).glob("*.manifest.json"))
    method = json.loads(manifests[-1].read_text())["snapshot_method"] if manifests else "-"
    return seconds, len(lat) / (sum(seconds.runs) + 0.5), p99, method


def copy_only_env(env: dict[str, str], work: Path) -> dict[str, str]:
    """``env`` where every backup takes the backup API's temp copy: a
    sitecustomize turns the streaming off. The scripts start Python with -S
    (no site import), so a ``python3`` first on PATH starts it without."""
    site = work / "copy-only"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'lib')!r})\n"
        "from sqlite_ops import snapshot\n"
        "snapshot.stream = lambda *args, **kwargs: None\n", encoding="utf-8")
    shim = site / "python3"
    shim.write_text(f'#!/bin/sh\n[ "$1" = -S ] && shift\nexec {sys.executable} "$@"\n',
                    encoding="utf-8")
    shim.chmod(0o755)
    return {**env, "PYTHONPATH": str(site), "PATH": f"{site}:{env.get('PATH', os.defpath)}"}


def measure(shape: str, source: Path, work: Path) -> tuple[list[list[object]], dict]:
    live, backups = work / f"{shape}.db", work / f"backups-{shape}"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, live)
    env = env_for(live, backups, TMPDIR=str(work))
    out = work / "floor.zst"
    floor = timings(["sh", "-c", 'zstd -q -1 -T0 -c "$1" > "$2"; sync "$2"', "floor",
                         str(live), str(out)], runs=RUNS, env=env)
    out.unlink(missing_ok=True)

    def clear() -> None:
        shutil.rmtree(backups, ignore_errors=True)

    backup_s = timings([BACKUP, "--quiet"], runs=RUNS, env=env, before=clear)
    loaded_s, rate, p99, method = under_writer(live, env, clear)
    # Side by side: the same backups through the backup API's temp copy (the
    # fallback, and the only method before the file was streamed).
    copy_env = copy_only_env(env, work)
    copy_s = timings([BACKUP, "--quiet"], runs=RUNS, env=copy_env, before=clear)
    copy_loaded_s, copy_rate, copy_p99, _ = under_writer(live, copy_env, clear)
    # INTEGRITY_CHECK=drill: quick_check in the backup, the full check in the
    # drill right after, which records it (each drill gets a fresh backup).
    deferred = [BACKUP, "--quiet", "--integrity-check", "drill"]
    drill_mode_s = timings(deferred, runs=RUNS, env=env, before=clear)
    drill_loaded_s, drill_rate, drill_p99, drill_method = under_writer(live, env, clear,
                                                                       tuple(deferred))

    def fresh_deferred_backup() -> None:
        clear()
        subprocess.run(deferred, env=env, check=True, stdout=subprocess.DEVNULL)

    recording_s = timings([RESTORE, "--quiet", "--drill"], runs=RUNS, env=env,
                              before=fresh_deferred_backup)
    clear()
    subprocess.run([BACKUP, "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)

    verify_s = timings([RESTORE, "--quiet", "--verify", "latest"], runs=RUNS, env=env)
    # What any restore of it must do at least: decompress it into a file, synced.
    packed = max(backups.glob("*.zst"), key=lambda p: p.stat().st_mtime)
    unpacked = work / "unpack-floor.db"
    unpack_floor = timings(["sh", "-c", 'zstd -q -d -c "$1" > "$2"; sync "$2"', "unpack",
                                str(packed), str(unpacked)], runs=RUNS, env=env)
    unpacked.unlink(missing_ok=True)
    target = work / "to.db"
    metrics = work / "metrics"

    def recorded_drill() -> float:
        subprocess.run([RESTORE, "--quiet", "--drill", "--metrics-dir", str(metrics)], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        prom = (metrics / f"sqlite_ops_restore_{shape}.prom").read_text()
        found = re.search(r"^sqlite_restore_drill_duration_seconds\{[^}]*\} (\S+)$", prom,
                          re.M)
        return float(found.group(1)) if found else float("nan")

    # --to and the duration the drill records, in turns (a --to, then a drill,
    # RUNS times): the disk's speed drifts within a run, and the two must be
    # measured in the same state to be compared (they run the same steps).
    to_times, drills = [], []
    for _ in range(RUNS):
        target.unlink(missing_ok=True)
        to_times.append(run_timed([RESTORE, "--quiet", "--to", str(target), "latest"], env)[0])
        target.unlink(missing_ok=True)
        drills.append(recorded_drill())
    to_s, drill = Timing(tuple(to_times)), Timing(tuple(drills))
    live_s = timings([RESTORE, "--quiet", "--yes", "latest"], runs=RUNS, env=env)

    def row(what: str, seconds: Timing, target_ratio: float | None = None) -> list[object]:
        r = seconds.median / floor.median
        met = ["", ""] if target_ratio is None else [
            f"<= {target_ratio}x", "yes" if r <= target_ratio else "no"]
        return [shape, what, seconds.median, seconds.spread, f"{r:.2f}x", *met]

    size = live.stat().st_size / 2**20
    within = abs(drill.median / to_s.median - 1) <= 0.10
    rows = [
        row(f"compression floor ({size:.0f} MiB)", floor),
        row("backup, idle", backup_s, 1.6),
        row(f"backup, writer at {rate:.0f} commits/s (p99 commit {p99:.0f} ms; "
            f"snapshot {method})", loaded_s, 1.6),
        row("backup through the backup API's temp copy, idle", copy_s),
        row(f"backup through the temp copy, writer at {copy_rate:.0f} commits/s "
            f"(p99 commit {copy_p99:.0f} ms)", copy_loaded_s),
        row("backup, INTEGRITY_CHECK=drill (quick_check), idle", drill_mode_s, 1.6),
        row(f"backup, INTEGRITY_CHECK=drill, writer at {drill_rate:.0f} commits/s "
            f"(p99 commit {drill_p99:.0f} ms; snapshot {drill_method})", drill_loaded_s, 1.6),
        row("drill that records the check (INTEGRITY_CHECK=drill)", recording_s),
        row("--verify latest", verify_s, 1.0),
        row("decompression floor: zstd -d -c backup > db; sync", unpack_floor),
        row(f"restore --to ({to_s.median / unpack_floor.median:.2f}x the decompression floor)",
            to_s, 1.0),
        row("restore over the live db, safety backup included", live_s, 3.0),
        [shape, "drill's recorded duration vs --to", drill.median, drill.spread,
         f"{drill.median / to_s.median:.2f}x of --to", "within 10 %", "yes" if within else "no"],
    ]
    fk = {}
    conn = sqlite3.connect(live)
    start = time.perf_counter()
    fk["fkcheck"] = fkcheck.check(conn).count
    fk["fkcheck_s"] = time.perf_counter() - start
    start = time.perf_counter()
    fk["pragma"] = len(conn.execute("PRAGMA foreign_key_check").fetchall())
    fk["pragma_s"] = time.perf_counter() - start
    conn.close()
    fk["floor"] = floor.median
    return rows, fk


def children_cpu(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """CPU seconds (user + system) ``cmd`` and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def own_cpu(work) -> float:
    start = time.process_time()  # user + system of this process
    work()
    return time.process_time() - start


def cpu_budget(shape: str, source: Path, work: Path, floor: float) -> list[object]:
    """Where a drill-mode backup's CPU goes: each part it cannot do without,
    alone, and what their sum allows on this machine's cores at best (the
    foreign-key count is the drill's, not the backup's: beside, not summed)."""
    live, backups = work / f"{shape}-cpu.db", work / f"backups-{shape}-cpu"
    shutil.copyfile(source, live)
    env = env_for(live, backups, TMPDIR=str(work))
    compress = statistics.median(
        children_cpu(["zstd", "-q", "-1", "-T0", "-c", "-o", os.devnull, str(live)])
        for _ in range(RUNS))
    conn = sqlite3.connect(f"file:{live}?mode=ro", uri=True, isolation_level=None)
    quick = own_cpu(lambda: conn.execute("PRAGMA quick_check").fetchall())
    fks = own_cpu(lambda: fkcheck.check(conn))
    conn.close()
    digest = own_cpu(lambda: hashing.sha256_file(live))
    parts = compress + quick + digest
    cores = os.cpu_count() or 1

    def drill_mode_backup() -> float:
        shutil.rmtree(backups, ignore_errors=True)
        return children_cpu([BACKUP, "--quiet", "--integrity-check", "drill"], env)

    backup = statistics.median(drill_mode_backup() for _ in range(RUNS))
    live.unlink(missing_ok=True)
    shutil.rmtree(backups, ignore_errors=True)
    return [shape, compress, quick, digest, parts, f"{parts / cores / floor:.2f}x",
            backup, f"{backup / cores / floor:.2f}x", fks]


def rollback_under_load(source: Path, work: Path) -> list[list[object]]:
    """The backup of `big` in rollback-journal mode while the writer commits: it
    completes; the writer waits for the snapshot's shared lock (its p99 says how long)."""
    live, backups = work / "rollback.db", work / "backups-rollback"
    shutil.copyfile(source, live)
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    conn.close()
    env = env_for(live, backups, TMPDIR=str(work))
    writer = Writer(live)
    writer.start()
    time.sleep(0.5)
    seconds = timings([BACKUP, "--quiet"], runs=RUNS, env=env,
                      before=lambda: shutil.rmtree(backups, ignore_errors=True))
    writer.stop.set()
    writer.join()
    lat = sorted(writer.latencies)
    p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
    live.unlink(missing_ok=True)
    shutil.rmtree(backups, ignore_errors=True)
    return [["big", f"backup in rollback-journal mode under the writer (p99 commit {p99:.0f} ms)",
             seconds.median, seconds.spread, "", "completes", "yes"]]


def memory(work: Path) -> list[list[object]]:
    small = max(SIZE_MB // 8, 10)
    rows = []
    peaks = {}
    for size in (small, SIZE_MB):
        source = bench_db(size)
        live, backups = work / f"mem{size}.db", work / f"backups-mem{size}"
        shutil.copyfile(source, live)
        env = env_for(live, backups, TMPDIR=str(work))
        peaks[(size, "backup")] = peak_rss_kib([BACKUP, "--quiet"], env) / 1024
        target = work / f"mem{size}-to.db"
        peaks[(size, "to")] = peak_rss_kib([RESTORE, "--quiet", "--to", str(target), "latest"],
                                           env) / 1024
        for path in (live, target):
            path.unlink(missing_ok=True)
        shutil.rmtree(backups, ignore_errors=True)
    for op, what in (("backup", "backup peak RSS"), ("to", "restore --to peak RSS")):
        a, b = peaks[(small, op)], peaks[(SIZE_MB, op)]
        rows.append(["big", f"{what}, {small} MB -> {SIZE_MB} MB", f"{a:.1f} -> {b:.1f} MiB",
                     "", f"{b / a:.2f}x", "flat", "yes" if b / a <= 1.25 else "no"])
    return rows


def main() -> int:
    big = bench_db(SIZE_MB)
    app = cached_db(f"bench_app_{SIZE_MB}mb.db", build_app)
    work = Path(tempfile.mkdtemp(prefix="bench-targets-", dir=big.parent))
    try:
        rows, fks, budget = [], {}, []
        for shape, source in (("big", big), ("app", app)):
            found, fks[shape] = measure(shape, source, work)
            rows += found
            budget.append(cpu_budget(shape, source, work, fks[shape]["floor"]))
        rows += rollback_under_load(big, work)
        rows += memory(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}")
    print(f"BENCH_MB={SIZE_MB}, median of {RUNS} runs per row, warm page cache")
    print_table("Recovery-time targets (ratios against the compression floor)",
                ["db", "operation", "seconds", "runs, s", "vs floor", "target", "met?"],
                rows)
    print_table("Foreign-key check: sqlite_ops.fkcheck against PRAGMA foreign_key_check",
                ["db", "fkcheck s", "PRAGMA s", "speed-up", "same count?"],
                [[shape, f["fkcheck_s"], f["pragma_s"],
                  f"{f['pragma_s'] / max(f['fkcheck_s'], 1e-9):.1f}x",
                  "yes" if f["fkcheck"] == f["pragma"] else "NO"]
                 for shape, f in fks.items()])
    print_table(f"CPU of a drill-mode backup's parts, alone (s, user + system; "
                f"{os.cpu_count()} cores; bound = CPU / cores / compression floor)",
                ["db", "zstd -1 -T0", "quick_check", "SHA-256", "sum of parts",
                 "bound, parts", "backup's CPU", "bound, backup", "(the drill's FK count)"],
                budget)
    print(f"\nCommand: BENCH_MB={SIZE_MB} BENCH_RUNS={RUNS} python3 tests/perf/bench_targets.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
