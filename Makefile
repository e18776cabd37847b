# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
DEPS_STAMP := $(VENV)/.deps-stamp
EXT_STAMP := $(VENV)/.ext-stamp
PYX := $(wildcard hpacs/_ext/*.pyx)

.PHONY: install run test test-tools lint bench clean

install: $(DEPS_STAMP) $(EXT_STAMP)

$(DEPS_STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel Cython numpy
	$(PIP) install --no-build-isolation -e '.[test,bench]'
	touch $@

$(EXT_STAMP): $(DEPS_STAMP) $(PYX) setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

run: install
	$(VENV)/bin/hpacs serve $(ARGS)

# Peers the tests drive: dcmtk from Debian (a missing tool is a failure in CI, never a skip).
test-tools:
	@command -v storescu >/dev/null && command -v echoscu >/dev/null || \
	  { (apt-get update -qq || sudo apt-get update -qq) && \
	    (apt-get install -y -qq dcmtk || sudo apt-get install -y -qq dcmtk); }

test: install test-tools
	$(VENV)/bin/ruff check hpacs tests benchmarks
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install test-tools
	$(PY) -m benchmarks.ingest $(ARGS)

clean:
	rm -rf build $(VENV) hpacs/_ext/*.c hpacs/_ext/*.so
