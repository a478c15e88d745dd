"""Where a GRPO step's time goes on this CPU, and what the evidence protocol's settings save.

    python -m benchmarks.grpo_step [--params params.yaml] [--steps 4] [--variant lora_layers=8 ...]

Runs a few checks-only GRPO steps of the base policy twice: with the train
section's settings ("before": full fine-tuning) and with compare.train's
("after": LoRA and the rest), at the same group size and prompts per step.
Prints the mean step time and its parts from TRL's own profiling blocks:
generation (`_generate`), reward (`_calculate_rewards`), the log-prob forward
passes, and the rest (backward and optimizer). Every figure is a mean over all steps,
the first (warm-up) included, so use a multiple of steps_per_generation.
Each `--variant` is compare.train with some train knobs changed (comma-separated
key=value, values as YAML), measured the same way after the two.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

import numpy as np
import yaml

from benchmarks.compare_training import checks_only
from focal.config import load_params
from focal.reward import FocalReward
from focal.rubric import load_rubric_set


def profile(cfg, items, policy, steps: int) -> dict:
    from trl.extras import profiling

    from focal.train import StepTimer, train_policy

    parts = defaultdict(list)
    original = profiling.ProfilingContext._log_metrics
    profiling.ProfilingContext._log_metrics = lambda self, d: parts[self.name.split(".")[-1]].append(d)
    try:
        reward = FocalReward({it.id: it for it in items}, cfg.aggregator, checks_only=True, **cfg.aggregator_params())
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as work:
            train_policy(policy, items, reward, cfg, work, seed=0, callbacks=[timer])
    finally:
        profiling.ProfilingContext._log_metrics = original
    step = float(np.mean(timer.durations))  # the first step included, like the parts (generation may run every k steps)
    out = {"step_s": step}
    for name in ("generate", "_calculate_rewards", "compute_loss"):
        out[name] = float(np.sum(parts[name]) / steps)  # mean per step (warm-up included)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--variant", action="append", default=[], help="train knobs over compare.train: k=v[,k=v]")
    args = ap.parse_args()
    p = load_params(args.params)
    items = checks_only(load_rubric_set(f"{p.paths.rubrics}/{p.base.rubric_set}").split("train"))
    shared = {k: v for k, v in p.compare.train.items() if k in ("prompts_per_step", "num_generations", "max_completion_length")}
    before = p.compare.train_config(**{k: getattr(p.train, k) for k in ("lora_r", "learning_rate", "steps_per_generation")}, max_steps=args.steps,
                                    save_steps=0, aggregator="static", use_judge=False)
    after = p.compare.train_config(max_steps=args.steps, save_steps=0, aggregator="static", use_judge=False)
    print(f"{args.steps} checks-only GRPO steps, {shared}")
    rows = {"before (full fine-tuning)": profile(before, items, p.paths.base_model, args.steps),
            f"after (LoRA r={after.lora_r})": profile(after, items, p.paths.base_model, args.steps)}
    for variant in args.variant:
        changes = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in variant.split(","))}
        cfg = p.compare.train_config(max_steps=args.steps, save_steps=0, aggregator="static", use_judge=False, **changes)
        rows[f"after, {variant}"] = profile(cfg, items, p.paths.base_model, args.steps)
    print("| setting | step s | generation s | reward s | loss forward s | backward + optimizer + rest s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        rest = r["step_s"] - r["generate"] - r["_calculate_rewards"] - r["compute_loss"]
        print(f"| {name} | {r['step_s']:.2f} | {r['generate']:.2f} | {r['_calculate_rewards']:.3f} | "
              f"{r['compute_loss']:.2f} | {rest:.2f} |")


if __name__ == "__main__":
    main()
