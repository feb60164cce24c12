# The two commands: `make demo` (local S3 + sample data + dagster dev) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format bench chaos tour clean

# the dev extra includes the demo extra (moto, the demo's local S3 server); a plain `pip install .` has neither
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# an editable install compiles none of the package's bytecode, and where PYTHONDONTWRITEBYTECODE is set (as on
	# CI here) no process writes it either: each code server, sensor and run worker compiled ~0.08 s of it again
	$(BIN)/python -m compileall -q ingest_pipelines
	touch $@

demo: $(BIN)/.installed
	$(BIN)/ingest-pipelines demo

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n auto --maxprocesses 4

lint: $(BIN)/.installed
	$(BIN)/ruff check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench` (under 30 min on 2 cores); `make bench BIG=1` adds the 1M-key bucket and the 10M-row inventory
bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks $(if $(BIG),--big)

# the chaos soak: `make chaos ROUNDS=40 SEED=7` (SCENARIOS="sync-list sync-events bundle" by default)
ROUNDS ?= 30
SEED ?= 1
SCENARIOS ?= sync-list sync-events bundle
chaos: $(BIN)/.installed
	$(BIN)/python -m ingest_pipelines_tests.chaos --rounds $(ROUNDS) --seed $(SEED) --scenario $(SCENARIOS)

# the README's tour: the browser test re-takes its screenshots into docs/tour/ (needs /usr/bin/chromium)
tour: $(BIN)/.installed
	INGEST_UPDATE_TOUR=1 $(BIN)/pytest ingest_pipelines_tests/test_deploy_browser.py

clean:
	rm -rf $(VENV) .demo .pytest_cache build *.egg-info
