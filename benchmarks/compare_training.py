"""Train the same policy with several aggregators (same seed, prompts and budget) and compare them, paired.

    python -m benchmarks.compare_training [--aggregators static focal] [--steps 12] [--checks-only]
                                          [--eval-prompts 16] [--seed 0]

Each aggregator trains from paths.base_model with the train stage's code (stages.train.run
with overrides) into models/compare/<aggregator>; then every policy (base first) is sampled
on the same eval prompts with the same seed and scored with the evaluate stage's code.
Prints per-criterion pass rates before and after, rubric score, strict completion and the
weakest category for each, and the paired difference to static. --checks-only restricts
training rewards and evaluation to the criteria decided by programmatic checks (no LLM
judge: fast on a CPU, and free of a 135M judge's noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from focal.config import load_params
from focal.io import write_json
from focal.rubric import Item
from stages import evaluate as evaluate_stage
from stages import train as train_stage


def checks_only(items: list[Item]) -> list[Item]:
    out = []
    for it in items:
        crits = tuple(c for c in it.criteria if c.check is not None)
        if crits:
            out.append(dataclasses.replace(it, criteria=crits))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--aggregators", nargs="+", default=["static", "focal"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--checks-only", action="store_true")
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--eval-generations", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="metrics/compare.json")
    args = ap.parse_args()
    from focal.benchmarks import load_benchmark

    t0 = time.perf_counter()
    for agg in args.aggregators:
        p = load_params(args.params, {"base": {"seed": args.seed},
                                      "train": {"aggregator": agg, "max_steps": args.steps,
                                                "use_judge": not args.checks_only},
                                      "paths": {"trained_model": f"models/compare/{agg}",
                                                "train_log": f"dvclive/compare/{agg}"}})
        print(f"== training with {agg} ({args.steps} steps, seed {args.seed})", flush=True)
        train_stage.run(p)
    policies = ["base"] + [f"{a}=models/compare/{a}" for a in args.aggregators]
    p = load_params(args.params, {"base": {"seed": args.seed},
                                  "evaluate": {"policies": policies, "limit": args.eval_prompts, "backend": "vllm",
                                               "num_generations": args.eval_generations}})
    items, _ = load_benchmark("eval", p)
    if args.checks_only:
        items = checks_only(items)
    metrics, _, _ = evaluate_stage.evaluate(p, {"eval": items})
    m = metrics["eval"]
    write_json(args.out, {"args": vars(args), "metrics": metrics})
    names = list(m["policies"])
    keys = sorted({k for v in m["policies"].values() for k in v["key"]})
    print(f"\nper-criterion pass rate ({len(items)} eval prompts x {args.eval_generations} samples, seed {args.seed}):\n")
    print("| criterion key | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{m['policies'][n]['key'].get(k, float('nan')):.2f}" for n in names) + " |")
    print("\n| policy | rubric score | strict completion | min category | category spread |")
    print("|---|---|---|---|---|")
    for n in names:
        v = m["policies"][n]
        print(f"| {n} | {v['rubric_score']:.3f} ± {v['rubric_score_std']:.3f} | {v['strict_completion']:.3f} | "
              f"{v['min_category']:.3f} | {v['category_spread']:.3f} |")
    for name, d in m["paired"].items():
        print(f"paired rubric score {name}: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over {d['prompts']} prompts")
    print(f"\n{len(args.aggregators)} aggregators x {args.steps} steps, 1 seed, in {time.perf_counter() - t0:.0f} s; "
          f"saved to {args.out}")


if __name__ == "__main__":
    main()
