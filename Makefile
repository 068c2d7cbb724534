# Two commands on a fresh machine (Python 3.11, pip, make): `make demo` and `make test`.
# Both build .venv from uv.lock with a project-local uv (installed into .tools/ by pip).

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export UV_PYTHON_DOWNLOADS := never
export RETRAIN_SPEC ?= $(CURDIR)/dagster_project/defs/churn/defs.yaml

.PHONY: demo test dev bench bench-quick screenshots env clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Compiled bytecode matters here: PYTHONDONTWRITEBYTECODE is set and feast/catboost import slowly.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --compile-bytecode --python $(PYTHON)
	touch $@

env: $(VENV)/.synced

demo: env
	mkdir -p $(DAGSTER_HOME)
	DAGSTER_HOME=$(DAGSTER_HOME) $(VENV)/bin/retrain demo --spec dagster_project/defs/churn/defs.yaml

# The server and browser tests (tests/e2e: dagster dev, Postgres, Chromium) spend most of their
# time waiting on Dagster's daemons (the backfill loop is a fixed 30 s), so they run beside the rest
# of the suite, in their own pytest process and temp folder; make fails if either fails (pytest's
# exit code 5, nothing collected, included). Their report is printed after the rest's.
test: env
	@e2e_log=$$(mktemp); e2e_tmp=$$(mktemp -d); \
	$(VENV)/bin/pytest tests/e2e -p no:cacheprovider --basetemp=$$e2e_tmp/t > $$e2e_log 2>&1 & e2e=$$!; \
	$(VENV)/bin/pytest --ignore=tests/e2e; rest=$$?; \
	wait $$e2e; e2e_rc=$$?; \
	echo "=== tests/e2e (ran beside the rest, exit code $$e2e_rc) ==="; cat $$e2e_log; rm -rf $$e2e_log $$e2e_tmp; \
	echo "make test: tests exit code $$rest, tests/e2e exit code $$e2e_rc"; \
	test $$rest -eq 0 && test $$e2e_rc -eq 0

# Refresh the README's UI screenshots (docs/screenshots/) with the browser tests.
screenshots: env
	RETRAIN_SCREENSHOTS=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest tests/e2e

# The demo instance (retrain_plugins/demo/instance.py, written when missing): queued runs, one at a
# time, the queue checked every second.
dev: env
	$(VENV)/bin/python -m retrain_plugins.demo.instance $(DAGSTER_HOME)
	DAGSTER_HOME=$(DAGSTER_HOME) $(VENV)/bin/dagster dev -m dagster_project.definitions

# Benchmarks (bench/README.md): the default size writes bench/RESULTS.md (~11 min on 2 cores);
# --quick is CI's smoke run of every benchmark (asserts nothing about speed, writes nothing).
bench: env
	$(VENV)/bin/python -m bench

bench-quick: env
	$(VENV)/bin/python -m bench --quick

clean:
	rm -rf .tools $(VENV)
