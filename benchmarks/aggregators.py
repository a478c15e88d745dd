"""Every aggregator on the same simulated worlds and seeds, paired; prints a table.

    python -m benchmarks.aggregators [--seeds 10] [--steps 150 600]

One table per training length: early in training and near the plateau.
"final" is the mean of the last three evaluations on held-out prompts. "steps to
static" is the median over seeds of the first evaluated step at which an
aggregator reaches static's final rubric score on the same seed (n/N = how many
seeds reached it). Focal's wins are paired per seed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from focal.aggregate import AGGREGATORS
from focal.simulate import SimConfig, make_world, train

METRICS = ("rubric/score", "rubric/min_category", "rubric/strict_completion")


def final(history: list[dict], metric: str) -> float:
    return float(np.mean([h[metric] for h in history[-3:]]))


def steps_to(history: list[dict], target: float) -> int | None:
    return next((h["step"] for h in history if h["rubric/score"] >= target), None)


def run(cfg: SimConfig, seeds: int) -> dict:
    """{aggregator: [history per seed]} on worlds 0..seeds-1."""
    results = {name: [] for name in AGGREGATORS}
    for seed in range(seeds):
        world = make_world(cfg, seed)
        for name in AGGREGATORS:
            results[name].append(train(world, name, cfg, seed))
    return results


def table(results: dict) -> str:
    names = list(results)
    seeds = len(results["static"])
    static_final = [final(h, "rubric/score") for h in results["static"]]
    lines = ["| aggregator | rubric score | min category | strict completion | steps to static's final | focal wins (score) | focal wins (min category) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        cells = [name]
        for m in METRICS:
            v = [final(h, m) for h in results[name]]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}")
        reach = [steps_to(h, t) for h, t in zip(results[name], static_final)]
        hit = [s for s in reach if s is not None]
        cells.append(f"{np.median(hit):.0f} ({len(hit)}/{seeds})" if hit else f"never (0/{seeds})")
        if name == "focal":
            cells += ["-", "-"]
        else:
            for m in ("rubric/score", "rubric/min_category"):
                wins = sum(final(f, m) > final(o, m) for f, o in zip(results["focal"], results[name]))
                cells.append(f"{wins}/{seeds}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="paired seeds (worlds) per aggregator")
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 600], help="training steps per run (one table each)")
    args = ap.parse_args()
    for steps in args.steps:
        cfg = replace(SimConfig(), steps=steps)
        t0 = time.perf_counter()
        results = run(cfg, args.seeds)
        print(f"\n### {steps} steps\n")
        print(table(results))
        print(f"\n{args.seeds} paired seeds x {len(AGGREGATORS)} aggregators x {cfg.steps} steps "
              f"(P={cfg.batch_prompts}, G={cfg.group_size}) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
