# Set-up is part of every target: a fresh machine needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: setup run test test-slow test-gpu lint bench mutate clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

setup: $(STAMP)

run: setup
	$(PY) -m pipeline.experiment $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

# CUDA checks (AMP training, teacher and distillation on the GPU, DDP with nccl, the Docker entry point);
# every test skips with its reason where CUDA or enough GPUs are missing
test-gpu: setup
	$(PY) -m pytest -q -rs -m gpu $(ARGS)

# Mutation testing of the method's modules, each against its own tests (tests/mutation.py,
# docs/testing.md). Resumable: results stay in .mutmut/<module>/; a rerun tests only mutants without
# a result (RETEST=--retest reruns the survivors too). MODULES: e.g. "losses trainer" (default: all).
MODULES ?=
MUTATE_JOBS ?= 1
RETEST ?=
mutate: setup
	nice -n 10 $(PY) -m tests.mutation run $(MODULES) --jobs $(MUTATE_JOBS) $(RETEST)

lint: setup
	$(VENV)/bin/ruff check pipeline data_prep tests benchmarks docker

bench: setup
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
