# Pom-ONNX: developer targets. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast bench demo quality lint check-imports clean chaos slurm-test view-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,dev,zarr,copick]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The inner loop: everything but the tests that train or export TensorFlow networks (CI runs them all).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not chaos" tests

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos tests/inference/test_chaos.py

# The napari view (extra [napari]: Qt, installed here, not by `make test`) with a screenshot on a virtual X
# server: napari's canvas needs OpenGL, which Qt's offscreen platform lacks. Installs xvfb and Qt's xcb
# libraries with apt-get where root (else the screenshot test says why it skips). About 45 s.
XCB_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 \
	libxcb-randr0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0
view-test: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[train,dev,zarr,copick,napari]"
	@command -v xvfb-run >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q --no-install-recommends $(XCB_PACKAGES) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(XCB_PACKAGES) >/dev/null; }; }; } || \
		echo "view-test: no xvfb-run (not root, or no apt-get): the screenshot test skips"
	$(BIN)/python -m pytest -q tests/tools/test_napari.py

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
