# redfeat — every target sets up what it needs from the committed lock (uv.lock);
# nothing is installed by hand. uv itself is pinned and installed into .uv/ on first use.
PYTHON     ?= python3
UV_VERSION := 0.13.9
UV         := .uv/bin/uv
VENV       := .venv
BIN        := $(VENV)/bin
# Install exactly what uv.lock says, into .venv, with the machine's Python. Bytecode is
# compiled at install: where PYTHONDONTWRITEBYTECODE is set, every start would otherwise
# compile pandas & co. from source again (~2 s a command).
SYNC       := UV_PYTHON_DOWNLOADS=never $(UV) sync --locked --compile-bytecode --python $(PYTHON)

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	@echo "installing uv $(UV_VERSION) into .uv/"
	@$(PYTHON) -m pip install -qq --disable-pip-version-check --root-user-action=ignore --target .uv uv==$(UV_VERSION)

# the runtime dependencies only (what `make demo` needs)
$(BIN)/.runtime: uv.lock pyproject.toml | $(UV)
	$(SYNC) --no-dev --inexact
	@$(BIN)/python -m compileall -q redfeat
	@touch $@

# runtime + the dev group (test and lint tools)
$(BIN)/.dev: uv.lock pyproject.toml | $(UV)
	$(SYNC)
	@$(BIN)/python -m compileall -q redfeat
	@touch $@ $(BIN)/.runtime

demo: $(BIN)/.runtime  ## run the end-to-end demo on the embedded server
	$(BIN)/redfeat demo

lint: $(BIN)/.dev  ## ruff and mypy
	$(BIN)/ruff check redfeat tests bench
	$(BIN)/ruff format --check redfeat tests bench
	$(BIN)/mypy

pytest: $(BIN)/.dev  ## the test suite only
	$(BIN)/pytest -n 2 -q

test: lint pytest  ## lint, type-check and run the test suite

bench: $(BIN)/.dev  ## the benchmarks (each prints its ratio against a baseline run beside it)
	$(BIN)/python bench/online.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/timeseries.py
	$(BIN)/python bench/windows.py
	$(BIN)/python bench/vectors.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/materialize.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/cluster.py

lock: | $(UV)  ## upgrade every locked dependency on purpose, then run the suite on it
	$(UV) lock --upgrade
	$(MAKE) test

clean:  ## remove the virtualenv, uv and the caches
	rm -rf $(VENV) .uv .mypy_cache .ruff_cache .pytest_cache .hypothesis
