"""One training step's judging time in each judge.mode: what `train/judge_s` would be, on the same completions.

    python -m benchmarks.judge_step [--params params.yaml] [--steps 2] [--modes one_token per_criterion]

Takes, per step, train.prompts_per_step prompts of paths.rollouts with train.num_generations completions
each (the rollouts stage's; steps use different prompts) and calls FocalReward on them as TRL does in a
training step: every criterion judged (checks locally, the rest by the judge: judge.base_url, or the
local vLLM server with the base model, started once), aggregated with train.aggregator. No cache, so
each mode asks every call. Prints, per mode, the judging seconds per step (FocalReward's
train/judge_s), judge calls and tokens per step; writes benchmarks/results/judge_step.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics

import pandas as pd

from focal.config import load_params
from focal.core.atomic import write_json
from focal.judging.judge import open_judge
from focal.judging.spec import JudgeSpec
from focal.judging.tables import load_items, stage_template
from focal.rewards.reward import FocalReward

RESULTS = "benchmarks/results/judge_step.json"


def batches(rollouts: pd.DataFrame, prompts: int, generations: int, steps: int) -> list[pd.DataFrame]:
    """`steps` batches of `prompts` prompts x `generations` completions (prompts with fewer are skipped)."""
    groups = [g.head(generations) for _, g in rollouts.groupby("prompt_id", sort=True) if len(g) >= generations]
    out = [pd.concat(groups[i:i + prompts]) for i in range(0, len(groups), prompts)][:steps]
    if not out or len(out[-1].prompt_id.unique()) < prompts:
        raise ValueError(f"paths.rollouts has too few prompts with {generations} completions for {steps} steps of "
                         f"{prompts} prompts; raise rollouts.max_prompts or rollouts.num_generations")
    return out


def step_seconds(judge, items: dict, batch: pd.DataFrame, aggregator: str) -> dict:
    """One reward call (a training step's judging) on `batch`: {judge_s, calls, prompt_tokens, completion_tokens}."""
    reward = FocalReward(items, aggregator, judge)
    asyncio.run(reward(list(batch.prompt_id), list(batch.completion), prompt_id=list(batch.prompt_id)))
    m = reward.last_metrics
    return {"judge_s": round(m["train/judge_s"], 2), "calls": m["judge/calls"],
            "prompt_tokens": m["judge/prompt_tokens"], "completion_tokens": m["judge/completion_tokens"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["one_token", "per_criterion"])
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    p = load_params(args.params)
    t = p.train
    steps = batches(pd.read_parquet(p.paths.rollouts), t.prompts_per_step, t.num_generations, args.steps)
    items = load_items(p.paths)
    result = {"prompts_per_step": t.prompts_per_step, "num_generations": t.num_generations, "steps": len(steps),
              "note": args.note, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "modes": {}}
    with open_judge(JudgeSpec.from_params(p, stage_template(p.paths), cache=False)) as judge:
        result["judge"] = judge.endpoint.identity
        for mode in args.modes:
            runs = [step_seconds(judge.variant(mode=mode), items, b, t.aggregator) for b in steps]
            result["modes"][mode] = {"runs": runs, "judge_s": round(statistics.mean(r["judge_s"] for r in runs), 2)}
            print(f"{mode}: {result['modes'][mode]['judge_s']} s of judging per step ({runs})", flush=True)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
