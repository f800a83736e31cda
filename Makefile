# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   create .venv, install the pinned dependencies, run the workflow on the bundled sample
#   make test   the same set-up, then the whole test suite (what CI runs)
# and one builds the container image (docker/Dockerfile) from a wheelhouse of the pinned wheels:
#   make image [CONTAINER=docker] [BASE=$$(docker/local-base.sh)]
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON := $(PYTHON)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint serve app clean gpu-check image rulegraph

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/sample

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# The inference service and the Streamlit app on the default run's exported baseline CNN.
serve: $(STAMP)
	$(BIN)/skinlesion serve --model results/export/baseline_cnn

app: $(STAMP)
	$(BIN)/skinlesion app --model results/export/baseline_cnn

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

# The workflow's rule graph, drawn by Snakemake, into docs/rulegraph.md (tests/test_rulegraph.py checks it is current).
rulegraph: $(STAMP)
	$(BIN)/python -m skinlesion.rulegraph docs/rulegraph.md

clean:
	rm -rf results .snakemake

# The GPU path end to end on a machine with a GPU (benchmarks/gpu_check.py; writes gpu_check.json).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --data ../shared/data/ham10000 --out gpu_check.json

# The container image: the pinned wheels collected once into a wheelhouse (sdists built here), then the build, which
# installs from it without a package index. BASE=$(docker/local-base.sh) where no registry answers.
CONTAINER ?= podman
IMAGE ?= skinlesion
BASE ?= python:3.11.7-slim-bookworm
WHEELHOUSE ?= build/wheelhouse
# The commit as result files record it (marked when tracked files have uncommitted changes).
GIT_COMMIT ?= $(shell $(BIN)/python -c 'from skinlesion.provenance import git_commit; print(git_commit("."))' 2>/dev/null || echo unknown)

$(WHEELHOUSE)/.complete: requirements.lock
	$(BIN)/pip wheel --quiet --no-deps -r requirements.lock "setuptools>=68" -w $(WHEELHOUSE)
	touch $@

image: $(STAMP) $(WHEELHOUSE)/.complete
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/docker/containers.conf} $(CONTAINER) build \
	  -f docker/Dockerfile --build-context wheels=$(WHEELHOUSE) --build-arg BASE=$(BASE) \
	  --build-arg SKINLESION_GIT_COMMIT="$(GIT_COMMIT)" -t $(IMAGE) .
