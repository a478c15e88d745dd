"""GRPO training (TRL) of the policy with a rubric reward; `train.aggregator` picks the aggregator.

    python -m stages.train [--params params.yaml]
    python -m stages.train --dry-run      # build the trainer, print what was built, stop before the first step
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m stages.train --dry-run

`--dry-run` (a flag, not a param: it writes nothing and leaves DVC's state alone)
builds the real GRPOTrainer through focal.training.trainer.build_trainer, as training does,
under whatever launcher started it, prints the world size, mixed precision,
DeepSpeed stage and effective batch, and exits. It starts no judge (the reward is
built checks-only) and, on a machine without CUDA, turns off what cannot be built
there (vLLM generation), saying so (docs/scaling.md).

Reads the train prompt table, `train.*`, `judge.*` and (to seed Focal's saturation
state with the base policy's measured satisfaction) `paths.judgments`; writes the
trained policy to `paths.trained_model` and the curves to `paths.train_log`
(dvclive: metrics.json and plots/ with criteria/*, rubric/*, judge/*, train/*,
TRL's reward and loss). Checkpoints (every `train.save_steps`, with Focal's state)
go to `paths.train_checkpoints/<run key>`: run it again after a crash and it
resumes. The judge's server is started only when some criterion needs it
(`train.use_judge` and criteria without a check). When no group's rewards differ
for several generation batches in a row, it warns (naming the criteria the judge
gave one verdict everywhere) and, after `train.max_zero_std_steps`, stops and fails.

With `audit.share` > 0 (and a judge), a share of each step's completions gets a second
opinion (`audit.source`: the checks, or the model at audit.base_url): the gap between
the training judge's pass rate and the audit's is logged per criterion
(criteria/<key>/audit_gap, audit/*; focal/rewards/audit.py). `paths.train_report` gets
report.md (the gap over the run, a gap that grows flagged) and audit_gap.png; the
audit changes no reward, so it is not part of the run key.

Under `accelerate launch` with several processes every process trains and takes part in
saving the policy (ZeRO-3 gathers it), the main process alone writes the outputs and the
others wait for it, so all end together. A local judge server is refused there: set
judge.base_url (docs/scaling.md).
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from focal.config import Params
from focal.core.atomic import atomic_dir
from focal.core.stage import run_stage
from focal.evaluation.plots import audit_gap_plot, read_series
from focal.judging.judge import open_judge
from focal.judging.modes import reward_identity
from focal.judging.spec import JudgeSpec
from focal.judging.tables import stage_template
from focal.rewards.aggregators import get_aggregator
from focal.rewards.audit import growing, open_audit, report as audit_table
from focal.rewards.reward import FocalReward, state_from_judgments
from focal.rubrics.sets import item_from_row
from focal.training.trainer import SignalGate, StepTimer, judge_server_check, on_main, run_key, save_policy, train_policy

READS = ('base', 'train', 'judge', 'serve', 'audit')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def train_items(params: Params) -> list:
    rows = pd.read_parquet(params.paths.train_prompts)
    return [item_from_row(r) for _, r in rows.iterrows()][: params.train.max_prompts or None]


def write_audit_report(train_log, folder, max_growth: float) -> dict[str, float]:
    """<folder>/report.md (the audit gap per key over the run, flagged when it grows) and <folder>/audit_gap.png from
    the dvclive curves in train_log; returns the growing keys {key: growth}."""
    series = {k: s.tolist() for k, s in read_series(train_log, "audit_gap").items()}
    table = audit_table(series, max_growth)
    with atomic_dir(folder) as tmp:
        text = ["# Training", "", table or "No audit this run (audit.share is 0, or no judge was used)."]
        (Path(tmp) / "report.md").write_text("\n".join(text) + "\n", encoding="utf-8")
        audit_gap_plot(train_log, Path(tmp) / "audit_gap.png")
    return growing(series, max_growth)


def run(params: Params) -> list[Path]:
    from dataclasses import asdict

    from accelerate import PartialState

    from focal.serving.weights import fingerprint

    t, paths = params.train, params.paths
    get_aggregator(t.aggregator, f"{getattr(params, 'source', 'params')}: train.aggregator")  # before any work
    items = train_items(params)
    state = None
    if t.aggregator == "focal" and t.seed_state and Path(paths.judgments).exists():
        state = state_from_judgments(pd.read_parquet(paths.judgments))
        print(f"train: focal state seeded from {paths.judgments}: {len(state.m)} keys")
    needs_judge = t.use_judge and any(c.check is None for it in items for c in it.criteria)
    judge_server_check(params.judge.base_url, needs_judge, PartialState().num_processes)
    spec = JudgeSpec.from_params(params, stage_template(paths))
    identity = spec.identity() if needs_judge else None  # fetched once
    policy = t.policy or paths.base_model
    key = run_key(fingerprint(policy), [it.id for it in items], asdict(t), params.base.seed,
                  reward_identity(identity, spec.cfg, spec.template) if needs_judge else None,
                  sorted(state.m.items()) if state else None)
    work = Path(paths.train_checkpoints) / key
    judging = open_judge(spec, identity=identity) if needs_judge else nullcontext()
    with judging as judge, open_audit(params.audit, spec, needs_judge) as audit:
        reward = FocalReward({it.id: it for it in items}, t.aggregator, judge, state,
                             checks_only=not needs_judge, audit=audit,
                             max_failure_share=params.judge.max_failure_share, **t.aggregator_params())
        timer, gate = StepTimer(), SignalGate(reward, t.max_zero_std_steps)
        trainer = train_policy(policy, items, reward, t, work, params.base.seed, log_dir=work / "dvclive",
                               callbacks=[timer, gate])
    if gate.stopped:
        raise ValueError(f"train: {gate.stopped}; nothing was saved (fix the judge or the rubric, or raise "
                         "train.max_zero_std_steps)")
    save_policy(trainer, paths.trained_model)  # every process: under ZeRO-3 each holds a shard of the weights
    on_main(trainer.accelerator, write_logs, params, work / "dvclive", reward, timer)
    return [Path(paths.trained_model), Path(paths.train_log), Path(paths.train_report)]


def write_logs(params: Params, live_dir: Path, reward, timer) -> None:
    """The curves to paths.train_log, the audit report to paths.train_report, and the run's summary (main process)."""
    t, paths = params.train, params.paths
    with atomic_dir(paths.train_log) as tmp:  # the curves of the whole run, resumed parts included
        shutil.copytree(live_dir, tmp, dirs_exist_ok=True)
    grows = write_audit_report(paths.train_log, paths.train_report, params.audit.max_gap_growth)
    if grows:
        print(f"train: warning: the audit gap grows over training on {', '.join(grows)} (> audit.max_gap_growth "
              f"{params.audit.max_gap_growth}): the policy may be gaming the judge; see {paths.train_report}/report.md")
    if reward.timings and timer.durations:
        agg, step = np.mean([x["aggregate_s"] for x in reward.timings]), np.mean(timer.durations)
        print(f"train: {t.max_steps} steps with {t.aggregator!r} -> {paths.trained_model}; mean step {step:.2f} s, "
              f"aggregation {agg * 1000:.2f} ms ({agg / step:.3%} of a step), "
              f"judging {np.mean([x['judge_s'] for x in reward.timings]):.2f} s")


def dry_run(params: Params) -> dict:
    """Build the trainer training would build, stop before the first step; print and return what was built."""
    import json
    import tempfile

    from focal.training.trainer import build_trainer, describe, dry_run_overrides

    t, items = params.train, train_items(params)
    cfg, notes = dry_run_overrides(t)
    reward = FocalReward({it.id: it for it in items}, t.aggregator, checks_only=True, **t.aggregator_params())
    with tempfile.TemporaryDirectory(prefix="focal-dry-run-") as tmp:  # nothing lands in the workspace
        trainer = build_trainer(t.policy or params.paths.base_model, items, reward, cfg, tmp, params.base.seed)
        built = {**describe(trainer), "overrides": notes}
    if trainer.accelerator.is_main_process:
        b = built
        ds = f"ZeRO-{b['deepspeed_zero_stage']}, offload {b['deepspeed_offload']}" if b["deepspeed_zero_stage"] else "none"
        gen = f"vLLM {b['vllm_mode']} mode" if b["use_vllm"] else "transformers"
        print("train --dry-run: built the GRPOTrainer and stopped before the first step (no judge started, nothing "
              "written)")
        print(f"  processes: {b['world_size']} ({b['distributed_type']}, {b['device']})")
        print(f"  mixed precision: {b['mixed_precision']} (accelerate); GRPOConfig.bf16: {b['bf16']}")
        print(f"  deepspeed: {ds}")
        print(f"  batch: {b['completions_per_process']} completions per process x {b['world_size']} processes x "
              f"{b['gradient_accumulation_steps']} accumulation = {b['effective_batch']} completions "
              f"({b['prompts_per_optimizer_step']} prompts x G={b['num_generations']}) per optimizer step")
        print(f"  generation: {gen}; activation checkpointing: {b['activation_checkpointing']}; LoRA: {b['lora']}; "
              f"max steps: {b['max_steps']}")
        for note in notes:
            print(f"  override (this dry run only): {note}")
        if t.bf16 and not b["bf16"]:
            print("  note: train.bf16 has no effect without CUDA (GRPOConfig.bf16 false), in training as here")
        print("dry-run json: " + json.dumps(built, sort_keys=True))
    return built


if __name__ == "__main__":
    import argparse

    flag = argparse.ArgumentParser(add_help=False)
    flag.add_argument("--dry-run", action="store_true")
    known, rest = flag.parse_known_args()
    run_stage(dry_run if known.dry_run else run, __doc__, READS, rest)
