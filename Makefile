# sipflow — two commands: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check
# torch is pinned here (the CPU wheel on our machines); the project itself accepts a range.
TORCH   ?= torch==2.13.0

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

# The napari tests draw on a virtual X screen (pytest-xvfb starts it): Xvfb and the xcb
# libraries that PyQt6's platform plugin needs beyond a base Debian image.
XVFB_DEBS := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0

.PHONY: install install-test system-deps demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed plugins/sipflow-hotpixels/pyproject.toml
	$(PIP) install -q -e ".[test,napari,golden]" -e plugins/sipflow-hotpixels
	touch $@

## system-deps: Debian packages of the napari tests (installed when missing and root).
system-deps:
	@if command -v dpkg >/dev/null && ! dpkg -s $(XVFB_DEBS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(XVFB_DEBS) for the napari tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq $(XVFB_DEBS) >/dev/null) || \
	      echo "WARNING: apt-get failed; the napari tests will be skipped"; \
	  else \
	    echo "NOTE: the napari tests are skipped without $(XVFB_DEBS)"; \
	    echo "      (sudo apt-get install $(XVFB_DEBS))"; \
	  fi; \
	fi

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## demo: simulate a scan, run the default pipeline through a Prefect flow (embedded
## server), write demo-output/demo_result.zarr, print a summary and a PNG quick-look.
demo: install
	$(VENV)/bin/sipflow demo --out demo-output

## test: install what the tests need and run the whole suite (real HDF5, Zarr, Prefect),
## the slowest tests listed and a junit report in test-reports/ (CI keeps both).
test: install-test system-deps
	$(VENV)/bin/ruff check src tests plugins flows examples benchmarks
	mkdir -p test-reports
	$(PY) -m pytest --durations=25 --junitxml=test-reports/junit.xml

## test-fast: the quick loop while developing: no Prefect, no subprocess, no slow tests.
test-fast: install-test
	$(PY) -m pytest -q -m "not slow and not prefect and not subprocess" --durations=10

## lint: ruff, and the package's layering (no import cycles, nothing imports upward).
lint: install-test
	$(VENV)/bin/ruff check src tests plugins flows examples benchmarks
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

bench: install
	$(PIP) install -q cohere-core   # benchmark-only: the APS reference implementation
	$(PY) benchmarks/bench_hio.py

clean:
	rm -rf $(VENV) demo-output test-reports .pytest_cache .ruff_cache
