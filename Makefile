# Two commands on a fresh machine: `make demo` and `make test`. Both create and fill .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV  := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint models bench clean help

help:
	@echo "make demo    - run the main job on embedded defaults (creates .venv)"
	@echo "make test    - install with the train,dev extras and run the test suite"
	@echo "make models  - retrain the shipped models in models/ (fixed seeds)"
	@echo "make bench   - run the benchmarks in benchmarks/ and write benchmarks/results/"
	@echo "make lint    - ruff"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_CORE): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[train,dev,scale]'
	touch $@ $(STAMP_CORE)

demo: $(STAMP_CORE)
	$(VENV)/bin/riskengine demo

test: $(STAMP_DEV)
	$(PY) -m pytest -q

test-fast: $(STAMP_DEV)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check riskengine scanvision tests benchmarks

models: $(STAMP_DEV)
	$(MAKE) -f models/Makefile PY=$(PY)

bench: $(STAMP_DEV)
	$(PY) benchmarks/generate_manifests.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
