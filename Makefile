# Two commands on a fresh machine: `make demo` and `make test`. Both create and fill .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV  := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint models models-manifest models-scan bench clean help

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

# The shipped models, from generated data with fixed seeds (see each model card).
RE := $(VENV)/bin/riskengine
models: models-manifest models-scan

models-manifest: $(STAMP_DEV)
	mkdir -p build
	$(RE) generate manifests --rows 1980000 --days 396 --seed 11 --exclude-last-days 31 --out build/manifests_history.parquet
	$(RE) train --data build/manifests_history.parquet --out models/manifest --seed 7
	$(RE) generate manifests --rows 1980000 --days 396 --seed 11 --out build/manifests_13m.parquet
	$(RE) evaluate --model models/manifest --data build/manifests_13m.parquet --all-rows --since 2027-01-01 \
	  --plot models/manifest/reliability.png --record 'the 31 days after training, same generated world (seed 11)'

models-scan: $(STAMP_DEV)
	$(PY) -m scanvision.train --generate 4500 --seed 1 --epochs 24 --out build/scanvision_base $(if $(wildcard ../shared/data/xray_reference),--reference-dir ../shared/data/xray_reference)
	$(PY) -m scanvision.transfer --base build/scanvision_base --out models/scanvision --generate 1500 --val 300 --epochs 8 --lr 0.001 --seed 3 --eval 1000 --eval-seed 20240 $(if $(wildcard ../shared/data/xray_reference),--reference-dir ../shared/data/xray_reference) $(if $(wildcard ../shared/data/xray_site_dev),--site-dir ../shared/data/xray_site_dev)

bench: $(STAMP_DEV)
	$(PY) benchmarks/generate_manifests.py
	$(PY) benchmarks/manifest_scoring.py --model models/manifest --rows 100000 --repeat 3 --out benchmarks/results/manifest_scoring.json
	$(PY) benchmarks/scanner.py
	$(PY) benchmarks/rescore_10m.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info demo_out
