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

test: env
	$(VENV)/bin/pytest

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
