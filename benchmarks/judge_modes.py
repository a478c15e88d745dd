"""judge.mode per_criterion against per_response on the same rollouts, the same server and the same judge:

    python -m benchmarks.judge_modes [--params params.yaml] [--rollouts 12] [--repeats 1]

Takes the first `--rollouts` rows of paths.rollouts and their LLM-judged criteria (checks
need no judge), judges them in both modes with no cache (order alternated over
`--repeats`), and reports per judged criterion: API calls, prompt and completion
tokens and wall time; and how often the two modes agree per criterion (verdicts met /
not met, focal.agreement: agreement and Cohen's kappa, overall and per criterion key,
from the first repeat). Printed as markdown and written to
benchmarks/results/judge_modes.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import pandas as pd

from focal.agreement import agreement_metrics
from focal.config import load_params
from focal.io import write_json
from focal.judge import load_items, open_judge, requests_for, stage_template

RESULTS = "benchmarks/results/judge_modes.json"
MODES = ("per_criterion", "per_response")


def run_mode(judge, reqs, mode: str) -> tuple[dict, list]:
    """({calls, tokens, seconds, failures}, judgments) of judging reqs in `mode` with no cache."""
    judge = judge.variant(mode=mode)
    t0 = time.perf_counter()
    out = judge.run(reqs, progress=False)
    s = judge.stats
    return {"calls": s.calls, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "seconds": round(time.perf_counter() - t0, 2), "failures": sum(s.failures.values()),
            "failure_kinds": dict(s.failures), "failure_examples": sorted({j.reason[:200] for j in out if j.reason})[:3]}, out


def compare(judge, reqs, repeats: int) -> dict:
    """Both modes, order alternated per repeat: per-mode sums and per-judged-criterion figures, and agreement."""
    runs, first = {m: [] for m in MODES}, {}
    for rep in range(repeats):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            figures, judgments = run_mode(judge, reqs, mode)
            runs[mode].append(figures)
            first.setdefault(mode, judgments)
            print(f"  repeat {rep} {mode}: {figures}", flush=True)
    n = len(reqs)
    per = {m: {k: round(sum(r[k] for r in runs[m]) / len(runs[m]) / n, 4)
               for k in ("calls", "prompt_tokens", "completion_tokens", "seconds")} for m in MODES}
    a, b = first["per_criterion"], first["per_response"]
    agree = agreement_metrics([j.score for j in a], [j.score for j in b], [j.key for j in a], "modes", "by_key")
    return {"judged_criteria": n, "runs": runs, "per_judged_criterion": per, "agreement": agree}


def table(result: dict) -> str:
    per = result["per_judged_criterion"]
    out = ["| per judged criterion | calls | prompt tokens | completion tokens | wall s | failures (total) |",
           "|---|---|---|---|---|---|"]
    out += [f"| {m} | {per[m]['calls']:.2f} | {per[m]['prompt_tokens']:.0f} | {per[m]['completion_tokens']:.1f} | "
            f"{per[m]['seconds']:.2f} | {sum(r['failures'] for r in result['runs'][m])} |" for m in MODES]
    a = result["agreement"]
    out += ["", f"Agreement per criterion between the modes: {fmt(a['modes/overall'])} (Cohen's kappa "
            f"{fmt(a['modes/kappa'])}) on {a['modes/n']} pairs judged by both; by criterion key:", "",
            "| key | n | agreement | kappa |", "|---|---|---|---|"]
    keys = sorted({k.split("/")[2] for k in a if k.startswith("modes/by_key/")})
    out += [f"| {k} | {a[f'modes/by_key/{k}/n']} | {fmt(a[f'modes/by_key/{k}/agreement'])} | "
            f"{fmt(a[f'modes/by_key/{k}/kappa'])} |" for k in keys]
    return "\n".join(out)


def fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rollouts", type=int, default=12, help="first rollouts of paths.rollouts to judge")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode (order alternated)")
    ap.add_argument("--note", default="", help="conditions to record beside the figures (e.g. a contended CPU)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    params = load_params(args.params)
    rollouts = pd.read_parquet(params.paths.rollouts).head(args.rollouts)
    reqs = [r for r in requests_for(rollouts, load_items(params.paths), params.paths.rollouts) if r.criterion.check is None]
    t0 = time.perf_counter()
    with open_judge(params.judge, params.serve, params.paths, stage_template(params.paths), cache=False) as judge:
        result = compare(judge, reqs, args.repeats)
    result |= {"judge": judge.endpoint.identity, "rollouts": len(rollouts), "repeats": args.repeats,
               "max_tokens": params.judge.max_tokens, "note": args.note,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(args.out, result)
    print(table(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
