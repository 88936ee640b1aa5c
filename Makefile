# Two commands for a fresh machine: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MATCHING_DATA_DIR ?= $(CURDIR)/data

.PHONY: install demo test test-fast lint dev bench-quality clean

$(BIN)/matching-pipeline: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

install: $(BIN)/matching-pipeline

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Matches the bundled sample (matching_pipeline/sample) through every stage with the embedded
# SQLite storage; the runs are then visible in `make dev`.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/matching-pipeline match --project demo --items matching_pipeline/sample/items.csv --out out/demo_results.csv

# What CI runs (.ci/run): lint, types, then every test tier (Postgres on 127.0.0.1:5432 included).
test: lint
	$(BIN)/python -m pytest -q

# The quick loop while editing: the pure core and the unit tests; no Postgres, no daemon, nothing slow.
test-fast: install
	$(BIN)/python -m pytest -q -m "not postgres and not e2e and not slow"

lint: install
	$(BIN)/ruff check
	$(BIN)/mypy matching_pipeline

# The Dagster UI and daemon (sensors, schedules, run queue) on http://127.0.0.1:3000
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench-quality: install
	$(BIN)/python bench/quality_abt_buy.py ../shared/datasets/abt_buy

clean:
	rm -rf $(VENV) .dagster_home data out
