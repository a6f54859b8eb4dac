# Two commands on a fresh machine: `make demo` and `make test`. Both install what is missing into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-all test-gpu bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything, the load tests included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

# The CUDA checks: they need only torch, numpy and this package (any python with a CUDA torch:
# `make test-gpu GPU_PYTHON=python3` on a stock PyTorch image). Skipped, saying so, without CUDA.
GPU_PYTHON ?= $(BIN)/python
test-gpu:
	$(GPU_PYTHON) -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider $(PYTEST_ARGS)

# Every bench_*.py records its ratios in bench-results.json; summary.py prints them as one table.
bench: $(STAMP)
	@rm -f bench-results.json
	@for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@$(BIN)/python tests/benchmarks/summary.py

clean:
	rm -rf demo-output .pytest_cache
