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
IMAGE_SIZE ?=
PYTEST_ARGS ?=

# Container images: make images / make push build and push them, make compile bakes these names
# into the pipeline. Override: make push REGISTRY=us-docker.pkg.dev/PROJECT_ID/transfer-learning
# One version scheme (docs/operations.md, "Versions"): TAG = <package version>-<git commit>, with
# -dirty when an image input (code, lock, Dockerfiles) has uncommitted changes. make push writes
# the pushed digests to IMAGES_ENV; make compile|submit|schedule BY_DIGEST=1 bake those in, and
# make pin OVERLAY=prod pins an overlay to them.
REGISTRY ?= us-docker.pkg.dev/my-project/transfer-learning
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)
IMAGE_INPUTS := pyproject.toml requirements.lock docker components pipelines
DIRTY := $(if $(shell git status --porcelain -- $(IMAGE_INPUTS) 2>/dev/null),-dirty)
TAG ?= $(VERSION)-$(COMMIT)$(DIRTY)
IMAGES_ENV ?= build/images.env
ifeq ($(BY_DIGEST),1)
include $(IMAGES_ENV)
endif
CPU_IMAGE ?= $(REGISTRY)/tl-cpu:$(TAG)
GPU_IMAGE ?= $(REGISTRY)/tl-gpu:$(TAG)

.PHONY: help install lint test test-slow test-all fuzz bench run clean

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

test: $(STAMP) ## Run the test suite without the slow tier (installs first when .venv is missing or stale)
	$(VENV)/bin/pytest -m "not deploy and not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## The slow tier: kills and resumes, transfer training, the bench smoke run, real data
	$(VENV)/bin/pytest -m "slow and not deploy" $(PYTEST_ARGS)

test-all: test test-slow ## Both tiers

bench: $(STAMP) ## Benchmarks on real Fashion-MNIST: bench/results/, docs/BENCHMARKS.md (QUICK=1: ~12 min)
	$(PY) -m bench $(if $(QUICK),--quick)

FUZZ_EXAMPLES ?= 400
fuzz: $(STAMP) ## Long property-based fuzz runs of the parsers (FUZZ_EXAMPLES per test)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest -m fuzz $(PYTEST_ARGS)

# Pipeline (python -m pipelines; README "Running the pipeline"). make run PROFILE=full,
# make run WEIGHTS=none, make submit HOST=https://... STORE=gs://bucket/prefix PARAMS="seed=7".
PROFILE ?= quick
WEIGHTS ?= default
EPOCHS ?=
PARAMS ?=
HOST ?= http://localhost:8080
EXPERIMENT ?= transfer-learning
CRON ?= 0 3 * * 1
PACKAGE ?= transfer-learning.pipeline.yaml
PIPELINE_PARAMS = --source '$(SOURCE)' --weights '$(WEIGHTS)' --param 'dataset_name=$(DATASET)' \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(LIMIT),--param 'limit=$(LIMIT)') \
	$(if $(IMAGE_SIZE),--param 'image_size=$(IMAGE_SIZE)') \
	$(foreach param,$(PARAMS),--param '$(param)')
# Only a gs:// store is baked into what runs on the cluster; a local folder is for kfp.local.
CLUSTER_STORE = $(if $(filter gs://%,$(STORE)),--store '$(STORE)')
IMAGES = --cpu-image '$(CPU_IMAGE)' --gpu-image '$(GPU_IMAGE)'
# Cluster builds refuse the example registry, :latest and the example store unless asked.
GPU_TYPE ?= nvidia-l4
CLUSTER_IMAGES = $(IMAGES) --gpu-type '$(GPU_TYPE)' $(if $(ALLOW_PLACEHOLDERS),--allow-placeholders)
ENDPOINT = --host '$(HOST)' --experiment '$(EXPERIMENT)'

.PHONY: local compile submit schedule runs

run: $(STAMP) ## Run the whole pipeline here with kfp.local (PROFILE, STORE, SOURCE, WEIGHTS, EPOCHS, IMAGE_SIZE, PARAMS)
	$(PY) -m pipelines run --profile '$(PROFILE)' --store '$(STORE)' $(PIPELINE_PARAMS)

local: $(STAMP) ## Run it in the project images with kfp.local's DockerRunner (make images first)
	$(PY) -m pipelines run --docker $(IMAGES) --profile '$(PROFILE)' --store '$(STORE)' \
		$(PIPELINE_PARAMS)

compile: $(STAMP) ## Write the pipeline YAML for the KFP UI (STORE=gs://..., BY_DIGEST=1, GPU_TYPE, ALLOW_PLACEHOLDERS=1)
	$(PY) -m pipelines compile --output '$(PACKAGE)' $(CLUSTER_IMAGES) $(CLUSTER_STORE)

submit: $(STAMP) ## Upload the pipeline (or a new version) to HOST and start a run (PROFILE=full default)
	$(PY) -m pipelines submit $(ENDPOINT) $(CLUSTER_IMAGES) --profile '$(if $(filter command line,$(origin PROFILE)),$(PROFILE),full)' \
		$(CLUSTER_STORE) $(PIPELINE_PARAMS)

schedule: $(STAMP) ## Upload the pipeline to HOST and create a recurring run on CRON
	$(PY) -m pipelines schedule $(ENDPOINT) $(CLUSTER_IMAGES) --cron '$(CRON)' \
		--profile '$(if $(filter command line,$(origin PROFILE)),$(PROFILE),full)' $(CLUSTER_STORE) $(PIPELINE_PARAMS)

runs: $(STAMP) ## List the recent runs on HOST and their state
	$(PY) -m pipelines runs $(ENDPOINT)

clean: ## Remove the virtual environment, the local store and caches
	rm -rf $(VENV) store .pytest_cache .ruff_cache

# Deployment: images and cluster manifests (docker/, k8s/; docs/operations.md).
DOCKER ?= docker
PLATFORM ?= linux/amd64
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30

.PHONY: images cpu-image gpu-image base-image image-locks check-images audit push version pin check-deploy

GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

# BASE_IMAGE empty: the Dockerfiles' pinned official base. Without a registry: make base-image,
# then make images BASE_IMAGE=<the tag it printed> (docs/operations.md "Images without a registry").
BASE_IMAGE ?=
BUILD_ARGS = --platform $(PLATFORM) --build-arg TL_GIT_COMMIT=$(GIT_COMMIT) \
	$(if $(BASE_IMAGE),--build-arg 'BASE_IMAGE=$(BASE_IMAGE)')

images: cpu-image gpu-image ## Build the CPU and GPU images (REGISTRY, TAG, BASE_IMAGE; needs a Docker engine)

cpu-image: ## Build the CPU image only (CPU_IMAGE, BASE_IMAGE)
	$(DOCKER) build $(BUILD_ARGS) -f docker/Dockerfile.cpu -t '$(CPU_IMAGE)' .

gpu-image: ## Build the GPU image only (GPU_IMAGE, BASE_IMAGE)
	$(DOCKER) build $(BUILD_ARGS) -f docker/Dockerfile.gpu -t '$(GPU_IMAGE)' .

base-image: ## Build a base image from Debian's packages (no registry needed) and print its tag
	@DOCKER='$(DOCKER)' sh docker/base-image.sh

image-locks: $(STAMP) ## Rewrite docker/requirements-*.txt (hashed) from requirements.lock and docker/*constraints.txt
	$(PY) docker/hash_pins.py

check-images: $(STAMP) ## Build the images on a Debian base, run make local in them, check outputs and a failing task
	bash docker/check-images.sh

# Vulnerability audit of every pin: pip-audit in its own environment, against the OSV database
# (network). --strict: a package it could not look up fails the audit instead of passing it.
AUDIT_VENV ?= .venv-audit
PIP_AUDIT_VERSION ?= 2.10.1
$(AUDIT_VENV)/.installed:
	rm -rf $(AUDIT_VENV)
	$(PYTHON_SYS) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit==$(PIP_AUDIT_VERSION)
	touch $@

audit: $(AUDIT_VENV)/.installed ## Audit the pins (lock and images' hashed requirements) for known vulnerabilities (needs OSV)
	$(AUDIT_VENV)/bin/pip-audit --strict --disable-pip --no-deps -r requirements.lock -r docker/constraints.txt
	$(AUDIT_VENV)/bin/pip-audit --strict --disable-pip --require-hashes -r docker/requirements-gpu.txt

push: images ## Push both images to REGISTRY, print their digests and write them to IMAGES_ENV
	@case '$(TAG)' in *-dirty) if [ -z '$(ALLOW_DIRTY)' ]; then \
		echo "error: uncommitted changes in $(IMAGE_INPUTS): commit them, or ALLOW_DIRTY=1" >&2; \
		exit 1; fi;; esac
	@mkdir -p '$(dir $(IMAGES_ENV))' && : > '$(IMAGES_ENV).tmp'
	@$(call push_image,CPU_IMAGE,$(CPU_IMAGE))
	@$(call push_image,GPU_IMAGE,$(GPU_IMAGE))
	@mv '$(IMAGES_ENV).tmp' '$(IMAGES_ENV)' && cat '$(IMAGES_ENV)'

# $(call push_image,VARIABLE,image:tag): push, read the digest docker prints, record VARIABLE=image@digest.
define push_image
set -o pipefail; ref='$(2)'; \
digest=$$($(DOCKER) push '$(2)' | tee /dev/stderr | \
	sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' | tail -n 1); \
[ -n "$$digest" ] || { echo "error: docker push $(2) printed no digest" >&2; exit 1; }; \
echo "$(1)=$${ref%:*}@$$digest" >> '$(IMAGES_ENV).tmp'
endef

version: ## Print the image tag this tree builds (<package version>-<commit>[-dirty])
	@echo '$(TAG)'

OVERLAY ?= prod
OVERLAYS_DIR ?= k8s/overlays
pin: ## Pin OVERLAY's images (kustomization, retrain.env) to the digests in IMAGES_ENV
	@test -f '$(IMAGES_ENV)' || { echo "error: $(IMAGES_ENV) not found: run make push" >&2; exit 1; }
	@set -e; . '$(abspath $(IMAGES_ENV))'; dir='$(OVERLAYS_DIR)/$(OVERLAY)'; \
	sed -i -E -e "s|^(    newName: ).*/tl-cpu$$|\1$${CPU_IMAGE%@*}|" \
		-e "s|^    (newTag\|digest): .*$$|    digest: $${CPU_IMAGE#*@}|" "$$dir/kustomization.yaml"; \
	sed -i -E "s|^GPU_IMAGE=.*|GPU_IMAGE=$$GPU_IMAGE|" "$$dir/retrain.env"; \
	grep -H -E "newName|digest" "$$dir/kustomization.yaml"; grep -H GPU_IMAGE "$$dir/retrain.env"

# checkov has dependencies that clash with the project's, so it gets its own virtual environment.
$(CHECKOV_VENV)/.installed:
	rm -rf $(CHECKOV_VENV)
	$(PYTHON_SYS) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

check-deploy: $(STAMP) $(CHECKOV_VENV)/.installed ## Deploy checks: hadolint, shellcheck, kubernetes-validate, checkov, image install replay
	$(VENV)/bin/pytest -p no:cacheprovider tests/test_deploy.py tests/test_deploy_install.py
