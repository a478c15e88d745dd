"""Judge throughput as a share of the server's raw capacity, on one server with the same requests:

    python -m benchmarks.judge [--params params.yaml] [--n 24] [--repeats 2] [--concurrency 1 4 8 16]

For each concurrency c, on the same server (the local vLLM server with the base model,
or judge.base_url) and the same n requests (the judge's exact chat.completions
arguments, `Judge.request`):
- raw: a plain async load generator (c requests in flight, no retries, no parsing, no cache);
- judge: `Judge.run` with judge.concurrency = c and no cache (retries, breaker, limiter, parsing).
Both are warmed first (one pass each on the same requests, so the server's prefix
cache is equally warm for both), then measured `--repeats` times with the order
alternated (raw first on even repeats, judge first on odd ones). Reported per c: the
judge's throughput as a ratio to raw's (paired per repeat, then averaged; the goal
is >= 0.8) and its speed-up over a sequential client (raw at concurrency 1). Printed
as a markdown table and written to benchmarks/results/judge_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

from focal.config import load_params
from focal.core.atomic import write_json
from focal.judging.judge import Judge, open_judge
from focal.judging.prompts import Request
from focal.judging.spec import JudgeSpec
from focal.rubrics.sets import load_rubric_set
from focal.serving.client import make_client

RESULTS = Path("benchmarks/results/judge_throughput.json")
RESPONSES = ["Plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
             "As an AI, I cannot help with that!", "- drink water\n- sleep early\n- walk daily",
             "Photosynthesis turns light into chemical energy stored as glucose."]


def requests(params, n: int) -> list[Request]:
    """n (response, LLM-judged criterion) pairs of the configured rubric set, cycling through RESPONSES."""
    items = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set).items
    pairs = [(it, c) for it in items for c in it.criteria if c.check is None]
    if not pairs:
        raise ValueError(f"rubric set {params.base.rubric_set!r} has no LLM-judged criterion to benchmark")
    return [Request(pairs[i % len(pairs)][0], pairs[i % len(pairs)][1], RESPONSES[i % len(RESPONSES)], f"r{i}")
            for i in range(n)]


async def raw(judge: Judge, reqs: list[Request], concurrency: int) -> tuple[float, int]:
    """(seconds, completion tokens) of sending the judge's requests as a plain async load generator."""
    bodies = [judge.request([r])[1] for r in reqs]
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(client, body):
        nonlocal tokens
        async with sem:
            resp = await client.chat.completions.create(**body)
            tokens += resp.usage.completion_tokens if resp.usage else 0

    async with make_client(judge.endpoint.base_url, judge.cfg.api_key_env, judge.cfg.timeout_s) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*[one(client, b) for b in bodies])
        return time.perf_counter() - t0, tokens


def judged(judge: Judge, reqs) -> tuple[float, int, int]:
    """(seconds, completion tokens, failures) of Judge.run (a fresh variant: its own counts) with no cache."""
    judge = judge.variant()
    t0 = time.perf_counter()
    judge.run(reqs, progress=False)
    return time.perf_counter() - t0, judge.stats.completion_tokens, sum(judge.stats.failures.values())


def measure(judge: Judge, reqs, levels: list[int], repeats: int) -> list[dict]:
    """One row per concurrency: raw and judge seconds per repeat (order alternated), ratio, speed-up; `judge` is
    open on the server (no cache)."""
    top = judge.variant(concurrency=max(levels))
    asyncio.run(raw(top, reqs, max(levels)))  # warm both: the same prompts reach the prefix cache
    judged(top, reqs)
    rows = []
    for c in levels:
        probe = judge.variant(concurrency=c)
        raw_s, judge_s, raw_tok, judge_tok, failures = [], [], [], [], 0
        for rep in range(repeats):
            for which in (("raw", "judge") if rep % 2 == 0 else ("judge", "raw")):
                if which == "raw":
                    s, t = asyncio.run(raw(probe, reqs, c))
                    raw_s.append(s), raw_tok.append(t)
                else:
                    s, t, f = judged(probe, reqs)
                    judge_s.append(s), judge_tok.append(t)
                    failures += f
            print(f"  c={c} repeat {rep}: raw {raw_s[-1]:.1f} s, judge {judge_s[-1]:.1f} s", flush=True)
        rows.append({"concurrency": c, "raw_s": [round(x, 3) for x in raw_s], "judge_s": [round(x, 3) for x in judge_s],
                     "raw_completion_tokens": raw_tok, "judge_completion_tokens": judge_tok, "judge_failures": failures,
                     "raw_per_s": round(len(reqs) / statistics.mean(raw_s), 3),
                     "judge_per_s": round(len(reqs) / statistics.mean(judge_s), 3),
                     "ratio": round(statistics.mean(r / j for r, j in zip(raw_s, judge_s)), 3)})
    sequential = statistics.mean(rows[0]["raw_s"])  # levels start at 1: the sequential client
    for r in rows:
        r["speedup_vs_sequential"] = round(sequential / statistics.mean(r["judge_s"]), 2)
    return rows


def table(rows: list[dict], n: int) -> str:
    out = [f"| concurrency | raw judgments/s | judge judgments/s | judge / raw | speed-up over sequential | "
           f"judge failures |", "|---|---|---|---|---|---|"]
    out += [f"| {r['concurrency']} | {r['raw_per_s']:.2f} | {r['judge_per_s']:.2f} | {r['ratio']:.2f} | "
            f"{r['speedup_vs_sequential']:.1f}x | {r['judge_failures']} |" for r in rows]
    return "\n".join(out) + f"\n\n{n} judgments per measurement; judge / raw paired per repeat, then averaged."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=24, help="judgments per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="measurements per concurrency and client (order alternated)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--note", default="", help="conditions to record beside the figures (e.g. a contended CPU)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    params = load_params(args.params)
    reqs = requests(params, args.n)
    t0 = time.perf_counter()
    with open_judge(JudgeSpec.from_params(params, None, cache=False)) as judge:
        rows = measure(judge, reqs, sorted(set(args.concurrency) | {1}), args.repeats)
    record = {"judge": judge.endpoint.identity, "model": judge.endpoint.model, "n": args.n, "repeats": args.repeats,
              "max_tokens": params.judge.max_tokens, "structured": params.judge.structured,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "note": args.note,
              "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}
    write_json(args.out, record)
    print(table(rows, args.n))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
