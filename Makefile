# phonon_flows: `make demo` runs the main job, `make test` the tests. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# mongoeco (a MongoDB wire-protocol server used by the tests) needs Python >= 3.13, in its own venv.
# (pyenv's shim for python3.13 fails when 3.13 is not the global version, so try the real binaries first)
PY313 ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[3-9]*/bin/python3 2>/dev/null) $$(command -v python3.13 python3.14 2>/dev/null); do "$$p" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null && { echo "$$p"; break; }; done)
MONGOECO_VENV := .venv-mongoeco
MONGOECO_STAMP := $(MONGOECO_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup setup-mongoeco demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11+)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	# torch is pinned: a range would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

setup-mongoeco: $(MONGOECO_STAMP)

$(MONGOECO_STAMP):
	@test -n "$(PY313)" || { echo "mongoeco needs Python >= 3.13 (python3.13 not found; try 'pyenv install 3.13')"; exit 1; }
	test -x $(MONGOECO_VENV)/bin/python || $(PY313) -m venv $(MONGOECO_VENV)
	$(MONGOECO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MONGOECO_VENV)/bin/python -m pip install --quiet "mongoeco[wire]>=4.10"
	touch $(MONGOECO_STAMP)

demo: setup
	$(VENV)/bin/phonon-flows demo

test: setup setup-mongoeco
	PHONON_FLOWS_MONGOECO_PYTHON=$(abspath $(MONGOECO_VENV))/bin/python $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/phonon_throughput.py

clean:
	rm -rf $(VENV) $(MONGOECO_VENV) .pytest_cache
