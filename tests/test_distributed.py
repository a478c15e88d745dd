"""FocalReward and the train stage under data parallelism with a real distributed engine: two CPU processes
(accelerate launch, gloo).

Each process gets half of every batch, interleaved, so every prompt's group is split across processes. The
rewards must equal those of one process computing on the whole batch, and both processes must end with the same
Focal state. The train stage itself (`-m stages.train`) runs on two processes and writes each output once, from
the main process.  pytest -m distributed

The launch is `accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no` on a
machine without CUDA: accelerate's launcher starts the processes with torch.distributed.run and each process's
Accelerator, finding no GPU, joins a MULTI_CPU group over gloo. Not `--cpu`: with accelerate 1.15, `--cpu` sends
the launch to its simple launcher, which starts ONE plain python process (no RANK, no process group) unless
`--mpirun_hostfile` hands it to MPI; the same happens with a config file whose distributed_type is MULTI_CPU.
A launch is retried once (1 launch in 4 aborted with SIGABRT here under torchrun).
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from focal.config import Params, render_params_yaml
from focal.rewards.reward import FocalReward
from focal.rubrics.sets import item_to_row
from helpers import ITEMS
from tiny import make_tiny_model

HERE = Path(__file__).parent


def launch(script: Path, *args, procs: int = 2, timeout: int = 240, engine: tuple = ("--multi_gpu",)):
    """`accelerate launch` of `script` on `procs` CPU processes (see the module docstring for the flags); `engine`:
    the distributed engine's flags (DDP by default)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *engine, "--num_processes", str(procs),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(script), *map(str, args)]
    for attempt in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0:
            return proc
    raise AssertionError(f"accelerate launch failed twice:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.mark.distributed
def test_two_processes_aggregate_the_global_batch_and_share_one_state(tmp_path):
    from distributed.reward_dp import BATCHES, PROMPTS

    launch(HERE / "distributed" / "reward_dp.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    single = FocalReward({it.id: it for it in ITEMS}, aggregator="focal", gamma=2.0)
    for step, batch in enumerate(BATCHES):
        whole = asyncio.run(single(prompts=["x"] * len(batch), completions=batch, prompt_id=PROMPTS))
        for r in ranks:
            got = r["steps"][step]
            assert got["rewards"] == pytest.approx([whole[i] for i in got["indices"]], abs=1e-12), (step, got)
    assert ranks[0]["state"] == ranks[1]["state"] == pytest.approx(single.state.m, abs=1e-12)


@pytest.mark.distributed
def test_grpo_steps_data_parallel_end_with_one_focal_state(tmp_path):
    launch(HERE / "distributed" / "grpo_dp.py", tmp_path)
    ranks = [json.loads((tmp_path / f"grpo-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]  # 4 steps, 2 generations
    assert [r["trunk_layers"] for r in ranks] == [1, 1] and all(r["finite_loss"] for r in ranks)
    assert set(ranks[0]["state"]) == {"short", "sun", "bang"}
    assert ranks[0]["state"] == ranks[1]["state"]  # the same global batch aggregated on both processes
    assert ranks[0]["rewards"] == ranks[1]["rewards"]  # TRL's logged batch reward: the same global figure


def stage_params(folder: Path) -> Path:
    """params.yaml for a 2-step run of the train stage on the tiny model and ITEMS (all checks: no judge), every
    path in `folder` (the rubric set, read only, from the repository)."""
    pd.DataFrame([item_to_row(it) for it in ITEMS]).to_parquet(folder / "train.parquet")
    raw = yaml.safe_load(render_params_yaml(Params()))
    raw["train"].update(max_steps=2, prompts_per_step=1, num_generations=4, max_completion_length=6, save_steps=1)
    raw["paths"].update(
        base_model=str(make_tiny_model(folder / "tiny")), train_prompts=str(folder / "train.parquet"),
        rubrics=str(HERE.parent / "rubrics"), judgments=str(folder / "absent.parquet"),
        judge_cache=str(folder / "judge.sqlite"), trained_model=str(folder / "models" / "trained"),
        train_log=str(folder / "dvclive"), train_report=str(folder / "report"),
        train_checkpoints=str(folder / "checkpoints"), judge_template=str(folder / "judge_template.md"))
    from focal.judging.prompts import DEFAULT_TEMPLATE

    (folder / "judge_template.md").write_text(DEFAULT_TEMPLATE)  # what the prepare stage writes (the stage reads it)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return folder / "params.yaml"


# ZeRO-3 with every parameter sharded (a persistence threshold of 0: by default DeepSpeed leaves parameters under
# 100k elements whole, which is every parameter of the tiny model), so saving must gather the shards
ENGINES = {"ddp": ("--multi_gpu",),
           "zero3": ("--use_deepspeed", "--deepspeed_config_file", str(HERE / "distributed" / "zero3_cpu.json"))}


@pytest.mark.distributed
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_train_stage_on_two_processes_writes_each_output_once(tmp_path, engine):
    from transformers import AutoModelForCausalLM

    from focal.training.trainer import last_checkpoint

    proc = launch("-m", "stages.train", "--params", stage_params(tmp_path), engine=ENGINES[engine])  # exit 0: both ended
    assert proc.stdout.count("train: 2 steps with 'focal'") == 1  # the summary, from the main process only
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == ["trained"]  # no temp folder left
    assert {p.name for p in (models / "trained").iterdir()} == {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja"}  # a plain HF folder, as one process writes it
    AutoModelForCausalLM.from_pretrained(models / "trained")
    rows = (tmp_path / "dvclive" / "plots" / "metrics" / "reward.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["step", "1", "2"]  # one logger: no step twice
    assert (tmp_path / "report" / "report.md").exists()
    (work,) = (tmp_path / "checkpoints").iterdir()
    assert last_checkpoint(work).name == "checkpoint-2"  # with Focal's state beside it
    shards = list((work / "checkpoint-2").glob("global_step2/*zero_pp_rank_1_*model_states.pt"))
    assert bool(shards) == (engine == "zero3")  # DeepSpeed's per-process checkpoint: the engine really ran


class FakeState:
    """The rank-facing part of an Accelerator: is this the main process, and a barrier that counts its calls."""

    def __init__(self, main: bool):
        self.is_main_process, self.barriers = main, 0

    def wait_for_everyone(self):
        self.barriers += 1


@pytest.mark.parametrize("main", [True, False])
def test_on_main_runs_on_the_main_process_only_and_every_process_waits(main):
    from focal.training.trainer import on_main

    called, state = [], FakeState(main)
    out = on_main(state, lambda x: called.append(x) or "written", 7)
    assert (out, called) == (("written", [7]) if main else (None, []))
    assert state.barriers == 1


def test_shared_atomic_dir_on_the_main_process_replaces_the_folder_after_everyone(tmp_path):
    from focal.training.trainer import shared_atomic_dir

    state, out = FakeState(True), tmp_path / "trained"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with shared_atomic_dir(state, out) as tmp:
        (tmp / "model.txt").write_text("new")
        assert state.barriers == 0 and (out / "old.txt").exists()
    assert [p.name for p in out.iterdir()] == ["model.txt"] and state.barriers == 2
    assert [p.name for p in tmp_path.iterdir()] == ["trained"]  # no temp folder left


def test_focal_state_is_written_beside_a_checkpoint_by_the_saving_process_only(tmp_path):
    from types import SimpleNamespace

    from focal.training.trainer import STATE_FILE, SaveFocalState

    (tmp_path / "checkpoint-3").mkdir()
    saver = SaveFocalState(SimpleNamespace(checkpoint=lambda: {"m": {"a": 0.5}}))
    step = SimpleNamespace(global_step=3)
    saver.on_save(SimpleNamespace(should_save=False, output_dir=str(tmp_path)), step, None)
    assert not (tmp_path / "checkpoint-3" / STATE_FILE).exists()
    saver.on_save(SimpleNamespace(should_save=True, output_dir=str(tmp_path)), step, None)
    assert json.loads((tmp_path / "checkpoint-3" / STATE_FILE).read_text()) == {"m": {"a": 0.5}}


def test_a_local_judge_server_is_refused_under_several_processes():
    from focal.training.trainer import judge_server_check

    with pytest.raises(ValueError, match="judge.base_url is empty and training runs on 2 processes"):
        judge_server_check("", needed=True, processes=2)
    judge_server_check("http://judge:8000/v1", needed=True, processes=2)
    judge_server_check("", needed=False, processes=2)  # all checks: no server at all
    judge_server_check("", needed=True, processes=1)


def test_zero3_runs_that_could_not_save_a_plain_folder_are_refused_before_training():
    from types import SimpleNamespace

    from focal.training.trainer import saveable_check

    def trainer(stage, gather, lora):
        plugin = SimpleNamespace(zero_stage=stage, deepspeed_config={"zero_optimization": {
            "stage": stage, "stage3_gather_16bit_weights_on_model_save": gather}})
        model = SimpleNamespace(merge_and_unload=None) if lora else SimpleNamespace()
        return SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)), model=model)

    with pytest.raises(ValueError, match="LoRA .* with DeepSpeed ZeRO-3 is not supported"):
        saveable_check(trainer(3, True, lora=True))
    with pytest.raises(ValueError, match="zero3_save_16bit_model: true"):
        saveable_check(trainer(3, False, lora=False))
    saveable_check(trainer(3, True, lora=False))
    saveable_check(trainer(2, False, lora=True))  # ZeRO-2: whole weights on every process
