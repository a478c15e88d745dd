"""Ablation of Focal's knobs and of saturation-aware prompt sampling in simulated worlds, paired over seeds.

    python -m benchmarks.ablation        # docs/simulator.md's tables: 3 worlds x 17 variants x 10 seeds (~21 min for 14)
    python -m benchmarks.ablation --seeds 2 --steps 20 --long-steps 30 --out /tmp/ablation   # smoke: seconds

Every variant of VARIANTS trains in every world (--worlds: files in benchmarks/worlds/)
on seeds 0..N-1: seed s draws the same world and the same sampling streams for every
variant. Each table compares the variants with static on the same seeds, at a step of
--at: static's row is the mean ± std over seeds, every other row its mean (paired
difference from static ± its standard error, seeds on which it beats static). "final"
is the mean of the last three held-out evaluations up to that step. "static's weakest"
is, per seed, the held-out pass rate of the criterion static ends lowest on.

The long run trains LONG's variants for --long-steps in --long-world and prints a time
course: the pass rate of static's weakest criterion, the rubric score, Focal's weight
w'/w on that criterion and |mu| (it stops at the world's radius once capacity binds).
Prints markdown and writes it, with every per-seed number, to --out .md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.aggregators import METRICS, WORLDS_DIR, finals, markdown_table, upto
from focal.core.atomic import write_json, write_text
from focal.rewards.simulate import SimConfig, Variant, final, load_world, run_paired

VARIANTS = {
    "static": Variant("static"),
    "focal": Variant("focal"),  # defaults: gamma 2, alpha_min 0.1, kappa 4, beta 0.9, saturation key = criterion id
    "gamma 0": Variant("focal", {"gamma": 0.0}),  # exactly static: a check that the runs are paired
    "gamma 1": Variant("focal", {"gamma": 1.0}),
    "gamma 4": Variant("focal", {"gamma": 4.0}),
    "alpha_min 0.01": Variant("focal", {"alpha_min": 0.01}),
    "alpha_min 0.3": Variant("focal", {"alpha_min": 0.3}),
    "kappa 0": Variant("focal", {"kappa": 0.0}),
    "kappa 16": Variant("focal", {"kappa": 16.0}),
    "beta 0.5": Variant("focal", {"beta": 0.5}),
    "beta 0.99": Variant("focal", {"beta": 0.99}),
    "key category": Variant("focal", saturation_key="category"),
    "static + unsaturated sampling": Variant("static", sampling="unsaturated"),
    "focal + unsaturated sampling": Variant("focal", sampling="unsaturated"),
    # the paper authors' form (docs/method.md 4b): T 1, gamma 3, eps 0.05, no state; and their two suggested fixes
    "focal_proj": Variant("focal_proj"),
    "focal_proj floor 0.03": Variant("focal_proj", {"floor": 0.03}),
    "focal_proj mix 0.3": Variant("focal_proj", {"mix": 0.3}),
}
LONG = ("static", "focal", "gamma 4", "alpha_min 0.3", "static + unsaturated sampling", "focal + unsaturated sampling",
        "focal_proj", "focal_proj floor 0.03", "focal_proj mix 0.3")
MARKS = (100, 200, 400, 700, 1000, 1500)  # time-course steps (those <= --long-steps, and --long-steps)
WEAKEST = "static's weakest"


def weakest(runs: list, names: list, step: int | None) -> list[str]:
    """Per seed, the criterion with the lowest final held-out pass rate (static's runs) at `step`."""
    return [min(names, key=lambda k: final(upto(h, step), f"criteria/{k}/pass_rate")) for h in runs]


def table_values(results: dict, names: list, step: int) -> dict:
    """METRICS plus static's weakest criterion's pass rate, per variant and seed, at `step`."""
    values = finals(results, METRICS, step)
    worst = weakest(results["static"], names, step)
    for name, runs in results.items():
        values[name][WEAKEST] = [final(upto(h, step), f"criteria/{k}/pass_rate") for h, k in zip(runs, worst)]
    return values


def course(results: dict, metric_of, steps: list[int]) -> dict:
    """{variant: {"step s": [per seed]}}: metric_of(seed) names the metric, read as `final` up to each step."""
    return {name: {f"step {s}": [final(upto(h, s), metric_of(i)) for i, h in enumerate(runs)] for s in steps}
            for name, runs in results.items()}


def criteria_course(runs: list, names: list, steps: list[int], weighted: bool) -> tuple[str, dict]:
    """Rows: criteria; columns: steps; each cell the mean over seeds of the held-out pass rate, and with
    `weighted` (Focal keyed by criterion id) of the weight w'/w in the training batch in brackets."""
    numbers, lines = {}, ["| criterion | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (1 + len(steps)) + "|"]
    for k in names:
        cells = []
        for s in steps:
            rate = float(np.mean([final(upto(h, s), f"criteria/{k}/pass_rate") for h in runs]))
            weight = float(np.nanmean([final(upto(h, s), f"batch/criteria/{k}/weight") for h in runs])) if weighted \
                else float("nan")
            numbers[f"{k} @ {s}"] = {"pass_rate": rate, "weight": weight}
            cells.append(f"{rate:.2f} ({weight:.2f})" if weighted else f"{rate:.2f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines), numbers


def run(worlds: list[str], variants: dict, long_world: str, long_variants: list, cfg: SimConfig, long_steps: int,
        seeds: int) -> dict:
    """{world: {variant: [history per seed]}}; in long_world the long variants run long_steps (their first
    cfg.steps steps are exactly the short run: same seed, same streams)."""
    out = {}
    for w in worlds:
        world = load_world(w, WORLDS_DIR)
        longer = {k: v for k, v in variants.items() if w == long_world and k in long_variants}
        short = {k: v for k, v in variants.items() if k not in longer}
        res = run_paired(world, short, cfg, seeds)
        res.update(run_paired(world, longer, dataclasses.replace(cfg, steps=long_steps), seeds))
        out[w] = {k: res[k] for k in variants}
    return out


def report(results: dict, at: list[int], long_world: str, long_variants: list, long_steps: int) -> tuple[str, dict]:
    """Markdown tables and the per-seed numbers behind them."""
    md, numbers, summary = [], {}, {}
    for w, res in results.items():
        names = [c.name for c in load_world(w, WORLDS_DIR).criteria]
        for step in at:
            values = table_values(res, names, step)
            numbers[f"{w} @ {step}"] = values
            md += [f"### {w}, {step} steps", "", markdown_table(values), ""]
            for name, cols in values.items():
                summary.setdefault(name, {})[f"{w}: score @ {step}"] = cols["rubric score"]
                if step == at[-1]:
                    summary[name][f"{w}: min key @ {step}"] = cols["min key"]
    md = ["### Summary: every variant against static, paired", "", markdown_table(summary), ""] + md
    if long_world in results and long_variants:
        res = {k: v for k, v in results[long_world].items() if k in long_variants}
        names = [c.name for c in load_world(long_world, WORLDS_DIR).criteria]
        steps = sorted({s for s in MARKS if s <= long_steps} | {long_steps})
        worst = weakest(res["static"], names, long_steps)
        values = table_values(res, names, long_steps)
        numbers[f"{long_world} @ {long_steps}"] = values
        md += [f"### {long_world}, {long_steps} steps", "", markdown_table(values), ""]
        courses = {
            f"pass rate of static's weakest criterion (static ends lowest on: {', '.join(sorted(set(worst)))})":
                lambda i: f"criteria/{worst[i]}/pass_rate",
            "rubric score": lambda i: "rubric/score",
            "min key": lambda i: "rubric/min_key",
            "Focal's weight w'/w on that criterion in the training batch (static: 1)":
                lambda i: f"batch/criteria/{worst[i]}/weight",
            "share of training groups in which that criterion gets one verdict for all G rollouts "
            "(no contrast: no weight acts there)": lambda i: f"batch/criteria/{worst[i]}/constant",
            "|mu| (the policy's norm; capacity binds at the radius)": lambda i: "policy/norm",
        }
        for title, metric_of in courses.items():
            values = course(res, metric_of, steps)
            numbers[f"{long_world} course: {title}"] = values
            md += [f"#### {long_world}, time course: {title}", "", markdown_table(values), ""]
        mid = max([m for m in steps if m <= long_steps // 2] or steps[:1])
        per_seed = {name: [[final(upto(h, t), f"criteria/{k}/pass_rate") for t in (mid, long_steps)]
                           for h, k in zip(runs, worst)] for name, runs in res.items()}
        numbers[f"{long_world} per seed: static's weakest at steps {mid}, {long_steps}"] = per_seed
        md += [f"#### {long_world}, per seed: pass rate of static's weakest criterion, step {mid} → step {long_steps}",
               "", "| seed | " + " | ".join(per_seed) + " |", "|---" * (1 + len(per_seed)) + "|"]
        md += [f"| {i} | " + " | ".join(f"{v[i][0]:.3f} → {v[i][1]:.3f}" for v in per_seed.values()) + " |"
               for i in range(len(worst))] + [""]
        for name, runs in res.items():
            v = VARIANTS[name]
            weighted = v.aggregator == "focal" and v.saturation_key == "id"
            text, numbers[f"{long_world} criteria: {name}"] = criteria_course(runs, names, steps, weighted)
            what = "held-out pass rate (Focal's weight w'/w in the training batch)" if weighted else "held-out pass rate"
            md += [f"#### {long_world}, {name}: {what} per criterion, mean over seeds", "", text, ""]
    return "\n".join(md), numbers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="+", default=["default", "neglected_essential", "valuable_tail"],
                    help="world names (benchmarks/worlds/<name>.yaml) or paths")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                    help=f"which of VARIANTS to run (static is always run): {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=10, help="paired seeds (worlds drawn) per variant")
    ap.add_argument("--steps", type=int, default=600, help="training steps of every run")
    ap.add_argument("--at", type=int, nargs="+", help="steps at which to tabulate (default: 150 and --steps)")
    ap.add_argument("--long-world", default="neglected_essential", help="world of the long run")
    ap.add_argument("--long-steps", type=int, default=1500, help="training steps of the long run")
    ap.add_argument("--out", default="benchmarks/results/ablation", help="writes OUT.md and OUT.json")
    args = ap.parse_args(argv)
    variants = {k: v for k, v in VARIANTS.items() if k == "static" or k in args.variants}
    long_variants = [k for k in LONG if k in variants]
    at = sorted({s for s in (args.at or [150, args.steps]) if s <= args.steps})
    cfg = SimConfig(steps=args.steps)
    t0 = time.perf_counter()
    results = run(args.worlds, variants, args.long_world, long_variants, cfg, args.long_steps, args.seeds)
    seconds = time.perf_counter() - t0
    md, numbers = report(results, at, args.long_world, long_variants, args.long_steps)
    footer = (f"{args.seeds} paired seeds (0-{args.seeds - 1}) x {len(variants)} variants x {args.steps} steps in "
              f"{', '.join(args.worlds)}; {args.long_world} also {args.long_steps} steps for {', '.join(long_variants)}"
              f" (P={cfg.batch_prompts}, G={cfg.group_size}, lr={cfg.lr}); {seconds:.0f} s")
    text = f"{md}\n{footer}\n"
    print(text)
    write_text(f"{args.out}.md", text)
    write_json(f"{args.out}.json", {"command": "python -m benchmarks.ablation", "args": vars(args),
                                    "sim": dataclasses.asdict(cfg), "seconds": round(seconds),
                                    "variants": {k: dataclasses.asdict(v) for k, v in variants.items()},
                                    "tables": numbers})


if __name__ == "__main__":
    main()
