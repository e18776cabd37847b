# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
DEPS_STAMP := $(VENV)/.deps-stamp
EXT_STAMP := $(VENV)/.ext-stamp
PYX := $(wildcard hpacs/_ext/*.pyx hpacs/_ext/*.pxd)
# The OHIF viewer build (npm tarball of @ohif/app, pinned in hpacs/web/viewer.py).
OHIF_VERSION := $(shell sed -n 's/^OHIF_VERSION: Final = "\(.*\)"/\1/p' hpacs/web/viewer.py)
OHIF_STAMP := $(VENV)/share/ohif/$(OHIF_VERSION)/.hpacs-ohif-version

.PHONY: install run test test-tools bench-tools lint bench clean

install: $(DEPS_STAMP) $(EXT_STAMP) $(OHIF_STAMP)

$(DEPS_STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel Cython numpy
	$(PIP) install --no-build-isolation -e '.[test,bench]'
	touch $@

$(EXT_STAMP): $(DEPS_STAMP) $(PYX) setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

$(OHIF_STAMP): $(DEPS_STAMP) hpacs/web/viewer_install.py
	@command -v npm >/dev/null || { (apt-get update -qq || sudo apt-get update -qq) && \
	    (apt-get install -y -qq npm || sudo apt-get install -y -qq npm); }
	$(PY) -m hpacs.web.viewer_install
	touch $@

run: install
	$(VENV)/bin/hpacs serve $(ARGS)

# Peers the tests drive: dcmtk and the browser (Chromium, driven by Playwright with this
# executable: no browser download) from Debian. A missing tool is a failure, never a skip.
test-tools:
	@command -v storescu >/dev/null && command -v echoscu >/dev/null && \
	  test -x /usr/bin/chromium || \
	  { (apt-get update -qq || sudo apt-get update -qq) && \
	    (apt-get install -y -qq dcmtk chromium || sudo apt-get install -y -qq dcmtk chromium); }

test: install test-tools
	$(VENV)/bin/ruff check hpacs tests benchmarks
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Reference peers of the benchmarks: Orthanc and its DICOMweb plugin (Debian), started by hand
# by the benchmarks on their own ports (the package's own service is not used).
bench-tools:
	@test -x /usr/sbin/Orthanc && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || \
	  { (apt-get update -qq || sudo apt-get update -qq) && \
	    (apt-get install -y -qq orthanc orthanc-dicomweb || \
	     sudo apt-get install -y -qq orthanc orthanc-dicomweb); }

bench: install test-tools bench-tools
	$(VENV)/bin/hpacs bench $(or $(ARGS),all --against orthanc)

clean:
	rm -rf build $(VENV) hpacs/_ext/*.c hpacs/_ext/*.so
