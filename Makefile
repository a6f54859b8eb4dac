# Two commands on a fresh machine: `make demo` and `make test`. Both install what is missing into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two test processes (pytest-xdist), each taking the next test module in file order when free: they
# use the CPU that tests waiting on Ray, servers and subprocesses leave idle (README, Development).
# TEST_PROCESSES=0 runs the suite in this one process.
TEST_PROCESSES ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

.PHONY: setup demo test test-all test-gpu gpu-wheels bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --out demo-output

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

# Everything, the load tests included, in one process: the load test's throughput is its own.
test-all: $(STAMP)
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

# The CUDA checks: they need only torch, numpy, PyAV and this package (any python with a CUDA
# torch: `make test-gpu GPU_PYTHON=python3` on a stock PyTorch image). Skipped, saying so, without
# CUDA. PyAV, which a stock PyTorch image lacks, comes from gpu-wheels/ when that folder has it
# (no network needed there): `make gpu-wheels` fetches it here, for the GPU image's Python.
GPU_PYTHON ?= $(BIN)/python
GPU_PY_VERSION ?= 3.12
GPU_WHEELS := gpu-wheels
GPU_SITE := .gpu-site
test-gpu:
	@if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade \
	    --target $(GPU_SITE) $(GPU_WHEELS)/*.whl || exit 1; fi
	PYTHONPATH=$(CURDIR)/$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} \
	  $(GPU_PYTHON) -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider -rA $(PYTEST_ARGS)

# Wheels for `make test-gpu` on a machine without network: PyAV at constraints.txt's pin, for
# CPython $(GPU_PY_VERSION) on x86-64 Linux (git-ignored; copy or carry gpu-wheels/ with the tree).
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --dest $(GPU_WHEELS) \
	  --python-version $(GPU_PY_VERSION) --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  "av==$$(sed -n 's/^av==//p' constraints.txt)"

# Every bench_*.py records its ratios in bench-results.json; summary.py prints them as one table.
bench: $(STAMP)
	@rm -f bench-results.json
	@for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@$(BIN)/python tests/benchmarks/summary.py

clean:
	rm -rf demo-output .pytest_cache
