"""Evaluate every policy on every benchmark: sample, judge, score, compare (paired), plot.

    python -m stages.evaluate [--params params.yaml]

For each benchmark of `evaluate.benchmarks` (focal/evaluation/sets.py; `eval` is the
prepared eval split, paths.eval_prompts) and each policy of `evaluate.policies`:
sample `evaluate.num_generations` completions per prompt (same prompts, seed and
sampling for every policy), judge them with the same judge and the benchmark's
judge template, and compute docs/method.md's metrics (focal/evaluation/evaluate.py). Every policy
after the first is compared with the first on the same prompts. Fails when more
than `judge.max_failure_share` of the judge calls failed.

Writes `paths.eval_rollouts`, `paths.eval_judgments`, `paths.eval_metrics` (DVC
metrics), `paths.eval_report` (markdown) and PNGs in `paths.eval_plots`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from focal.config import Params
from focal.core.atomic import write_json, write_parquet, write_text
from focal.core.stage import run_stage
from focal.evaluation.evaluate import evaluate_policies, report
from focal.evaluation.plots import pass_rates_plot, policies_plot, trajectories_plot
from focal.evaluation.sets import load_benchmark
from focal.judging.tables import failure_text

READS = ('base', 'evaluate', 'judge', 'serve')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    benchmarks, notes = {}, []
    for name in params.evaluate.benchmarks:
        items, note, template = load_benchmark(name, params)
        if note:
            print(f"evaluate: {note}", file=sys.stderr)
            notes.append(note)
        if items:
            benchmarks[name] = (items, template)
    if not benchmarks:
        raise ValueError("evaluate: no benchmark could be loaded; " + "; ".join(notes))
    metrics, rollouts, judgments = evaluate_policies(params, benchmarks)
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
                      "Training: per-criterion saturation and weight")
    for bench, m in metrics.items():
        print(f"evaluate: {bench}: {failure_text(judgments[judgments.benchmark == bench])} "
              f"(judge.max_failure_share {params.judge.max_failure_share:.0%})")
        for p, v in m["policies"].items():
            print(f"evaluate: {bench} / {p}: rubric score {v['rubric_score']:.3f} ± {v['rubric_score_std']:.3f}, "
                  f"strict {v['strict_completion']:.3f}, min category {v['min_category']:.3f}, "
                  f"{v['failed_judgments']} failed judgments")
    return [Path(paths.eval_metrics), Path(paths.eval_report), plots]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
