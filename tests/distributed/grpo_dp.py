"""Run under `accelerate launch --multi_gpu --num_processes 2` (tests/test_distributed.py): two GRPO steps of the
tiny model with FocalReward, data parallel on CPU (gloo), one generation for two steps and LoRA on the top layer
(so the old log-probs and the trunk come from sampling, focal/training/grpo.py); writes each process's Focal state to
OUT/grpo-rank<k>.json.

    accelerate launch --multi_gpu --num_processes 2 --mixed_precision no tests/distributed/grpo_dp.py OUT
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

import torch.distributed as dist  # noqa: E402

from focal.config import Train  # noqa: E402
from focal.rewards.reward import FocalReward  # noqa: E402
from focal.training.trainer import build_trainer  # noqa: E402
from helpers import ITEMS  # noqa: E402
from tiny import make_tiny_model  # noqa: E402


def main(out: Path):
    import os

    rank = int(os.environ["RANK"])
    folder = make_tiny_model(out / f"tiny-{rank}")  # the same seed: the same model on every process
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="focal", gamma=2.0)
    cfg = Train(max_steps=4, prompts_per_step=1, num_generations=4, max_completion_length=6, learning_rate=1e-2,
                steps_per_generation=2, lora_r=4, lora_layers=1)
    trainer = build_trainer(str(folder), ITEMS, reward, cfg, str(out / f"run-{rank}"), seed=0)
    trainer.train()
    (out / f"grpo-rank{rank}.json").write_text(json.dumps({
        "processes": dist.get_world_size(), "step": reward.step, "state": reward.state.m,
        "trunk_layers": trainer.trunk_layers, "finite_loss": all(e["loss"] == e["loss"] for e in trainer.state.log_history
                                                                 if "loss" in e and "train_loss" not in e),
        "rewards": [e["reward"] for e in trainer.state.log_history if "reward" in e]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
