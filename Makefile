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

# Mutation testing of the method's modules (setup.cfg [mutmut]; docs/testing.md). Resumable: mutmut
# keeps its results in mutants/ and tests only mutants without a result (name survivors in MUTANTS to
# retest them). MUTANTS: mutant-name globs, e.g. "pipeline.distillation.losses.*"; MUTATE_JOBS: workers.
MUTANTS ?=
MUTATE_JOBS ?= 1
mutate: setup
	OMP_NUM_THREADS=1 nice -n 10 $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(PY) -m tests.mutation_summary

lint: setup
	$(VENV)/bin/ruff check pipeline data_prep tests benchmarks docker

bench: setup
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
