"""Evaluate every policy on every benchmark: sample, judge, score, compare (paired), plot.

    python -m stages.evaluate [--params params.yaml]

For each benchmark of `evaluate.benchmarks` (focal/benchmarks.py) and each policy of
`evaluate.policies`: sample `evaluate.num_generations` completions per prompt (same
prompts, seed and sampling for every policy), judge them with the same judge, and
compute METHOD.md's metrics (focal/evaluate.py). Every policy after the first is
compared with the first on the same prompts (difference and 95% bootstrap interval).

Writes `paths.eval_rollouts`, `paths.eval_judgments`, `paths.eval_metrics` (DVC
metrics), `paths.eval_report` (markdown) and PNGs in `paths.eval_plots`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from focal.config import Params, run_stage
from focal.evaluate import evaluate_judgments, paired_difference, prompt_scores
from focal.io import write_json, write_parquet, write_text
from focal.judge import Request, judge_table
from focal.plots import pass_rates_plot, policies_plot, trajectories_plot
from focal.rollouts import Sampling, sample_policy


def evaluate(params: Params, benchmarks: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """benchmarks: {name: items}. Returns (metrics, rollouts, judgments)."""
    e = params.evaluate
    sampling = Sampling(e.num_generations, e.temperature, 1.0, e.max_tokens, params.base.seed)
    rollouts, judgments, metrics = [], [], {}
    for policy, folder in e.policy_dirs(params.paths).items():
        if not params.serve.base_url and not Path(folder).exists():
            raise ValueError(f"evaluate.policies: {policy!r} has no model folder {folder!r}; train it first or "
                             "remove it from evaluate.policies")
        for bench, items in benchmarks.items():
            df = sample_policy(params, items, folder, sampling, e.backend)
            rollouts.append(df.assign(benchmark=bench, policy_name=policy))
    rollouts = pd.concat(rollouts, ignore_index=True)
    for bench, items in benchmarks.items():
        by_id = {it.id: it for it in items}
        part = rollouts[rollouts.benchmark == bench]
        reqs = [Request(by_id[r.prompt_id], c, r.completion, f"{r.policy_name}:{r.rollout_id}")
                for r in part.itertuples() for c in by_id[r.prompt_id].criteria]
        df, _ = judge_table(params, reqs, None)
        df["policy_name"] = df.rollout_id.str.split(":", n=1).str[0]
        df["benchmark"] = bench
        judgments.append(df)
        per_policy, scores = {}, {}
        for policy, g in df.groupby("policy_name", sort=False):
            per_policy[policy] = evaluate_judgments(g, e.n_bootstrap, params.base.seed)
            scores[policy] = prompt_scores(g)
        names = list(per_policy)
        metrics[bench] = {"policies": per_policy, "paired": {
            f"{b}_vs_{names[0]}": paired_difference(scores[names[0]], scores[b], e.n_bootstrap, params.base.seed)
            for b in names[1:]}}
    return metrics, rollouts, pd.concat(judgments, ignore_index=True)


def report(metrics: dict, notes: list[str], params: Params) -> str:
    lines = ["# Evaluation", "",
             f"Policies: {', '.join(params.evaluate.policies)}; {params.evaluate.num_generations} completions per "
             f"prompt, temperature {params.evaluate.temperature}, seed {params.base.seed}; same prompts and judge for all.", ""]
    lines += [f"- {n}" for n in notes]
    for bench, m in metrics.items():
        lines += ["", f"## {bench}", "", "| policy | rubric score | strict completion | min category | category spread | min key |",
                  "|---|---|---|---|---|---|"]
        for p, v in m["policies"].items():
            lines.append(f"| {p} | {v['rubric_score']:.3f} ± {v['rubric_score_std']:.3f} | {v['strict_completion']:.3f} | "
                         f"{v['min_category']:.3f} | {v['category_spread']:.3f} | {v['min_key']:.3f} |")
        for name, d in m["paired"].items():
            lines.append(f"\nPaired rubric score, {name.replace('_vs_', ' - ')}: {d['diff']:+.3f} "
                         f"(95% bootstrap interval {d['ci_low']:+.3f} to {d['ci_high']:+.3f}, {d['prompts']} prompts)")
        cats = sorted({k for v in m["policies"].values() for k in v["category"]})
        lines += ["", "| category | " + " | ".join(m["policies"]) + " |", "|---|" + "---|" * len(m["policies"])]
        lines += [f"| {c} | " + " | ".join(f"{v['category'].get(c, float('nan')):.3f}" for v in m["policies"].values())
                  + " |" for c in cats]
    return "\n".join(lines) + "\n"


def run(params: Params) -> list[Path]:
    from focal.benchmarks import load_benchmark

    benchmarks, notes = {}, []
    for name in params.evaluate.benchmarks:
        items, note = load_benchmark(name, params)
        if note:
            print(f"evaluate: {note}", file=sys.stderr)
            notes.append(note)
        if items:
            benchmarks[name] = items
    if not benchmarks:
        raise ValueError("evaluate: no benchmark could be loaded; " + "; ".join(notes))
    metrics, rollouts, judgments = evaluate(params, benchmarks)
    paths = params.paths
    write_parquet(paths.eval_rollouts, rollouts)
    write_parquet(paths.eval_judgments, judgments)
    write_json(paths.eval_metrics, metrics)
    write_text(paths.eval_report, report(metrics, notes, params))
    plots = Path(paths.eval_plots)
    first = next(iter(metrics))
    pass_rates_plot(metrics[first], plots / "pass_rates.png", f"Per-criterion pass rate on '{first}', by policy")
    policies_plot(metrics[first], plots / "policies.png", f"Policies side by side on '{first}'")
    trajectories_plot(paths.train_log, plots / "focal_trajectories.png",
                      f"Training with aggregator '{params.train.aggregator}'")
    for bench, m in metrics.items():
        for p, v in m["policies"].items():
            print(f"evaluate: {bench} / {p}: rubric score {v['rubric_score']:.3f} ± {v['rubric_score_std']:.3f}, "
                  f"strict {v['strict_completion']:.3f}, min category {v['min_category']:.3f}")
    return [Path(paths.eval_metrics), Path(paths.eval_report), plots]


if __name__ == "__main__":
    run_stage(run, __doc__)
