"""lib/sqlite_ops/common.py: configuration, the shared lock, and the small helpers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from opsenv import (
    blob_db,
    content_digest,
    in_a_pid_namespace_of_its_own,
    kill_writer_mid_transaction,
    seen_as_from_a_pid_namespace_of_its_own,
)

from sqlite_ops import common
from sqlite_ops.common import (
    EX_BUSY,
    EX_USAGE,
    LOCK_HELD_ENV,
    OpsError,
    OpsLock,
    Settings,
    dir_problem,
    fail,
    free_bytes,
    hot_journal,
    is_sqlite_file,
    lock_path_for,
    parse_config_file,
    quote_ident,
    readonly_uri,
    require_regular_file,
    roll_back_hot_journal,
    sqlite_error_code,
)


def test_config_file_is_parsed_as_data(tmp_path):
    conf = tmp_path / "ops.conf"
    conf.write_text("# comment\n\nexport DB_PATH='/a b/c.db'\nKEEP_MIN=\"3\"\nX=$(rm -rf /)\n")
    assert parse_config_file(conf) == {"DB_PATH": "/a b/c.db", "KEEP_MIN": "3",
                                       "X": "$(rm -rf /)"}


def test_malformed_config_line_is_a_usage_error(tmp_path):
    conf = tmp_path / "ops.conf"
    conf.write_text("KEEP_MIN=3\nnot a setting\n")
    with pytest.raises(OpsError) as raised:
        parse_config_file(conf)
    assert raised.value.code == EX_USAGE and "line 2" in raised.value.message


def test_precedence_flag_env_file_default(tmp_path, monkeypatch):
    conf = tmp_path / "ops.conf"
    conf.write_text("DB_PATH=/file.db\nKEEP_MIN=9\nRETENTION_DAYS=12\n")
    monkeypatch.setenv("KEEP_MIN", "5")
    monkeypatch.delenv("RETENTION_DAYS", raising=False)
    monkeypatch.delenv("LOCK_TIMEOUT", raising=False)
    settings = Settings({"DB_PATH": "/flag.db", "BACKUP_DIR": None}, str(conf))
    assert settings.get("DB_PATH") == "/flag.db"
    assert settings.get("KEEP_MIN") == "5"
    assert settings.get("RETENTION_DAYS") == "12"
    assert settings.get_int("LOCK_TIMEOUT") == 0


def test_an_unknown_config_setting_is_warned_about(tmp_path, capsys):
    conf = tmp_path / "ops.conf"
    conf.write_text("DB_PATH=/a.db\nBACKUPDIR=/typo\n")
    settings = Settings({}, str(conf), prog="migrate")
    assert settings.get("DB_PATH") == "/a.db"
    err = capsys.readouterr().err
    assert err.startswith(f"migrate: warning: config file {conf}: unknown setting BACKUPDIR")
    assert err.count("\n") == 1


def test_both_layers_know_the_same_config_settings():
    """lib/common.sh and common.py must agree on what a config file may hold,
    and the operator's guide documents each of them."""
    text = (common.REPO_ROOT / "lib" / "common.sh").read_text()
    bash_keys = text.split('SOPS_CONFIG_KEYS="', 1)[1].split('"', 1)[0].split()
    assert bash_keys == list(common.CONFIG_KEYS)
    guide = (common.REPO_ROOT / "docs" / "operations" / "database-management.md").read_text()
    for key in common.CONFIG_KEYS:
        assert f"| `{key}` |" in guide, f"{key} is missing from the configuration table"


def test_both_layers_have_the_same_defaults():
    """lib/common.sh's SOPS_DEFAULTS and common.py's are one table in two languages."""
    out = subprocess.run(
        ["bash", "-c", 'source lib/common.sh && for k in "${!SOPS_DEFAULTS[@]}"; do '
                       'printf "%s=%s\\n" "$k" "${SOPS_DEFAULTS[$k]}"; done'],
        cwd=common.REPO_ROOT, capture_output=True, text=True, check=True).stdout
    bash = dict(line.split("=", 1) for line in out.splitlines())
    bash["MIGRATIONS_DIR"] = os.path.realpath(bash["MIGRATIONS_DIR"])
    assert bash == common.SOPS_DEFAULTS
    followed = {*common.SOPS_DEFAULTS, *common.SOPS_DEFAULT_FROM, "COMPRESS"}
    assert followed == set(common.CONFIG_KEYS)


def test_both_layers_refuse_a_file_that_is_not_sqlite_in_the_same_words(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(common.OpsError) as python:
        common.require_database(text)
    proc = subprocess.run(["bash", "-c", 'source lib/common.sh && PROG=x && require_database "$1"',
                           "bash", str(text)], cwd=common.REPO_ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == python.value.code == common.EX_USAGE
    assert python.value.message.endswith(common.NOT_SQLITE_HINT)
    assert proc.stderr.strip().endswith(python.value.message)


def test_defaults_come_from_the_table_or_the_setting_they_follow(monkeypatch):
    for key in common.CONFIG_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SQLITE_OPS_CONFIG", os.devnull)
    monkeypatch.setenv("PATH", os.devnull)  # no zstd to be found
    settings = Settings({"KEEP_MIN": "3"})
    assert settings.get("INTEGRITY_CHECK") == "backup"
    assert settings.get_int("OFFSITE_KEEP_MIN") == 3
    assert settings.get_int("OFFSITE_RETENTION_DAYS") == 30
    assert settings.get("COMPRESS") == "gzip"


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "\u00b2"])
def test_a_setting_that_is_not_a_whole_number_is_a_usage_error(monkeypatch, value):
    # "-1" as well, as lib/common.sh's require_uint says (it once passed here).
    monkeypatch.setenv("LOCK_TIMEOUT", value)
    monkeypatch.setenv("SQLITE_OPS_CONFIG", os.devnull)
    with pytest.raises(OpsError) as raised:
        Settings({}).get_int("LOCK_TIMEOUT")
    assert raised.value.code == EX_USAGE
    assert raised.value.message == f"LOCK_TIMEOUT must be a whole number, not {value!r}"


def test_lock_is_exclusive_while_held_and_free_after(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    db = tmp_path / "a.db"
    probe = ["flock", "--nonblock", lock_path_for(db), "true"]
    with OpsLock(db, what="first"):
        assert subprocess.run(probe).returncode == 1  # the bash side sees it taken
    assert subprocess.run(probe).returncode == 0


def test_a_lock_holder_of_another_pid_namespace_is_said_to_be_one():
    """A pid recorded by a run in a container beside this one is not this
    namespace's process of that number: an operator must not kill that one."""
    here = common._pid_namespace()
    assert common.holder_text(f"4242 migrate {here}\n") == " (pid 4242 migrate)"
    assert common.holder_text("4242 migrate pid:[1]") == (
        " (pid 4242 migrate, in another PID namespace: a container or the host, where that "
        "number is not this one's process)")
    assert common.holder_text("4242 migrate") == " (pid 4242 migrate)"  # an older run's record
    assert common.holder_text("") == ""


def test_lock_held_by_another_process_gives_75_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    db = tmp_path / "a.db"
    holder = subprocess.Popen(["flock", lock_path_for(db), "sleep", "5"])
    try:
        probe = ["flock", "--nonblock", lock_path_for(db), "true"]
        deadline = time.monotonic() + 10
        while subprocess.run(probe).returncode == 0:  # until the holder has it
            assert time.monotonic() < deadline, "flock never took the lock"
            time.sleep(0.05)
        with pytest.raises(OpsError) as raised:
            with OpsLock(db, timeout=0.3):
                pass
        assert raised.value.code == EX_BUSY
        assert "LOCK_TIMEOUT" in raised.value.message
        # The database, as lib/common.sh's lock_acquire says it: not the lock file.
        assert f"holds the lock on {db};" in raised.value.message
    finally:
        holder.kill()
        holder.wait()


def test_child_of_a_lock_holder_does_not_deadlock(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    db = tmp_path / "a.db"
    with OpsLock(db):
        assert os.environ[LOCK_HELD_ENV] == lock_path_for(db)
        with OpsLock(db):  # what a nested run (backup from migrate) does
            pass
    assert LOCK_HELD_ENV not in os.environ


def test_symlinked_database_shares_the_lock(tmp_path):
    real = tmp_path / "real.db"
    real.touch()
    (tmp_path / "links").mkdir()
    alias = tmp_path / "links" / "alias.db"
    alias.symlink_to(real)
    assert lock_path_for(alias) == lock_path_for(real) == f"{real}.sqlite-ops.lock"


@pytest.mark.parametrize("name", ["plain.db", "with space.db", "it's.db", "q?x#y%z.db",
                                  "new\nline.db", "ünïcode.db"])
def test_readonly_uri_opens_awkward_paths_read_only(tmp_path, name):
    db = tmp_path / name
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    ro = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        assert ro.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO t VALUES (1)")
    finally:
        ro.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_quote_ident_handles_spaces_and_quotes():
    conn = sqlite3.connect(":memory:")
    name = 'Order "Details"'
    conn.execute(f"CREATE TABLE {quote_ident(name)}(x)")
    conn.execute(f"INSERT INTO {quote_ident(name)} VALUES (1)")
    assert conn.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone() == (1,)


def test_is_sqlite_file(tmp_path):
    db = tmp_path / "a.db"
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.commit()
    (tmp_path / "text").write_text("hello")
    (tmp_path / "empty").touch()
    assert is_sqlite_file(db)
    assert not is_sqlite_file(tmp_path / "text")
    assert not is_sqlite_file(tmp_path / "empty")
    assert not is_sqlite_file(tmp_path / "missing")


def test_free_bytes_leaves_out_the_blocks_reserved_for_root(tmp_path, monkeypatch):
    fake = os.statvfs_result((4096, 4096, 1000, 900, 40, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)  # f_bfree 900, f_bavail 40
    assert free_bytes(tmp_path) == 40 * 4096


def test_free_bytes_of_a_missing_directory_is_unknown(tmp_path):
    assert free_bytes(tmp_path / "missing") is None


def _sqlite_error(run) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as raised:
        run()
    return raised.value


def test_sqlite_errors_get_the_contracts_codes(tmp_path):
    db = tmp_path / "a.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t(x)")
    holder.execute("BEGIN EXCLUSIVE")
    reader = sqlite3.connect(db, timeout=0)
    assert sqlite_error_code(_sqlite_error(
        lambda: reader.execute("SELECT * FROM t").fetchall())) == common.EX_BUSY
    holder.execute("ROLLBACK")
    assert sqlite_error_code(_sqlite_error(
        lambda: reader.execute("SELECT * FROM nope"))) == common.EX_FAIL
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(common.SQLITE_HEADER + bytes(range(256)) * 64)
    assert sqlite_error_code(_sqlite_error(
        lambda: sqlite3.connect(damaged).execute("SELECT * FROM sqlite_master").fetchall())
    ) == common.EX_INTEGRITY
    # Raised by our own code, with no result code: SQLite's words decide.
    assert sqlite_error_code(sqlite3.OperationalError("database is locked")) == common.EX_BUSY
    assert sqlite_error_code(
        sqlite3.DatabaseError("database disk image is malformed")) == common.EX_INTEGRITY


def test_fail_prints_one_line_even_with_a_newline(capsys):
    code = fail("prog", OpsError(3, "bad backup /x/odd\nname.db"))
    assert code == 3
    assert capsys.readouterr().err == "prog: bad backup /x/odd\\nname.db\n"


def test_repo_root_is_the_checkout():
    assert (common.REPO_ROOT / "lib" / "sqlite_ops" / "common.py").is_file()
    assert common.SOPS_DEFAULTS["MIGRATIONS_DIR"] == str(common.REPO_ROOT / "migrations")


def test_importing_common_stays_light():
    """The migrate no-op imports common on every deploy: no pathlib, no urllib."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, 'lib'); import sqlite_ops.common;"
         "print(sorted(m for m in ('pathlib', 'urllib.parse', 'json') if m in sys.modules))"],
        cwd=common.REPO_ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "[]"


# --- Hostile files at the lock's path ------------------------------------------


@pytest.mark.parametrize("plant", ["symlink", "dangling symlink", "hard link", "fifo", "directory"])
def test_lock_never_opens_what_was_planted_at_its_path(tmp_path, monkeypatch, plant):
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    db = tmp_path / "a.db"
    db.touch()
    lock = tmp_path / "a.db.sqlite-ops.lock"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "dangling symlink":
        victim.unlink()
        lock.symlink_to(victim)
    elif plant == "hard link":
        os.link(victim, lock)
    elif plant == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(OpsError) as caught:
        with OpsLock(db, what="test"):
            pass
    assert caught.value.code == EX_USAGE
    assert caught.value.message.startswith(f"refusing to use lock file {lock}: ")
    if plant == "dangling symlink":
        assert not victim.exists()
    elif plant in ("symlink", "hard link"):
        assert victim.read_text() == "precious\n"
    assert LOCK_HELD_ENV not in os.environ


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files owned by another user")
def test_lock_file_of_a_stranger_is_refused_the_database_owners_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    db = tmp_path / "a.db"
    db.touch()
    lock = tmp_path / "a.db.sqlite-ops.lock"
    lock.touch()
    os.chown(lock, 65534, 65534)
    with pytest.raises(OpsError, match="owned by uid 65534"):
        with OpsLock(db):
            pass
    os.chown(db, 65534, 65534)  # the application's user owns the database and its lock
    with OpsLock(db, what="root's cron"):
        assert lock.read_text() == f"{os.getpid()} root's cron {common._pid_namespace()}\n"


def test_require_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name in ("fifo", "dir"):
        with pytest.raises(OpsError) as caught:
            require_regular_file(tmp_path / name)
        assert caught.value.code == EX_USAGE
        assert caught.value.message == f"not a regular file: {tmp_path / name}"
    (tmp_path / "file").touch()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    require_regular_file(tmp_path / "link")
    require_regular_file(tmp_path / "missing")  # each caller says what missing means


def test_dir_problem(tmp_path):
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "private").mkdir(mode=0o700)
    assert dir_problem(tmp_path / "open") == "writable by other users (mode 777)"
    assert dir_problem(tmp_path / "private") == ""
    assert dir_problem("/") == ""


def test_roll_back_hot_journal_restores_the_last_committed_state(tmp_path):
    db = blob_db(tmp_path / "a.db", 1000)
    committed = content_digest(db)
    assert roll_back_hot_journal(db) is False  # no journal: nothing opened
    kill_writer_mid_transaction(db)
    assert roll_back_hot_journal(db) is True
    assert not os.path.exists(f"{db}-journal")
    assert content_digest(db) == committed  # every row as committed, none of the killed ones


def test_a_lock_taken_on_a_full_disk_still_locks(tmp_path, monkeypatch):
    """Writing who holds the lock is a courtesy to the next run's message: a
    full disk loses only that, never the lock (it said "No space left on
    device" and nothing else, before the free-space check could say more)."""
    import errno

    db = tmp_path / "a.db"
    db.write_bytes(b"")
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)
    monkeypatch.setattr(os, "write", full)
    with OpsLock(str(db), what="restore"):
        monkeypatch.setattr(os, "write", real_write)
        probe = subprocess.run(["flock", "-n", lock_path_for(str(db)), "true"])
        assert probe.returncode == 1  # held


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX if sys.argv[2] == "write" else fcntl.LOCK_SH, 1, int(sys.argv[3]))
print("ready", flush=True)
time.sleep(600)
"""

# (kind of lock another process holds, on which byte, whether a journal stays hot)
LOCK_CASES = [
    ("read", 0x40000000, True),    # a reader taking its shared lock: the journal stays hot
    ("write", 0x40000000, False),  # PENDING as a writer holds it
    ("read", 0x40000001, False),   # RESERVED of any kind: a live writer
    ("write", 0x40000001, False),
]


@contextlib.contextmanager
def held_by_another_process(db, kind: str, byte: int):
    """Another process holds a ``kind`` ("read" or "write") lock on ``byte`` of ``db``."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), kind, str(byte)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline() == "ready\n"
        yield
    finally:
        locker.kill()
        locker.wait()
        locker.stdout.close()


@pytest.mark.parametrize("kind, byte, hot", LOCK_CASES)
def test_a_journal_is_hot_unless_a_writer_holds_reserved_or_pending(tmp_path, kind, byte, hot):
    db = blob_db(tmp_path / "a.db", 1000)
    kill_writer_mid_transaction(db)
    assert hot_journal(db)  # a killed writer's, and nobody holds a lock
    with held_by_another_process(db, kind, byte):
        assert hot_journal(db) is hot


@pytest.mark.parametrize("kind, byte, hot", LOCK_CASES)
def test_a_writer_in_another_pid_namespace_keeps_its_journal_live(tmp_path, kind, byte, hot):
    """A backup run from a sidecar container, whose /proc lists none of the
    application's locks: the kernel still answers F_GETLK for every process,
    so a live writer's journal is not taken for a killed one's (which a backup
    would report as "rolled back the hot journal" after the writer's commit)."""
    db = blob_db(tmp_path / "a.db", 1000)
    kill_writer_mid_transaction(db)
    with held_by_another_process(db, kind, byte):
        seen = in_a_pid_namespace_of_its_own(
            [sys.executable, "-c", "import os, sys\n"
             "from sqlite_ops.common import _listed_locks, hot_journal\n"
             "print(len(_listed_locks(os.stat(sys.argv[1]).st_ino)), hot_journal(sys.argv[1]))",
             str(db)], dict(os.environ, PYTHONPATH=common.REPO_ROOT_STR + "/lib"))
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == ["0", str(hot)]  # /proc/locks listed nothing; F_GETLK saw it


RESERVED = [(common.RESERVED_BYTE, 1, False)]


@pytest.mark.parametrize("kind, byte, hot", LOCK_CASES)
def test_a_writer_that_proc_locks_does_not_list_keeps_its_journal_live(tmp_path, monkeypatch,
                                                                       kind, byte, hot):
    """The same, without making a namespace (which a container may forbid):
    /proc/locks lists none of the locker's locks; F_GETLK still sees them."""
    db = blob_db(tmp_path / "a.db", 1000)
    kill_writer_mid_transaction(db)
    seen_as_from_a_pid_namespace_of_its_own(monkeypatch)
    with held_by_another_process(db, kind, byte):
        assert common._listed_locks(os.stat(db).st_ino) == []
        assert hot_journal(db) is hot


def test_locks_are_not_asked_when_this_process_locks_cannot_be_listed(tmp_path, monkeypatch):
    """Without /proc/locks this process's own locks are unknown, and asking
    could drop them: no answer rather than a guess."""
    db = blob_db(tmp_path / "a.db", 10)
    monkeypatch.setattr(common, "_listed_locks", lambda inode: None)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert common.locks_held(str(db), RESERVED) is None
    assert common.writer_lock_held(str(db)) is None
    assert opened == []


def test_a_lock_is_asked_through_a_symlink_and_never_of_a_fifo(tmp_path):
    """DB_PATH is often a symlink into a volume: its locks are the target's. A
    FIFO planted at a path is no database, and opening it must not hang."""
    db = blob_db(tmp_path / "a.db", 10)
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with held_by_another_process(db, "write", common.RESERVED_BYTE):
        assert common.locks_held(str(link), RESERVED) is True
        assert common.writer_lock_held(str(link)) is True
    assert common.locks_held(str(link), RESERVED) is False
    os.mkfifo(tmp_path / "fifo")
    assert common.locks_held(str(tmp_path / "fifo"), [(0, 0, False)]) is None


def test_asking_for_locks_never_drops_this_process_own(tmp_path):
    """Closing a second descriptor of a file drops every POSIX lock this
    process holds on it: asking F_GETLK while one of this process's
    connections holds a lock must not, or another process could then
    checkpoint away the WAL it is reading."""
    db = blob_db(tmp_path / "a.db", 100)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM t").fetchone()  # a read lock, held
        inode = os.stat(db).st_ino
        before = [lock for lock in common._listed_locks(inode) if lock[0] == os.getpid()]
        assert before
        assert common.locks_held(str(db), RESERVED) is None  # not asked: not known of all
        assert common.writer_lock_held(str(db)) is None
        after = [lock for lock in common._listed_locks(inode) if lock[0] == os.getpid()]
        assert after == before
        conn.execute("COMMIT")
    finally:
        conn.close()
