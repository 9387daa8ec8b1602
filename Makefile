# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test

.PHONY: demo test check lint typecheck pytest soak bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(TESTSTAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TESTSTAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

check: $(TESTSTAMP)
	$(BIN)/ruff check evroute tests bench examples
	$(BIN)/ruff format --check evroute tests bench examples
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest -q --durations=10

soak: $(TESTSTAMP)
	$(BIN)/python -m pytest -q -m soak

bench: $(TESTSTAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

screenshots: $(TESTSTAMP)
	$(BIN)/python examples/screenshots.py docs/screenshots

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
