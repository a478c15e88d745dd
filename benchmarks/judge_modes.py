"""judge.mode per_criterion vs per_response vs one_token on the same (response, criterion) pairs with known verdicts:

    python -m benchmarks.judge_modes [--params params.yaml] [--rollouts 24] [--labels FILE] [--repeats 1]

The pairs: the check-decided criteria of the first `--rollouts` rows of paths.rollouts, asked to the
judge as if they had no check (the check's verdict is the truth, as focal/judging/agreement.py's check
probes), and the HealthBench meta-evaluation rows of `--labels` (default
tests/fixtures/healthbench_meta.jsonl; the truth is the physicians' majority, ties skipped). Each
mode judges every pair with no cache on the same endpoint (judge.base_url, or the local vLLM
server with the base model), the modes' order alternated over `--repeats`. Reported per mode:
per pair, API calls, prompt and completion tokens, wall seconds; failed judgments; and its
agreement and Cohen's kappa with the checks and with the labels (verdict met when r >= 0.5;
focal/judging/agreement.py defines each figure). Printed as markdown and written to
benchmarks/results/judge_modes.json (or --out).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import pandas as pd

from focal.config import load_params
from focal.core.atomic import write_json
from focal.judging.agreement import agreement_metrics, load_labelled
from focal.judging.judge import open_judge
from focal.judging.modes import MODES as JUDGE_MODES
from focal.judging.prompts import check_judgment, probe, requests_for
from focal.judging.spec import JudgeSpec
from focal.judging.tables import load_items, stage_template

RESULTS = "benchmarks/results/judge_modes.json"
LABELS = "tests/fixtures/healthbench_meta.jsonl"
MODES = tuple(JUDGE_MODES)  # every registered judge mode


def pairs(rollouts, items: dict, labelled) -> tuple[list, list[float], list[str]]:
    """(requests, truth satisfactions, what each truth is: "checks" or "labels") of the check-decided criteria of
    the rollouts, asked without their check, and of the labelled rows."""
    checked = requests_for(rollouts, items, "rollouts", only_checks=True)
    reqs = [probe(r) for r in checked]
    truth = [check_judgment(r).score for r in checked]
    return (reqs + [x.request for x in labelled], truth + [1.0 if x.verdict else 0.0 for x in labelled],
            ["checks"] * len(reqs) + ["labels"] * len(labelled))


def run_mode(judge, reqs, mode: str) -> tuple[dict, list]:
    """({calls, tokens, seconds, failures}, judgments) of judging reqs in `mode` with no cache."""
    judge = judge.variant(mode=mode)
    t0 = time.perf_counter()
    out = judge.run(reqs, progress=False)
    s = judge.stats
    return {"calls": s.calls, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "seconds": round(time.perf_counter() - t0, 2), "failures": sum(s.failures.values()),
            "failure_kinds": dict(s.failures), "failure_examples": sorted({j.reason[:200] for j in out if j.reason})[:3]}, out


def compare(judge, reqs, truth, kinds, repeats: int = 1, modes=MODES) -> dict:
    """Every mode, order alternated per repeat: per-pair calls, tokens and seconds (mean over repeats), failures, and
    agreement with the truth of each kind (first repeat's verdicts)."""
    runs, first = {m: [] for m in modes}, {}
    for rep in range(repeats):
        for mode in (modes if rep % 2 == 0 else modes[::-1]):
            figures, judgments = run_mode(judge, reqs, mode)
            runs[mode].append(figures)
            first.setdefault(mode, judgments)
            print(f"  repeat {rep} {mode}: {figures}", flush=True)
    n = len(reqs)
    per = {m: {k: round(sum(r[k] for r in runs[m]) / len(runs[m]) / n, 4)
               for k in ("calls", "prompt_tokens", "completion_tokens", "seconds")} for m in modes}
    agreement = {}
    for m in modes:
        for kind in sorted(set(kinds)):
            pick = [i for i, k in enumerate(kinds) if k == kind]
            agreement[m] = agreement.get(m, {}) | agreement_metrics(
                [truth[i] for i in pick], [first[m][i].score for i in pick], [first[m][i].key for i in pick], kind,
                "by_key")
    scores = {m: [j.score for j in first[m]] for m in modes}
    return {"pairs": n, "pairs_by_truth": {k: kinds.count(k) for k in sorted(set(kinds))}, "runs": runs,
            "per_pair": per, "agreement": agreement,
            "soft_share": {m: round(sum(0 < s < 1 for s in scores[m] if s == s) / n, 4) for m in modes}}


def table(result: dict) -> str:
    per, agree = result["per_pair"], result["agreement"]
    kinds = list(result["pairs_by_truth"])
    head = " | ".join(f"with {k} ({result['pairs_by_truth'][k]}): agreement, kappa" for k in kinds)
    out = [f"| mode | calls | prompt tokens | completion tokens | wall s | failed | {head} |",
           "|---|---|---|---|---|---|" + "---|" * len(kinds)]
    for m in per:
        failed = sum(r["failures"] for r in result["runs"][m]) / len(result["runs"][m])
        cells = " | ".join(f"{fmt(agree[m].get(f'{k}/overall'))}, {fmt(agree[m].get(f'{k}/kappa'))}" for k in kinds)
        out.append(f"| {m} | {per[m]['calls']:.2f} | {per[m]['prompt_tokens']:.0f} | {per[m]['completion_tokens']:.1f} "
                   f"| {per[m]['seconds']:.2f} | {failed:.0f} of {result['pairs']} | {cells} |")
    return "\n".join(out) + "\n\nper pair (mean over repeats); agreement on the pairs judged (failures left out)."


def fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rollouts", type=int, default=24, help="first rollouts of paths.rollouts whose checks are asked")
    ap.add_argument("--labels", default=LABELS, help="HealthBench meta-evaluation JSONL ('' = none)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode (order alternated)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--note", default="", help="conditions to record beside the figures (e.g. a contended CPU)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    rollouts = pd.read_parquet(params.paths.rollouts).head(args.rollouts)
    labelled = load_labelled(args.labels)[0] if args.labels else []
    reqs, truth, kinds = pairs(rollouts, load_items(params.paths), labelled)
    t0 = time.perf_counter()
    with open_judge(JudgeSpec.from_params(params, stage_template(params.paths), cache=False)) as judge:
        result = compare(judge, reqs, truth, kinds, args.repeats, tuple(args.modes))
    result |= {"judge": judge.endpoint.identity, "rollouts": len(rollouts), "repeats": args.repeats,
               "max_tokens": params.judge.max_tokens, "top_logprobs": params.judge.top_logprobs,
               "concurrency": params.judge.concurrency, "note": args.note,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(args.out, result)
    print(table(result))
    print(f"\nwritten to {args.out}")
    return result


if __name__ == "__main__":
    main()
