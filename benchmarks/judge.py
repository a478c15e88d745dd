"""Judge throughput against one real server, in one run:

    python -m benchmarks.judge [--params params.yaml] [--n 24] [--concurrency 8]

1. raw capacity: the judge's exact requests sent as plain concurrent chat requests (no parsing, no cache);
2. the judge (bounded concurrency, retries, schema, parsing) with no cache;
3. the judge as a sequential client (concurrency 1);
4. the judge again with the cache of run 2: the number of API calls (must be 0).
Starts the local vLLM server (or uses serve.base_url / judge.base_url).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from focal.api import make_client
from focal.cache import Cache
from focal.config import load_params
from focal.judge import DEFAULT_TEMPLATE, Judge, Request, answer_schema, render_prompt
from focal.rubric import load_rubric_set
from focal.endpoints import judge_endpoint

RESPONSES = ["Plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
             "As an AI, I cannot help with that!", "- drink water\n- sleep early\n- walk daily"]


def requests(params, n: int) -> list[Request]:
    items = load_rubric_set(Path(params.paths.rubrics) / "default").items
    reqs = [Request(it, c, r, f"r{i}") for it in items for c in it.criteria if c.check is None
            for i, r in enumerate(RESPONSES)]
    return reqs[:n]


async def raw(endpoint, params, reqs, concurrency) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(client, r):
        nonlocal tokens
        async with sem:
            resp = await client.chat.completions.create(  # the judge's exact request, without the judge around it
                model=endpoint.model, max_tokens=params.judge.max_tokens, temperature=params.judge.temperature,
                messages=[{"role": "user", "content": render_prompt(DEFAULT_TEMPLATE, r.item, r.criterion, r.response)}],
                response_format={"type": "json_schema", "json_schema": {
                    "name": "judgment", "schema": answer_schema(r.criterion), "strict": True}})
            tokens += resp.usage.completion_tokens if resp.usage else 0

    t0 = time.perf_counter()
    async with make_client(endpoint.base_url, params.judge.api_key_env, params.judge.timeout_s) as client:
        await asyncio.gather(*[one(client, r) for r in reqs])
    return time.perf_counter() - t0, tokens


def timed_judge(cfg, endpoint, reqs, cache=None):
    judge = Judge(cfg, endpoint, cache=cache)
    t0 = time.perf_counter()
    out = judge.run(reqs)
    return time.perf_counter() - t0, judge.stats, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=24, help="judgments per measurement")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    params = load_params(args.params)
    reqs = requests(params, args.n)
    cfg = dataclasses.replace(params.judge, concurrency=args.concurrency)
    with judge_endpoint(params) as endpoint, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(raw(endpoint, params, reqs[:2], 2))  # warm-up
        raw_s, raw_tokens = asyncio.run(raw(endpoint, params, reqs, args.concurrency))
        cache = Cache(Path(tmp) / "c.sqlite")
        conc_s, conc_stats, out = timed_judge(cfg, endpoint, reqs, cache)
        seq_s, _, _ = timed_judge(dataclasses.replace(cfg, concurrency=1), endpoint, reqs)
        _, rerun_stats, _ = timed_judge(cfg, endpoint, reqs, cache)
    n = len(reqs)
    print(f"| measurement ({n} judgments, SmolLM2-135M on this CPU) | seconds | judgments/s | completion tokens/s |")
    print("|---|---|---|---|")
    print(f"| raw capacity: plain concurrent requests (concurrency {args.concurrency}) | {raw_s:.1f} | {n / raw_s:.2f} | {raw_tokens / raw_s:.1f} |")
    print(f"| judge, concurrency {args.concurrency} | {conc_s:.1f} | {n / conc_s:.2f} | {conc_stats.completion_tokens / conc_s:.1f} |")
    print(f"| judge, sequential (concurrency 1) | {seq_s:.1f} | {n / seq_s:.2f} | - |")
    print(f"\njudge vs raw capacity: {raw_s / conc_s:.0%} of the raw throughput; judge vs sequential: {seq_s / conc_s:.1f}x")
    print(f"failures in the concurrent run: {sum(conc_stats.failures.values())} ({dict(conc_stats.failures)})")
    print(f"API calls on a rerun with the cache: {rerun_stats.calls} (cache hits: {rerun_stats.cache_hits})")


if __name__ == "__main__":
    main()
