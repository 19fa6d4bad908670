# CheXpert workbook. `make help` lists the targets; `make demo` and `make test` do their own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
JOBS   ?= 2
# OpenMP threads waiting for work sleep instead of spinning (more threads than free cores otherwise
# collapse: docs/performance.md); every recipe (Lab's kernels included) inherits it; a value you set is kept
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast test-browser lint format lab clean-output clean-cache public-labels

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv (Python 3.11) and install chexutils with its dev extras; a no-op when done
$(STAMP): pyproject.toml
	@echo "setup: installing chexutils and its pinned dependencies into $(VENV) (about 3 minutes the first time: torch brings its CUDA libraries)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --editable '.[dev]'
	touch $(STAMP)

demo: setup ## run the whole workbook on a generated phantom CheXpert (CONFIG=configs/demo.yaml; FORCE=1 re-runs and retrains; JOBS=2 grid points at once)
	$(PY) -m chexutils workbook run $(CONFIG) --jobs $(JOBS) $(if $(FORCE),--force)

test: lint ## lint, then run the test suite (what CI runs)
	$(PY) -m pytest

test-fast: setup ## the suite without the notebook-executing tests (the edit-test loop; make test runs everything)
	$(PY) -m pytest -m "not browser and not notebooks"

test-browser: setup ## the real-browser test: JupyterLab in Debian's headless chromium (apt-get install chromium)
	$(PY) -m pytest -m browser

lint: setup ## ruff: lint rules and formatting check (config in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## ruff: fix what can be fixed and format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lab: setup ## open JupyterLab at the repository root (notebooks/, output/); ARGS=... go to jupyter lab; as root adds --allow-root; encrypted kernels; no news pop-up or update check
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
		--KernelManager.transport_encryption=auto --LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

clean-output: setup ## delete the sweep and run folders the workbook made under output/ (locked ones and anything else are kept and named)
	$(PY) -m chexutils housekeeping clean-output

clean-cache: setup ## list, then remove partial and outdated image caches (CACHE=folder; default: data/*/cache and output/*/cache; ALL=1: every cache); only folders the cache made
	$(PY) -m chexutils cache_admin list $(if $(CACHE),"$(CACHE)")
	$(PY) -m chexutils cache_admin clean $(if $(CACHE),"$(CACHE)") $(if $(ALL),--all)

public-labels: setup ## clone rajpurkarlab/cheXpert-test-set-labels at its pinned commit (a03eb34) into data/cheXpert-test-set-labels/; a no-op when there
	$(PY) -m chexutils public_labels
