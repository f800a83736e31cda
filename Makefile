# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   create .venv, install the pinned dependencies, run the workflow on the bundled sample
#   make test   the same set-up, then the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON := $(PYTHON)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Rules that run shell commands (nbconvert) find the environment's executables, as if activated.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test test-all lint clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/sample

test: $(STAMP)
	$(BIN)/pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
