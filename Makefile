# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   create .venv, install the pinned dependencies, run the workflow on the bundled sample
#   make test   the same set-up, then the whole test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON := $(PYTHON)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint serve app clean gpu-check

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

clean:
	rm -rf results .snakemake

# The GPU path end to end on a machine with a GPU (benchmarks/gpu_check.py; writes gpu_check.json).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --data ../shared/data/ham10000 --out gpu_check.json
