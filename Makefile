# sipflow — two commands: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check
# torch is pinned here (the CPU wheel on our machines); the project itself accepts a range.
TORCH   ?= torch==2.13.0

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install install-test demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed plugins/sipflow-hotpixels/pyproject.toml
	$(PIP) install -q -e ".[test]" -e plugins/sipflow-hotpixels
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## demo: simulate a scan, run the default pipeline through a Prefect flow (embedded
## server), write demo-output/demo_result.zarr, print a summary and a PNG quick-look.
demo: install
	$(VENV)/bin/sipflow demo --out demo-output

## test: install what the tests need and run the whole suite (real HDF5, Zarr, Prefect).
test: install-test
	$(VENV)/bin/ruff check src tests plugins flows examples benchmarks
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check src tests plugins flows examples benchmarks

bench: install
	$(PIP) install -q cohere-core   # benchmark-only: the APS reference implementation
	$(PY) benchmarks/bench_hio.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
