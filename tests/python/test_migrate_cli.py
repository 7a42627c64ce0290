"""The migrate command line, run for real as a subprocess: output, exit codes, concurrency."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sqlite_ops.common import EX_BUSY, EX_FAIL, EX_OK, EX_USAGE, EX_VERIFY, REPO_ROOT, OpsError
from sqlite_ops.migrate_cli import COMMANDS, parse_args

MIGRATE = REPO_ROOT / "scripts" / "migrate"

pytestmark = pytest.mark.usefixtures("isolated_ops_env")


def migrate(*args: str, env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DB_PATH", "MIGRATIONS_DIR", "LOCK_TIMEOUT")}
    full_env["SQLITE_OPS_CONFIG"] = os.devnull
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(MIGRATE), *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("migrate: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr


def recorded(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


@pytest.fixture
def world(tmp_path, make_migrations):
    """A migrations directory with two migrations and the path of a database to be."""
    migrations = make_migrations({
        "001_devices.sql": "-- migrate:up\nCREATE TABLE devices (id INTEGER PRIMARY KEY);\n"
                           "-- migrate:down\nDROP TABLE devices;\n",
        "002_services.sql": "-- migrate:up\nCREATE TABLE services (id INTEGER PRIMARY KEY);\n"
                            "-- migrate:down\nDROP TABLE services;\n",
    })
    return tmp_path / "d.db", migrations


# ----------------------------------------------------------------------- parsing


def test_global_options_before_and_after_the_command():
    before = parse_args(["--db", "x.db", "--migrations=m", "up", "--to", "3", "--dry-run"])
    after = parse_args(["up", "--dry-run", "--db=x.db", "--to=3", "--migrations", "m"])
    for args in (before, after):
        assert args.command == "up"
        assert args.settings == {"DB_PATH": "x.db", "MIGRATIONS_DIR": "m"}
        assert args.options == {"--to": "3", "--dry-run": True}


@pytest.mark.parametrize("argv, message", [
    ([], "no command"),
    (["upp"], "unknown command"),
    (["up", "--steps", "1"], "unknown option --steps for 'up'"),
    (["status", "--json=yes"], "takes no value"),
    (["up", "--to"], "--to needs a value"),
    (["new"], "needs exactly one argument"),
    (["validate", "extra"], "unexpected argument"),
])
def test_bad_arguments_are_usage_errors(argv, message):
    with pytest.raises(OpsError) as raised:
        parse_args(argv)
    assert raised.value.code == EX_USAGE and message in raised.value.message


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command):
    proc = migrate(command, "--help")
    assert proc.returncode == EX_OK and proc.stdout.startswith(f"usage: migrate {command}")
    assert proc.stderr == ""


def test_top_level_help_lists_every_command():
    proc = migrate("--help")
    assert proc.returncode == EX_OK
    for command in COMMANDS:
        assert f"\n  {command} " in proc.stdout


def test_unknown_option_is_exit_2_with_one_line(world):
    db, migrations = world
    proc = migrate("--db", str(db), "--migrations", str(migrations), "up", "--bogus")
    assert proc.returncode == EX_USAGE
    assert_one_error_line(proc, "--bogus")
    assert not db.exists()


# ----------------------------------------------------------------- behaviour


def test_up_status_and_json(world):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    proc = migrate(*common, "status")
    assert proc.returncode == EX_OK
    assert [line.split()[-1] for line in proc.stdout.splitlines()] == ["pending", "pending"]

    proc = migrate("up", "--no-backup", *common)
    assert proc.returncode == EX_OK, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("applied 001_devices.sql (")
    assert recorded(db) == [1, 2]

    proc = migrate(*common, "up")  # no-op: nothing pending, no backup needed
    assert proc.returncode == EX_OK and proc.stdout == "up to date\n" and proc.stderr == ""

    status = json.loads(migrate(*common, "status", "--json").stdout)
    assert status["current_version"] == 2 and status["pending"] == []
    assert status["layout"] == "current" and status["database_exists"] is True
    assert [(m["version"], m["filename"], m["state"]) for m in status["migrations"]] == [
        (1, "001_devices.sql", "applied"), (2, "002_services.sql", "applied")]
    assert set(status["migrations"][0]) == {
        "version", "name", "filename", "state", "applied_at", "checksum", "recorded_checksum",
        "execution_ms", "out_of_order"}


def test_settings_come_from_env_and_config_file(world, tmp_path):
    db, migrations = world
    config = tmp_path / "ops.conf"
    config.write_text(f"DB_PATH={tmp_path / 'from-file.db'}\nMIGRATIONS_DIR='{migrations}'\n")
    assert migrate("--config", str(config), "up", "--no-backup").returncode == EX_OK
    assert recorded(tmp_path / "from-file.db") == [1, 2]
    proc = migrate("--config", str(config), "up", "--no-backup", env={"DB_PATH": str(db)})
    assert proc.returncode == EX_OK and recorded(db) == [1, 2]  # env beats the file
    flag_db = tmp_path / "flag.db"
    proc = migrate("--config", str(config), "--db", str(flag_db), "up", "--no-backup",
                   env={"DB_PATH": str(db)})
    assert proc.returncode == EX_OK and recorded(flag_db) == [1, 2]  # the flag beats both


def test_not_an_sqlite_database_is_exit_2_and_untouched(world):
    db, migrations = world
    db.write_text("hello, I am a text file\n")
    for command in (["up"], ["up", "--no-backup"], ["status"], ["down", "--steps", "1"],
                    ["validate"], ["baseline", "1"], ["schema", "--check"]):
        proc = migrate("--db", str(db), "--migrations", str(migrations), *command)
        assert proc.returncode == EX_USAGE, (command, proc.stderr)
        assert_one_error_line(proc, "not an SQLite database")
    assert db.read_text() == "hello, I am a text file\n"


def test_edited_migration_exits_3_and_names_the_file(world):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    assert migrate(*common, "up", "--to", "1", "--no-backup").returncode == EX_OK
    edited = migrations / "001_devices.sql"
    edited.write_text(edited.read_text().replace("PRIMARY KEY", "PRIMARY KEY, name TEXT"))
    for command in (["validate"], ["up", "--no-backup"]):
        proc = migrate(*common, *command)
        assert proc.returncode == EX_VERIFY
        assert_one_error_line(proc, "001_devices.sql")
    assert recorded(db) == [1]  # 002 was not applied
    assert "EDITED" in migrate(*common, "status").stdout


def test_migration_failure_names_statement_and_offers_a_restore_only_after_a_change(
        world, stub_backup):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    env = {"COMPRESS": "none"}  # the real pre-migration backup, in a separate process
    assert migrate(*common, "up", "--to", "1").returncode == EX_OK  # new db: no backup
    (migrations / "002_services.sql").write_text(
        "CREATE TABLE services (id INTEGER);\nCREATE TABLE devices (id INTEGER);\n")
    proc = migrate(*common, "up", env=env)
    assert proc.returncode == EX_FAIL
    backup = stub_backup.backups()[0]
    assert proc.stdout == f"backup: {backup}\n"
    # Nothing was applied: a restore would only throw away writes made since.
    assert_one_error_line(proc, "002_services.sql failed at statement 2",
                          "table devices already exists",
                          "the database is as it was before this run")
    assert "restore_database.sh" not in proc.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'services'"
                            ).fetchone()[0] == 0
    # 002 fixed, 003 broken: 002 was applied in this run, so the restore is offered.
    (migrations / "002_services.sql").write_text("CREATE TABLE services (id INTEGER);\n")
    (migrations / "003_bad.sql").write_text("CREATE TABLE devices (id INTEGER);\n")
    proc = migrate(*common, "up", env=env)
    assert proc.returncode == EX_FAIL
    backup = stub_backup.backups()[-1]
    assert_one_error_line(proc, "003_bad.sql failed at statement 1",
                          "applied before it in this run: 002_services.sql",
                          shlex.join([str(REPO_ROOT / "scripts" / "restore_database.sh"),
                                      "--db", str(db), "--dir", str(backup.parent),
                                      "--migrations", str(migrations), "--yes", str(backup)]))


def test_up_on_a_lost_database_with_backups_refuses_unless_create(world, tmp_path):
    """A deploy after the disk died must not create an empty database that the
    next cron backup makes 'latest'."""
    db, migrations = world
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20260101_000000", "20260102_000000"):
        (backups / f"d_{stamp}.db").write_bytes(b"")
    common = ["--db", str(db), "--migrations", str(migrations)]
    env = {"BACKUP_DIR": str(backups)}
    for extra in ([], ["--dry-run"]):
        proc = migrate(*common, "up", *extra, env=env)
        assert proc.returncode == EX_USAGE
        newest = backups / "d_20260102_000000.db"
        assert_one_error_line(proc, f"{db} does not exist", "2 backup(s) of it",
                              "newest: d_20260102_000000.db",
                              shlex.join([str(REPO_ROOT / "scripts" / "restore_database.sh"),
                                          "--db", str(db), "--dir", str(backups),
                                          "--migrations", str(migrations), str(newest)]),
                              "migrate up --create", "nothing was changed")
        assert not db.exists()
    db.write_bytes(b"")  # truncated to nothing: as lost as a missing file
    proc = migrate(*common, "up", env=env)
    assert proc.returncode == EX_USAGE
    assert_one_error_line(proc, f"{db} is empty (0 bytes), but {backups} holds 2 backup(s)")
    assert db.read_bytes() == b""
    proc = migrate(*common, "up", "--create", env=env)
    assert proc.returncode == EX_OK, proc.stderr
    assert recorded(db) == [1, 2]
    assert "--create" in migrate("up", "--help").stdout


def test_a_lost_database_whose_newest_backup_awaits_its_drill_says_force_may_be_needed(
        world, tmp_path):
    """The restore command offered for a lost database decides --force by the
    backup's foreign-key count; a drill-mode backup not yet drilled has none,
    so the message says a restore stopping at violations needs --force, until
    the drill records the count."""
    db, migrations = world
    backups = tmp_path / "backups"
    env = {"BACKUP_DIR": str(backups), "INTEGRITY_CHECK": "drill", "COMPRESS": "gzip"}
    assert migrate("--db", str(db), "--migrations", str(migrations), "up", "--no-backup",
                   env=env).returncode == EX_OK
    script = REPO_ROOT / "scripts"
    run_env = {**os.environ, "SQLITE_OPS_CONFIG": os.devnull, **env}
    subprocess.run([str(script / "backup_database.sh"), "--db", str(db)], env=run_env,
                   check=True, capture_output=True)
    lost = db.with_name("lost.db")
    os.replace(db, lost)
    pending = "its foreign-key count was left to a drill that has not run"
    proc = migrate("--db", str(db), "--migrations", str(migrations), "up", env=env)
    assert proc.returncode == EX_USAGE
    assert_one_error_line(proc, "if it was lost, restore it", pending, "add --force")
    os.replace(lost, db)
    subprocess.run([str(script / "restore_database.sh"), "--db", str(db), "--drill"],
                   env=run_env, check=True, capture_output=True)
    os.replace(db, lost)
    proc = migrate("--db", str(db), "--migrations", str(migrations), "up", env=env)
    assert proc.returncode == EX_USAGE
    assert pending not in proc.stderr, proc.stderr


def test_a_database_in_a_missing_directory_is_a_usage_error_not_a_new_tree(tmp_path):
    """A wrong DB_PATH (a typo in the config file leaves the default) must not
    quietly create a directory tree and a new, empty database in it."""
    db = tmp_path / "no" / "such" / "dashboard.db"
    proc = migrate("--db", str(db), "up")
    assert proc.returncode == EX_USAGE
    assert f"directory {db.parent} does not exist" in proc.stderr
    assert not (tmp_path / "no").exists()


def test_failed_backup_is_exit_1_and_nothing_applied(world, tmp_path):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    assert migrate(*common, "up", "--to", "1").returncode == EX_OK
    # A backup directory the backup refuses to create (its parent is missing).
    refused = tmp_path / "no" / "backups"
    proc = migrate(*common, "up", env={"BACKUP_DIR": str(refused)})
    assert proc.returncode == EX_FAIL
    assert_one_error_line(proc, "the backup before migrating failed", f"cannot create {refused}",
                          "nothing was changed")
    assert not refused.parent.exists()
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY 1")] == [
            "devices", "schema_migrations"]


def test_down_dry_run_and_down(world):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    migrate(*common, "up", "--no-backup")
    proc = migrate(*common, "down", "--steps", "1", "--dry-run")
    assert proc.stdout == "would revert 002_services.sql\n" and recorded(db) == [1, 2]
    proc = migrate(*common, "down", "--to", "0", "--no-backup")
    assert proc.returncode == EX_OK
    assert [line.split(" (")[0] for line in proc.stdout.splitlines()] == [
        "reverted 002_services.sql", "reverted 001_devices.sql"]
    assert recorded(db) == []
    proc = migrate(*common, "down")
    assert proc.returncode == EX_USAGE
    assert_one_error_line(proc, "--steps N or --to V")


def test_new_baseline_and_schema(world, tmp_path):
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    proc = migrate(*common, "new", "add notes")
    assert proc.returncode == EX_OK
    assert proc.stdout.strip() == str(migrations / "003_add_notes.sql")
    (migrations / "003_add_notes.sql").write_text("CREATE TABLE notes (x TEXT);\n")

    sqlite3.connect(db).executescript(
        "CREATE TABLE devices (id INTEGER PRIMARY KEY);"
        "CREATE TABLE services (id INTEGER PRIMARY KEY);").close()
    proc = migrate(*common, "baseline", "2")
    assert proc.returncode == EX_OK and recorded(db) == [1, 2]
    assert proc.stdout.splitlines() == ["recorded 001_devices.sql as applied (not run)",
                                        "recorded 002_services.sql as applied (not run)"]

    assert migrate(*common, "schema").returncode == EX_OK
    assert "CREATE TABLE notes" in (migrations / "schema.sql").read_text()
    proc = migrate(*common, "schema", "--check")
    assert proc.returncode == EX_VERIFY
    assert proc.stdout == "table notes: missing from the database\n"
    assert_one_error_line(proc, "1 difference")
    migrate(*common, "up", "--no-backup")
    proc = migrate(*common, "schema", "--check")
    assert proc.returncode == EX_OK and proc.stdout.startswith("no drift")


def test_dry_run_prints_plan_and_lint_and_changes_nothing(world):
    db, migrations = world
    (migrations / "003_bad.sql").write_text("ALTER TABLE devices ADD COLUMN x TEXT NOT NULL;\n")
    proc = migrate("--db", str(db), "--migrations", str(migrations), "up", "--dry-run")
    assert proc.returncode == EX_OK
    assert proc.stdout.splitlines()[:3] == ["would apply 001_devices.sql",
                                            "would apply 002_services.sql",
                                            "would apply 003_bad.sql"]
    assert "warning: 003_bad.sql (up statement 1): ADD COLUMN ... NOT NULL" in proc.stdout
    assert not db.exists()


# ----------------------------------------------------------- pitfall 4: concurrency


def _run_many(db: Path, migrations: Path, count: int, lock_timeout: str) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PATH", "MIGRATIONS_DIR")}
    env.update(SQLITE_OPS_CONFIG=os.devnull, LOCK_TIMEOUT=lock_timeout)
    procs = [subprocess.Popen([sys.executable, str(MIGRATE), "--db", str(db), "--migrations",
                               str(migrations), "up", "--no-backup"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def _slow_counting_migrations(make_migrations) -> Path:
    files = {}
    for version in range(1, 6):
        # Not idempotent: applying one twice would insert a second row (or fail).
        files[f"{version:03d}_step{version}.sql"] = (
            ("CREATE TABLE applied_once (version INTEGER PRIMARY KEY);\n" if version == 1
             else "")
            + f"INSERT INTO applied_once VALUES ({version});\n"
            + f"CREATE TABLE t{version} AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
            + "SELECT i + 1 FROM n WHERE i < 20000) SELECT i FROM n;\n")
    return make_migrations(files)


def test_eight_concurrent_ups_apply_every_migration_exactly_once(tmp_path, make_migrations):
    migrations = _slow_counting_migrations(make_migrations)
    db = tmp_path / "d.db"
    results = _run_many(db, migrations, 8, lock_timeout="60")
    assert [code for code, _, _ in results] == [EX_OK] * 8, [err for _, _, err in results]
    applied_lines = [line for _, out, _ in results for line in out.splitlines()
                     if line.startswith("applied ")]
    assert len(applied_lines) == 5  # all five applied, each by exactly one run
    assert recorded(db) == [1, 2, 3, 4, 5]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM applied_once").fetchall() == [
            (1,), (2,), (3,), (4,), (5,)]


def test_concurrent_ups_without_waiting_exit_75_never_half_way(tmp_path, make_migrations):
    migrations = _slow_counting_migrations(make_migrations)
    db = tmp_path / "d.db"
    results = _run_many(db, migrations, 8, lock_timeout="0")
    codes = [code for code, _, _ in results]
    assert set(codes) <= {EX_OK, EX_BUSY} and EX_OK in codes, [e for _, _, e in results]
    for code, _, err in results:
        if code == EX_BUSY:
            assert err.startswith("migrate: ") and "lock" in err
    assert recorded(db) == [1, 2, 3, 4, 5]


def test_a_held_lock_is_exit_75_and_changes_nothing(world):
    db, migrations = world
    sqlite3.connect(db).execute("CREATE TABLE keep (x)").connection.close()
    with open(str(db) + ".sqlite-ops.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a backup (or anything else) is running
        proc = migrate("--db", str(db), "--migrations", str(migrations), "up", "--no-backup")
    assert proc.returncode == EX_BUSY
    assert_one_error_line(proc, "lock")
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["keep"]


def test_the_no_op_does_not_need_the_lock(world):
    """A deploy with nothing to apply succeeds while a backup holds the lock."""
    db, migrations = world
    common = ["--db", str(db), "--migrations", str(migrations)]
    assert migrate(*common, "up", "--no-backup").returncode == EX_OK
    with open(str(db) + ".sqlite-ops.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        proc = migrate(*common, "up")
    assert proc.returncode == EX_OK and proc.stdout == "up to date\n"


def test_status_shows_foreign_history_and_up_says_it_adopted(world):
    db, migrations = world
    with sqlite3.connect(db) as conn:  # the application's own tables and history
        conn.executescript("CREATE TABLE devices (id INTEGER PRIMARY KEY);"
                           "CREATE TABLE schema_version (version INTEGER);"
                           "INSERT INTO schema_version VALUES (7);")
    common = ["--db", str(db), "--migrations", str(migrations)]
    proc = migrate(*common, "status")
    assert proc.returncode == EX_OK
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("001  001_devices.sql") and lines[0].endswith(" pending")
    assert ("note: the database has tables but no sqlite-ops history; its schema is the one "
            "migrations 1..1 build: 'migrate up' records them as applied and applies the rest"
            ) in proc.stdout
    assert ("note: table schema_version (1 row(s), highest version 7) is another tool's "
            "migration history") in proc.stdout
    status = json.loads(migrate(*common, "status", "--json").stdout)
    assert status["unadopted"] is True and status["foreign_history"][0]["table"] == \
        "schema_version"
    assert status["adoption"] == {"matches": 1, "closest": None, "differences": []}
    proc = migrate(*common, "up", "--no-backup")
    assert proc.returncode == EX_OK, proc.stderr
    assert "applied 002_services.sql" in proc.stdout
    assert proc.stdout.splitlines()[0] == (
        "adopting the database: its schema is the one migrations 1..1 build; 1 migration(s) "
        "through 001_devices.sql recorded as applied (not run)")
    assert recorded(db) == [1, 2]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM schema_version").fetchall() == [(7,)]


def test_baseline_refuses_a_different_schema_and_force_prints_the_differences(world):
    db, migrations = world
    sqlite3.connect(db).execute("CREATE TABLE devices (id INTEGER PRIMARY KEY, x)"
                                ).connection.close()
    common = ["--db", str(db), "--migrations", str(migrations)]
    proc = migrate(*common, "status")
    assert ("its schema is not one the migrations build (closest: 001_devices.sql, 1 "
            "difference(s)") in proc.stdout
    assert json.loads(migrate(*common, "status", "--json").stdout)["adoption"] == {
        "matches": None, "closest": "001_devices.sql",
        "differences": ["table devices: column x not in the migrations through "
                        "001_devices.sql"]}
    proc = migrate(*common, "baseline", "1")
    assert proc.returncode == EX_VERIFY
    assert_one_error_line(proc, "table devices: column x not in the migrations through "
                                "001_devices.sql", "nothing was recorded", "--force")
    proc = migrate(*common, "baseline", "1", "--force")
    assert proc.returncode == EX_OK
    assert proc.stdout.splitlines() == [
        "recorded 001_devices.sql as applied (not run)",
        "difference: table devices: column x not in the migrations through 001_devices.sql"]
    assert "recorded despite 1 difference(s)" in proc.stderr
    assert recorded(db) == [1]


@pytest.mark.parametrize("script, note", [("migrate", "nothing was changed"),
                                          ("db_metrics", "nothing was written")])
@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_a_signal_while_a_python_script_starts_is_one_line_not_a_traceback(
        tmp_path, script, note, sig):
    """The signal is sent before the interpreter starts and held (blocked) until
    the script's first code can answer it: one line, exit 128 + the signal."""
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    held = ["env", f"--default-signal={sig}", f"--block-signal={sig}", "bash", "-c",
            'kill -"$1" $$; shift; exec "$@"', "_", sig,
            sys.executable, str(REPO_ROOT / "scripts" / script), "--db", str(db)]
    proc = subprocess.run(held, capture_output=True, text=True, timeout=60)
    number = {"INT": 2, "TERM": 15}[sig]
    assert proc.returncode == 128 + number, proc.stderr
    assert proc.stderr == f"{script}: interrupted by SIG{sig} before it started; {note}\n"
    assert db.stat().st_size == 0  # nothing was written
