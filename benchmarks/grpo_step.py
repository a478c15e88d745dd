"""Where a GRPO step's time goes on this CPU, and what the evidence protocol's settings save.

    python -m benchmarks.grpo_step [--params params.yaml] [--steps 4] [--variant lora_layers=8 ...]

Runs a few checks-only GRPO steps of the base policy twice: with the train
section's settings ("before": full fine-tuning) and with compare.train's
("after": LoRA and the rest), at the same group size and prompts per step.
Prints the mean step time and its parts: generation (TRL's `_generate`), reward
(`_calculate_rewards`), the forward pass for the old policy's log-probs (TRL's extra
pass when a generation serves several steps; none with train.sampling_logps), the
loss's forward pass, the backward pass, the optimizer and the rest. Every figure is a mean over all steps,
the first (warm-up) included, so use a multiple of steps_per_generation.
Each `--variant` is compare.train with some train knobs changed (comma-separated
key=value, values as YAML), measured the same way after the two.

The parts are timed by wrapping private methods of TRL's GRPOTrainer and accelerate's
Accelerator (`timed_methods`); each is checked against the parameters it had when this
was written (trl 1.16), and a TRL that differs stops the benchmark before it starts,
naming the method (tests/test_trl_compat.py).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
import yaml

from benchmarks.compare_training import checks_only
from focal.config import load_params
from focal.rewards.reward import FocalReward
from focal.rubrics.sets import load_rubric_set

PARTS = ("generation", "reward", "old log-probs forward", "loss forward", "backward", "optimizer", "rest")


def _timed(cls, name: str, parts: dict, label):
    """Wraps cls.name so each call's wall time adds to parts[label(self)]; returns the original (to restore)."""
    original = getattr(cls, name)

    @functools.wraps(original)  # the same signature: focal/training/grpo.py checks TRL's while the wrappers are in place
    def wrapper(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            parts[label(self)] += time.perf_counter() - t

    setattr(cls, name, wrapper)
    return original


def timed_methods(trainer_cls=None, accelerator_cls=None) -> list[tuple]:
    """(class, method, its parameters when this was written, which part its time goes to) for each timed method;
    RuntimeError naming what changed when the installed TRL or accelerate defines one differently."""
    import accelerate
    from trl import GRPOTrainer

    from focal.training.grpo import TRL_API, TESTED_TRL, api_changes

    trainer_cls, accelerator_cls = trainer_cls or GRPOTrainer, accelerator_cls or accelerate.Accelerator
    methods = [(trainer_cls, "_generate", "(self, prompts)", lambda s: "generation"),
               (trainer_cls, "_calculate_rewards", "(self, inputs, prompts, completions, completion_ids_list)",
                lambda s: "reward"),
               # TRL's own forward passes: without gradients, the old policy's log-probs; with them, the loss's
               (trainer_cls, "_get_per_token_logps_and_entropies", TRL_API["_get_per_token_logps_and_entropies"],
                lambda s: "loss forward" if torch.is_grad_enabled() else "old log-probs forward"),
               (accelerator_cls, "backward", "(self, loss, **kwargs)", lambda s: "backward")]
    changes = [c for cls, name, params, _ in methods for c in api_changes(cls, {name: params})]
    if changes:
        raise RuntimeError(f"benchmarks/grpo_step.py times private methods of {TESTED_TRL} and accelerate, which "
                           f"differ here: {'; '.join(changes)}; update timed_methods to the installed versions")
    return methods


def profile(cfg, items, policy, steps: int) -> dict:
    """Mean seconds per optimizer step, and its parts, over `steps` checks-only GRPO steps of `policy`."""
    from focal.training.trainer import StepTimer, _Callback, train_policy

    parts = defaultdict(float)
    originals = [(cls, name, _timed(cls, name, parts, label)) for cls, name, _, label in timed_methods()]

    class Optimizer(_Callback):
        def on_pre_optimizer_step(self, *a, **k):
            self.t = time.perf_counter()

        def on_optimizer_step(self, *a, **k):
            parts["optimizer"] += time.perf_counter() - self.t

    try:
        reward = FocalReward({it.id: it for it in items}, cfg.aggregator, checks_only=True, **cfg.aggregator_params())
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as work:
            train_policy(policy, items, reward, cfg, work, seed=0, callbacks=[timer, Optimizer()])
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)
    step = float(np.mean(timer.durations))  # the first step included, like the parts (generation may run every k steps)
    out = {"step": step, **{k: parts[k] / steps for k in PARTS[:-1]}}
    out["rest"] = step - sum(out[k] for k in PARTS[:-1])
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
            f"after (compare.train: LoRA r={after.lora_r}, lora_layers {after.lora_layers}, steps_per_generation "
            f"{after.steps_per_generation})": profile(after, items, p.paths.base_model, args.steps)}
    for variant in args.variant:
        changes = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in variant.split(","))}
        cfg = p.compare.train_config(max_steps=args.steps, save_steps=0, aggregator="static", use_judge=False, **changes)
        rows[f"after, {variant}"] = profile(cfg, items, p.paths.base_model, args.steps)
    base = rows["before (full fine-tuning)"]["step"]
    print("| setting | step s | vs before | " + " | ".join(f"{k} s" for k in PARTS) + " |")
    print("|---|---|---|" + "---|" * len(PARTS))
    for name, r in rows.items():
        print(f"| {name} | {r['step']:.2f} | {r['step'] / base - 1:+.0%} | " + " | ".join(f"{r[k]:.2f}" for k in PARTS) + " |")


if __name__ == "__main__":
    main()
