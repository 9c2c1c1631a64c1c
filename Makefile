# The README's two commands: `make demo` and `make test`. Both start from
# nothing: they create .venv, install the package and fetch the data set from
# Debian's archive when it is missing. `make test-fast` skips the tests
# marked `@pytest.mark.slow` (pytest.ini); `make test` skips only the
# keras.applications tier (`@pytest.mark.apps`, ~15 min on 2 cores), which
# `make test-apps` and `make coverage-matrix` run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
PYTEST_WORKERS ?= 2
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test test-fast test-apps venv data lint bench clean coverage-matrix

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

data:
	@if [ ! -f $(FMNIST) ]; then \
	  echo "Installing Fashion-MNIST from Debian (dataset-fashion-mnist)"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist; \
	fi

demo: venv data
	$(PY) -m tfcomp.demo --out artifacts

test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "not apps" tests

test-apps: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m apps tests

test-fast: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "not slow" tests

# Runs tests/models (slow ones included) and rewrites README.md's coverage
# matrix from their outcomes; exits non-zero when a test failed.
COVERAGE_JSON := build/coverage.json
coverage-matrix: venv
	rm -f $(COVERAGE_JSON)
	status=0; TFCOMP_COVERAGE_JSON=$(COVERAGE_JSON) $(PY) -m pytest -q \
	  tests/models || status=$$?; \
	$(PY) tools/coverage_matrix.py --json $(COVERAGE_JSON) && exit $$status

lint: venv
	$(VENV)/bin/ruff check tfcomp tests benchmarks tools

bench: venv data
	$(PY) benchmarks/prune_speed.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache
