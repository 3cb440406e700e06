# The two commands a new user needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
# The CPU build of PyTorch, installed before the extras so that none of them pulls a
# CUDA build of several GB; override it for a GPU machine: make test TORCH='torch==...'
TORCH ?= torch==2.13.0

.PHONY: demo test check lint types unit bench clean

# Everything the tests use (several hundred MB).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[dev,examples]'
	touch $(STAMP) $(DEMO_STAMP)

# Only what the demo needs: pbtkit, scikit-learn's data, matplotlib, the dashboard.
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/pbtkit demo

# Lint, types and the whole test suite: what CI runs.
test: $(STAMP) lint types unit

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

check: test

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) pbt-demo .pytest_cache .mypy_cache .ruff_cache
