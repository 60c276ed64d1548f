# Pom-ONNX: developer targets. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast bench demo quality lint check-imports clean chaos slurm-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The inner loop: everything but the tests that train or export TensorFlow networks (CI runs them all).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not chaos" tests

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos tests/inference/test_chaos.py

# A private one-node SLURM cluster (installs Debian's slurm packages if missing; needs root, else skips).
slurm-test: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm -s tests/test_slurm_cluster.py

check-imports: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_import_boundaries.py

# The benchmarks also measure the [cpu] extra (OpenVINO's int8).
BENCH_STAMP := $(VENV)/.installed-cpu
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[train,dev,cpu]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

demo: $(STAMP)
	$(BIN)/python -m pom_tools.demo --folder demo

quality: $(STAMP)
	$(BIN)/python -m pom_tools.quality --folder quality

lint: $(STAMP)
	$(BIN)/ruff check common inference training tools tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info common/*.egg-info .pytest_cache .ruff_cache demo bench/out quality
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
