# sqlite-ops: the front door. `make help` lists every target.
#
# Settings pass through as make or environment variables (or come from the
# config file, see below); with neither they default to paths inside this
# checkout, so everything works with no set-up:
#   make backup DB_PATH=/dashboard/data/dashboard.db BACKUP_DIR=/dashboard/data/backups
# A failing target exits 2 whatever the script's code (3, 4, 75...): make's
# rule. Cron jobs and pipelines that act on the code call scripts/ directly.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Settings come from the command line or the environment. Without them, a
# config file that sets anything (SQLITE_OPS_CONFIG, else /etc/sqlite-ops.conf)
# means a configured machine: the scripts read it themselves, exactly as under
# cron, so `make migrate` on a server migrates the server's database. Only
# with no config file do the defaults point inside this checkout, so that
# `make demo` works with no set-up.
# The test is only "the file holds a KEY=value line": a file the scripts would
# reject (a bad value, a malformed line) must still count as a configured
# machine, so they stop on it rather than make quietly using data/ here.
# ($(shell) does not see variables given on make's command line: pass it.)
quote = '$(subst ','\'',$(1))'
CONFIGURED := $(shell SQLITE_OPS_CONFIG=$(call quote,$(SQLITE_OPS_CONFIG)) bash -c 'source lib/common.sh && f=$$(config_file_path) && [[ -n $$f ]] && grep -qsE "^[[:space:]]*(export[[:space:]]+)?[A-Za-z_][A-Za-z0-9_]*[[:space:]]*=" -- "$$f" && echo yes' 2>/dev/null)
ifeq ($(CONFIGURED),)
DB_PATH ?= $(CURDIR)/data/dashboard.db
BACKUP_DIR ?= $(CURDIR)/data/backups
MIGRATIONS_DIR ?= $(CURDIR)/migrations
export DB_PATH BACKUP_DIR MIGRATIONS_DIR
endif

# YES=1 and FORCE=1 (any other value, FORCE=0 included, means no).
yes_flag = $(if $(filter 1,$(YES)),--yes)
force_flag = $(if $(filter 1,$(FORCE)),--force)

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

BASH_FILES := lib/common.sh scripts/backup_database.sh scripts/restore_database.sh \
	scripts/maintain_database.sh scripts/offsite_sync.sh .ci/run $(wildcard tests/bats/*.bash tests/bats/*.bats \
	tests/perf/*.sh tests/*.sh docs/examples/*.sh)

.PHONY: help setup tools test test-fast test-slow lint bats pytest demo migrate status rollback \
	backup restore verify list-backups drill maintain metrics bench soak docs clean offsite

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

setup: $(STAMP) ## create .venv with the pinned dev/test dependencies (fast when nothing changed)

tools: ## install the system tools the tests need (rclone, openssh-server) when missing; root
	@bash tests/install_test_tools.sh

lint: setup ## shellcheck every bash file, ruff every Python file
	@$(VENV)/bin/shellcheck -x $(filter-out $(wildcard tests/bats/*.bats),$(BASH_FILES))
	@$(VENV)/bin/shellcheck -x -s bash $(wildcard tests/bats/*.bats)
	@$(VENV)/bin/ruff check --quiet lib tests scripts/migrate scripts/db_metrics
	@echo "lint: shellcheck and ruff clean"

bats: setup ## the bash-layer tests (fails if it finds none)
	@n=$$($(VENV)/bin/bats --count tests/bats); test "$$n" -gt 0 || { echo "bats: no tests found" >&2; exit 1; }
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/bats tests/bats

pytest: setup ## the Python tests (fast suite; pytest itself fails when it collects none)
	@$(PY) -m pytest -q -m "not slow" tests/python

test: setup tools lint bats pytest ## everything CI runs: setup, tools, lint, bats, pytest

test-slow: setup ## the slow proof suites: seeded kill -9 trials, long concurrency runs
	@$(PY) -m pytest -q -m slow tests/python

demo: ## walk through the whole toolkit on data/dashboard.db
	@bash tests/demo.sh

migrate: ## apply pending migrations (runs on every deploy)
	@scripts/migrate up

status: ## show applied / pending / edited migrations
	@scripts/migrate status

rollback: ## roll back the newest migration (STEPS=n for more)
	@scripts/migrate down --steps $${STEPS:-1}

backup: ## take a verified backup of DB_PATH into BACKUP_DIR
	@scripts/backup_database.sh

restore: ## restore BACKUP=<file|latest> over DB_PATH (asks first; YES=1 to skip; FORCE=1 = --force)
	@test -n "$${BACKUP:-}" || { echo "make restore: set BACKUP=<backup file> or BACKUP=latest" >&2; exit 2; }
	@test -n "$(yes_flag)" -o -t 0 || { echo "make restore: refusing to restore over $${DB_PATH:-the configured database} without confirmation: no terminal to ask on; check the backup with make verify BACKUP=$$BACKUP, then add YES=1" >&2; exit 2; }
	@scripts/restore_database.sh $(yes_flag) $(force_flag) "$$BACKUP"

verify: ## verify the latest backup (BACKUP=<file> for another; FORCE=1 = --force)
	@scripts/restore_database.sh --verify $(force_flag) "$${BACKUP:-latest}"

list-backups: ## list backups, newest first
	@scripts/restore_database.sh --list

offsite: ## copy verified backups to OFFSITE_REMOTES (REMOTE=nas:path for one), check and prune
	@scripts/offsite_sync.sh $(if $(REMOTE),--remote $(call quote,$(REMOTE)))

drill: ## restore the latest backup into a temp file, verify it, remove it (FORCE=1 = --force; FROM=remote)
	@scripts/restore_database.sh --drill $(force_flag) $(if $(FROM),--from $(call quote,$(FROM)))

maintain: ## routine maintenance (TASKS="check analyze" for a subset)
	@scripts/maintain_database.sh $${TASKS:-all}

metrics: ## print database metrics in Prometheus format
	@scripts/db_metrics

docs: ## regenerate docs/schema.md from the migrations
	@PYTHONPATH=lib $(PYTHON) -m sqlite_ops.schema_docs --output docs/schema.md

bench: setup ## benchmarks: the recovery-time targets against the compression floor first, then the rest
	@bash tests/perf/run_all.sh

soak: setup ## long mixed-load run (DURATION=seconds, default 600)
	@$(PY) tests/perf/soak.py --duration $${DURATION:-600}

clean: ## remove the venv, caches and the demo data
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
