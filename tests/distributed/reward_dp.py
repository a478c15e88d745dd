"""Run under `accelerate launch --multi_gpu --num_processes 2` (gloo, CPU; tests/test_distributed.py): FocalReward on each process's share of a batch whose groups
are split across processes, three steps; writes what each process saw to OUT/rank<k>.json.

    accelerate launch --multi_gpu --num_processes 2 --mixed_precision no tests/distributed/reward_dp.py OUT
"""

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the shared items

from accelerate import PartialState  # noqa: E402

from focal.rewards.reward import FocalReward  # noqa: E402
from helpers import ITEMS  # noqa: E402

BATCHES = [["the sun", "a b c d e f g !", "sun", "why", "the moon is sun", "no", "cat cat cat cat cat cat", "! !"],
           ["sun !", "a", "b", "the sun sleeps", "green", "why not", "sun sun", "x y z"],
           ["a b", "c d", "e f !", "sun", "sun", "sun", "moon", "dog"]]
PROMPTS = ["p0"] * 4 + ["p1"] * 4  # two groups of G = 4


def main(out: Path):
    state = PartialState(cpu=True)  # as TRL's Accelerator does with use_cpu: gloo process group
    rank, n = state.process_index, state.num_processes
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="focal", gamma=2.0)
    seen = []
    for batch in BATCHES:
        mine = list(range(rank, len(batch), n))  # interleaved: every group is split across the processes
        rewards = asyncio.run(reward(prompts=["x"] * len(mine), completions=[batch[i] for i in mine],
                                     prompt_id=[PROMPTS[i] for i in mine]))
        seen.append({"indices": mine, "rewards": rewards})
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({"processes": n, "steps": seen, "state": reward.state.m}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
