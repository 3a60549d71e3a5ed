# Transfer-learning pipeline: make help lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Common run parameters (override on the command line: make run STORE=gs://bucket/prefix).
STORE ?= $(CURDIR)/store
SOURCE ?= auto
DATASET ?= fashion_mnist
LIMIT ?=
PYTEST_ARGS ?=

.PHONY: help install lint test run clean

help: ## List every target with its description
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c requirements.lock -e '.[cpu,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install everything pinned (requirements.lock)

lint: $(STAMP) ## Lint and format-check with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) ## Run the test suite (installs first when .venv is missing or stale)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: $(STAMP) ## Prepare the dataset locally on the embedded defaults (STORE, SOURCE, LIMIT)
	$(PY) -m components.data_prep --store '$(STORE)' --source '$(SOURCE)' --name '$(DATASET)' \
		$(if $(LIMIT),--limit $(LIMIT))

clean: ## Remove the virtual environment, the local store and caches
	rm -rf $(VENV) store .pytest_cache .ruff_cache
