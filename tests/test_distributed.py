"""FocalReward under data parallelism with a real distributed engine: two CPU processes (accelerate launch, gloo).

Each process gets half of every batch, interleaved, so every prompt's group is split across processes. The
rewards must equal those of one process computing on the whole batch, and both processes must end with the same
Focal state.  pytest -m distributed

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

import pytest

from focal.reward import FocalReward
from test_train import ITEMS

HERE = Path(__file__).parent


def launch(script: Path, *args, procs: int = 2, timeout: int = 240):
    """`accelerate launch` of `script` on `procs` CPU processes (see the module docstring for the flags)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
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
    assert [r["processes"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]
    assert set(ranks[0]["state"]) == {"short", "sun", "bang"}
    assert ranks[0]["state"] == ranks[1]["state"]  # the same global batch aggregated on both processes
    assert ranks[0]["rewards"] == ranks[1]["rewards"]  # TRL's logged batch reward: the same global figure
