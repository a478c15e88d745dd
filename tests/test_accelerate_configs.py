"""Every accelerate config in configs/accelerate/ builds the trainer, with the GPU profile (configs/gpu.yaml), under
the real `accelerate launch`, on the tiny model: `python -m stages.train --dry-run` stops before the first step.

On this CPU machine each config is launched with one process (`--num_processes 1 --num_machines 1`); the dry run
turns vLLM generation off without CUDA and says so. What is checked is what accelerate and TRL built: the
distributed type of the yaml (MULTI_GPU runs as MULTI_CPU without CUDA), the DeepSpeed ZeRO stage, the mixed
precision and the batch of the profile. A new yaml in configs/accelerate/ is covered without editing this file.
The launches run two at a time (about 15 s each here).   pytest tests/test_accelerate_configs.py
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from focal.config import Params, render_params_yaml
from focal.rubrics.sets import item_to_row
from helpers import ITEMS
from tiny import make_tiny_model

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
PROFILE = ROOT / "configs" / "gpu.yaml"
ONE_PROCESS = ("--num_processes", "1", "--num_machines", "1", "--machine_rank", "0")
CASES = {c.stem: (c, ONE_PROCESS) for c in CONFIGS}  # two real processes: tests/test_distributed.py


def tiny_params(folder: Path) -> Path:
    """params.yaml for the tiny model and ITEMS, with configs/gpu.yaml on top."""
    model = make_tiny_model(folder / "tiny")
    pd.DataFrame([item_to_row(it) for it in ITEMS]).to_parquet(folder / "train.parquet")
    raw = yaml.safe_load(render_params_yaml(Params()))
    for section, values in yaml.safe_load(PROFILE.read_text()).items():
        raw[section].update(values)
    raw["paths"].update(base_model=str(model), train_prompts=str(folder / "train.parquet"))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def dry_run(config: Path, flags: tuple, params: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *flags,
           "--main_process_port", "0", "-m", "stages.train", "--dry-run", "--params", str(params)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("dry-run json: ")]
    if proc.returncode != 0 or len(lines) != 1:
        return {"error": f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"}
    return {**json.loads(lines[0].removeprefix("dry-run json: ")), "stdout": proc.stdout}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    params = tiny_params(tmp_path_factory.mktemp("dry-run"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(dry_run, config, flags, params) for name, (config, flags) in CASES.items()}
        return {name: f.result() for name, f in futures.items()}


def test_there_are_configs_for_each_scale():
    assert {"single_gpu", "multi_gpu", "multi_node", "deepspeed_zero2", "deepspeed_zero3"} <= {c.stem for c in CONFIGS}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_builds_the_trainer_it_describes(built, name):
    got = built[name]
    assert "error" not in got, got.get("error")
    config, flags = CASES[name]
    spec = yaml.safe_load(config.read_text())
    cuda = False  # this machine; on a GPU box MULTI_GPU stays MULTI_GPU
    expected_type = {"NO": "NO", "MULTI_GPU": "MULTI_GPU" if cuda else "MULTI_CPU",
                     "DEEPSPEED": "DEEPSPEED"}[spec["distributed_type"]]
    assert got["distributed_type"] == expected_type
    assert got["world_size"] == int(flags[flags.index("--num_processes") + 1])
    zero = (spec.get("deepspeed_config") or {}).get("zero_stage")
    assert got["deepspeed_zero_stage"] == zero
    if zero:
        offload = spec["deepspeed_config"]
        assert got["deepspeed_offload"] == {"optimizer": offload["offload_optimizer_device"],
                                            "params": offload["offload_param_device"]}
        assert got["deepspeed_train_batch_size"] == got["effective_batch"]  # DeepSpeed's batch is the trainer's
    mixed = flags[flags.index("--mixed_precision") + 1] if "--mixed_precision" in flags else spec["mixed_precision"]
    assert got["mixed_precision"] == mixed
    train = yaml.safe_load(PROFILE.read_text())["train"]
    per_process = train["prompts_per_step"] * train["num_generations"]
    assert got["completions_per_process"] == per_process
    assert got["effective_batch"] == per_process * got["world_size"] * got["gradient_accumulation_steps"]
    assert got["num_generations"] == train["num_generations"] and got["max_steps"] == train["max_steps"]
    assert got["activation_checkpointing"] is True and got["bf16"] is False  # bf16 needs CUDA: off here, as in training
    assert got["use_vllm"] is False and any("train.use_vllm true -> false" in n for n in got["overrides"])
    assert "override (this dry run only): train.use_vllm" in got["stdout"]


def test_gpu_knobs_reach_grpo_config_and_defaults_keep_trl_defaults(tmp_path):
    from trl import GRPOConfig

    from focal.config import Train
    from focal.training.trainer import grpo_config

    default = grpo_config(Train(), str(tmp_path), 0)
    trl = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert default.activation_checkpointing is False and default.use_vllm is False
    assert (default.vllm_mode, default.vllm_server_base_url) == (trl.vllm_mode, trl.vllm_server_base_url)
    server = grpo_config(Train(use_vllm=True, vllm_server_base_url="http://gpu:8000"), str(tmp_path), 0)
    assert (server.use_vllm, server.vllm_mode, server.vllm_server_base_url) == (True, "server", "http://gpu:8000")
    colocate = grpo_config(Train(use_vllm=True, vllm_mode="colocate", vllm_server_base_url="http://gpu:8000",
                                 activation_checkpointing=True), str(tmp_path), 0)
    assert (colocate.vllm_mode, colocate.vllm_server_base_url, colocate.activation_checkpointing) == \
        ("colocate", None, True)  # the server URL means nothing in colocate mode
    with pytest.raises(ValueError, match="train.vllm_mode must be one of server, colocate"):
        Train(vllm_mode="remote")


def test_dry_run_overrides_only_what_cannot_be_built_without_cuda(monkeypatch):
    import torch

    from focal.config import Train
    from focal.training.trainer import dry_run_overrides

    gpu = Train(use_vllm=True, vllm_mode="colocate", bf16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg, notes = dry_run_overrides(gpu)
    assert cfg.use_vllm is False and cfg.bf16 is True and len(notes) == 1 and "colocate" in notes[0]
    assert dry_run_overrides(Train()) == (Train(), [])  # the CPU defaults: nothing to change
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dry_run_overrides(gpu) == (gpu, [])
