# redfeat — every target sets up what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## run the end-to-end demo on the embedded server
	$(BIN)/redfeat demo

lint: $(BIN)/.installed  ## ruff and mypy
	$(BIN)/ruff check redfeat tests bench
	$(BIN)/ruff format --check redfeat tests bench
	$(BIN)/mypy

pytest: $(BIN)/.installed  ## the test suite only
	$(BIN)/pytest -n 2 -q

test: lint pytest  ## lint, type-check and run the test suite

bench: $(BIN)/.installed  ## the benchmarks (each prints its ratio against a baseline run beside it)
	$(BIN)/python bench/online.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/timeseries.py
	$(BIN)/python bench/windows.py

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
