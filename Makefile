# Two commands: `make run` (the main job on the default task) and `make test` (tests and lint).
# Both create .venv on first use; torch is pinned by constraints.txt to the CPU build these machines carry.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_ARGS ?=

.PHONY: run quick test lint data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed

# The default corpus: two public-domain Debian packages, unpacked into the cache (no system install).
data: $(VENV)/.installed
	$(BIN)/python -m unforced.tasks.sword

run: $(VENV)/.installed data
	$(BIN)/unforced run $(RUN_ARGS)

quick:
	$(MAKE) run RUN_ARGS=--quick

# The lab's browser tests drive Debian's chromium (never a downloaded browser).
$(VENV)/.chromium: | $(BIN)/python
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $@

test: $(VENV)/.installed-dev $(VENV)/.chromium data
	UNFORCED_REAL_DATA=1 $(BIN)/python -m pytest
	$(BIN)/ruff check src tests benchmarks

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
