"""Every aggregator on the same simulated worlds and seeds, paired; prints a table.

    python -m benchmarks.aggregators [--world default] [--seeds 10] [--steps 150 600]

One table per training length: early in training and near the plateau. A world is a
file in benchmarks/worlds/ (its name) or a path to one. "final" is the mean of the
last three evaluations on held-out prompts. Static's row gives the mean ± std over
seeds; every other row gives its mean, then (its paired difference from static on
the same seeds ± the standard error of that difference, the seeds on which it beats
static). "steps to static's final" is the median over seeds of the first evaluated
step at which an aggregator reaches static's final rubric score on the same seed
(n/N = how many seeds reached it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from focal.rewards.aggregators import AGGREGATORS
from focal.rewards.simulate import SimConfig, Variant, final, load_world, paired, run_paired

WORLDS_DIR = Path(__file__).with_name("worlds")
METRICS = {"rubric/score": "rubric score", "rubric/strict_completion": "strict completion",
           "rubric/min_category": "min category", "rubric/min_key": "min key"}


def upto(history: list[dict], step: int | None) -> list[dict]:
    """The evaluations made by `step` (all when step is None)."""
    return history if step is None else [h for h in history if h["step"] <= step]


def finals(results: dict, metrics: dict = METRICS, step: int | None = None) -> dict:
    """{variant: {label: [final value per seed]}} for each metric of `metrics` ({metric: label}), at `step`."""
    return {name: {label: [final(upto(h, step), m) for h in runs] for m, label in metrics.items()}
            for name, runs in results.items()}


def cell(values, reference, is_reference: bool) -> str:
    """The reference's mean ± std over seeds; any other: mean (paired difference ± standard error, wins/seeds)."""
    s = paired(values, reference)
    if is_reference:
        return f"{s['mean']:.3f} ± {s['std']:.3f}"
    return f"{s['mean']:.3f} ({s['diff']:+.3f} ± {s['se']:.3f}, {s['wins']}/{s['n']})"


def markdown_table(values: dict, reference: str = "static", extra: dict | None = None, first: str = "variant") -> str:
    """values {row: {column: [per seed]}}, each cell against the reference row on the same seeds (`cell`);
    extra {column: {row: text}} appended."""
    extra = extra or {}
    labels = list(values[reference])
    lines = [f"| {first} | " + " | ".join(labels + list(extra)) + " |",
             "|---" * (1 + len(labels) + len(extra)) + "|"]
    for name, cols in values.items():
        cells = [str(name)] + [cell(cols[label], values[reference][label], name == reference) for label in labels]
        cells += [column.get(name, "") for column in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_to(history: list[dict], target: float) -> int | None:
    return next((h["step"] for h in history if h["rubric/score"] >= target), None)


def steps_to_static(results: dict) -> dict:
    """{aggregator: 'median (n/N)'} of the first step reaching static's final rubric score, per seed."""
    target = [final(h, "rubric/score") for h in results["static"]]
    out = {}
    for name, runs in results.items():
        hit = [s for s in (steps_to(h, t) for h, t in zip(runs, target)) if s is not None]
        out[name] = f"{np.median(hit):.0f} ({len(hit)}/{len(runs)})" if hit else f"never (0/{len(runs)})"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="default", help="world name (benchmarks/worlds/<name>.yaml) or a path")
    ap.add_argument("--seeds", type=int, default=10, help="paired seeds (worlds drawn) per aggregator")
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 600], help="training steps per run (one table each)")
    args = ap.parse_args(argv)
    world = load_world(args.world, WORLDS_DIR)
    variants = {name: Variant(name) for name in AGGREGATORS}
    for steps in args.steps:
        cfg = SimConfig(steps=steps)
        t0 = time.perf_counter()
        results = run_paired(world, variants, cfg, args.seeds)
        print(f"\n### {args.world}, {steps} steps\n")
        print(markdown_table(finals(results), extra={"steps to static's final": steps_to_static(results)}))
        print(f"\n{args.seeds} paired seeds (0-{args.seeds - 1}) x {len(variants)} aggregators x {cfg.steps} steps "
              f"(P={cfg.batch_prompts}, G={cfg.group_size}) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
