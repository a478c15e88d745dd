"""The evidence protocol: train one policy with each aggregator on paired seeds, evaluate each, keep a record.

    python -m benchmarks.compare_training [--params params.yaml] [--aggregators static focal] [--seeds 0 1]
    python -m benchmarks.compare_training --report      # tables and picture from the records only

Everything else is `compare.*` in params.yaml (aggregators, seeds, train settings,
evaluation), so a new grid is a params change. For every (aggregator, seed):
1. train from `compare.policy` (default paths.base_model) on the train split of
   base.rubric_set with focal's train code (LoRA and sizes from compare.train), with
   checks-only rewards when compare.checks_only, else every criterion, the ones
   without a check judged by the judge.* endpoint (judge.base_url, or the local vLLM
   judge server, started once for the sweep; verdicts cached in paths.judge_cache);
   checkpoints with Focal's state go to compare.work_dir/<run>, so a killed run
   resumes where it stopped;
2. sample `compare.eval_samples` completions for every eval prompt with the same
   sampling seed for every policy (base included, evaluated once), score them with
   focal/metrics.py's definitions;
3. append one record to compare.results (atomic write), with the per-prompt scores
   for paired comparisons and the per-step curves of every criterion.
A rerun skips every run whose record exists for the same protocol (a hash of the
settings above, the policy's fingerprint, the rubric set and, with a judge, what
answers as the judge, its decoding, mode and template), so the sweep can be
stopped and started again at any time. One training at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from focal.cache import content_key
from focal.config import Params, load_params
from focal.io import write_json
from focal.rubric import Item, load_rubric_set

BASE = "base"


def checks_only(items: list[Item]) -> list[Item]:
    """The items cut to their criteria decided by a check (items left with none are dropped)."""
    out = []
    for it in items:
        crits = tuple(c for c in it.criteria if c.check is not None)
        if crits:
            out.append(dataclasses.replace(it, criteria=crits))
    return out


def protocol(params: Params) -> tuple[dict, list[Item], list[Item], str]:
    """(identity of the protocol, train items, eval items, policy folder)."""
    from focal.models import fingerprint

    c = params.compare
    rs = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set)
    train_items, eval_items = rs.split("train"), sorted(rs.split("eval"), key=lambda it: it.id)
    if c.checks_only:
        train_items, eval_items = checks_only(train_items), checks_only(eval_items)
    eval_items = eval_items[: c.eval_prompts or None]
    policy = c.policy or params.paths.base_model
    ident = {"policy": fingerprint(policy), "rubric_set": content_key([it.chat() for it in train_items + eval_items],
                                                                       [str(it.criteria) for it in train_items + eval_items]),
             "train": dataclasses.asdict(c.train_config()), "checks_only": c.checks_only,
             "eval": [c.eval_samples, c.eval_seed, c.eval_max_tokens, c.eval_temperature, [it.id for it in eval_items]]}
    if not c.checks_only:
        from focal.judge import reward_identity

        ident["judge"] = reward_identity(params, rs.judge_template)
    return ident, train_items, eval_items, policy


def score_policy(model_and_tok, items: list[Item], params: Params, judge=None) -> dict:
    """Sample compare.eval_samples completions per item (fixed seed), judge (checks, or `judge`), summarise."""
    import pandas as pd

    from focal.evaluate import evaluate_judgments, prompt_scores
    from focal.judge import Request, decide_checks
    from focal.rollouts import Sampling, TransformersBackend, sample_rollouts

    c = params.compare
    sampling = Sampling(c.eval_samples, c.eval_temperature, 1.0, c.eval_max_tokens, c.eval_seed)
    model, tok = model_and_tok
    rollouts = sample_rollouts(items, TransformersBackend(model, tok), sampling, "eval")
    by_id = {it.id: it for it in items}
    reqs = [Request(by_id[r.prompt_id], crit, r.completion, r.rollout_id)
            for r in rollouts.itertuples() for crit in by_id[r.prompt_id].criteria]
    judgments = decide_checks(reqs) if judge is None else judge.run(reqs)
    df = pd.DataFrame([j.__dict__ for j in judgments])
    m = evaluate_judgments(df, n_bootstrap=200, seed=c.eval_seed)
    return {"rubric_score": m["rubric_score"], "strict_completion": m["strict_completion"],
            "min_category": m["min_category"], "min_key": m["min_key"], "key_pass_rates": m["key"],
            "category_pass_rates": m["category"], "failed_judgments": m["failed_judgments"],
            "prompt_scores": {str(k): float(v) for k, v in prompt_scores(df).items()},
            "mean_completion_tokens": float(rollouts.completion_tokens.mean())}


def curves(log_history: list[dict]) -> dict:
    """Per-step reward and criteria/* figures from the trainer's log."""
    keep = ("reward", "rubric/score", "rubric/strict_completion", "rubric/zero_std_frac", "frac_reward_zero_std")
    out: dict[str, list] = {}
    for entry in log_history:
        if "step" not in entry or "loss" not in entry:
            continue
        for name, value in entry.items():
            if name in keep or name.startswith("criteria/"):
                out.setdefault(name, []).append([int(entry["step"]), float(value)])
    return out


def load_records(path) -> list[dict]:
    path = Path(path)
    return json.loads(path.read_text())["records"] if path.exists() else []


def save_record(path, record: dict) -> None:
    records = [r for r in load_records(path) if not same_run(r, record)] + [record]
    write_json(path, {"about": __doc__.split("\n\n")[0], "records": records})


def recorded(records: list[dict], aggregator: str, seed, key: str) -> bool:
    """Whether `records` hold this run of protocol `key` (the base policy: seed None)."""
    return any((r["aggregator"], r["seed"], r["protocol"]) == (aggregator, seed, key) for r in records)


def same_run(a: dict, b: dict) -> bool:
    return (a["aggregator"], a["seed"], a["protocol"]) == (b["aggregator"], b["seed"], b["protocol"])


def load_policy(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def train_one(params: Params, aggregator: str, seed: int, train_items, policy: str, work: Path, judge=None):
    """Train one run (resuming if its checkpoints exist); returns (model, tokenizer, seconds, curves)."""
    from focal.reward import FocalReward
    from focal.train import Elapsed, StepTimer, train_policy

    t = params.compare.train_config(aggregator=aggregator, use_judge=judge is not None)
    reward = FocalReward({it.id: it for it in train_items}, aggregator, judge, None, checks_only=judge is None,
                         **t.aggregator_params())
    timer, elapsed = StepTimer(), Elapsed(work)
    trainer = train_policy(policy, train_items, reward, t, work, seed, callbacks=[timer, elapsed])
    seconds = elapsed.seconds()
    model = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    return (model, trainer.processing_class), seconds, curves(trainer.state.log_history), timer.durations


@contextmanager
def judging(params: Params):
    """The judge of a protocol that is not checks-only (None when it is): one endpoint and cache for the sweep."""
    if params.compare.checks_only:
        yield None
        return
    from focal.cache import Cache
    from focal.endpoints import judge_endpoint
    from focal.judge import Judge

    template = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set).judge_template
    cache = Cache(params.paths.judge_cache)
    try:
        with judge_endpoint(params) as endpoint:
            yield Judge(params.judge, endpoint, template, cache)
    finally:
        cache.close()


def run(params: Params, aggregators=None, seeds=None) -> list[dict]:
    """Every (aggregator, seed) not yet recorded for this protocol; returns the new records."""
    c = params.compare
    ident, train_items, eval_items, policy = protocol(params)
    key = content_key(ident)[:12]
    done = load_records(c.results)
    left = not recorded(done, BASE, None, key) or any(
        not recorded(done, agg, seed, key) for seed in seeds or c.seeds for agg in aggregators or c.aggregators)
    with judging(params) if left else nullcontext() as judge:  # a judge server starts only when something is left
        new = []
        if not recorded(done, BASE, None, key):
            t0 = time.perf_counter()
            rec = {"aggregator": BASE, "seed": None, "steps": 0, "protocol": key, **score_policy(load_policy(policy),
                                                                                              eval_items, params, judge)}
            rec.update(eval_prompts=len(eval_items), samples_per_prompt=c.eval_samples, eval_seconds=time.perf_counter() - t0,
                       train_seconds=0.0, settings=ident)
            save_record(c.results, rec)
            new.append(rec)
            print(f"compare: base: rubric score {rec['rubric_score']:.3f}, strict {rec['strict_completion']:.3f}", flush=True)
        for seed in seeds or c.seeds:
            for agg in aggregators or c.aggregators:
                if recorded(load_records(c.results), agg, seed, key):
                    print(f"compare: {agg} seed {seed}: recorded, skipped", flush=True)
                    continue
                work = Path(c.work_dir) / f"{agg}-s{seed}-{key}"
                print(f"compare: {agg} seed {seed}: training ({c.train_config().max_steps} steps) in {work}", flush=True)
                model_tok, seconds, log, durations = train_one(params, agg, seed, train_items, policy, work, judge)
                t0 = time.perf_counter()
                rec = {"aggregator": agg, "seed": seed, "steps": c.train_config().max_steps, "protocol": key,
                       **score_policy(model_tok, eval_items, params, judge)}
                rec.update(eval_prompts=len(eval_items), samples_per_prompt=c.eval_samples,
                           eval_seconds=time.perf_counter() - t0, train_seconds=seconds,
                           step_seconds=float(np.mean(durations)) if durations else None, curves=log, settings=ident)
                save_record(c.results, rec)
                new.append(rec)
                print(f"compare: {agg} seed {seed}: rubric score {rec['rubric_score']:.3f}, strict "
                      f"{rec['strict_completion']:.3f}, min key {rec['min_key']:.3f} ({seconds:.0f} s training)", flush=True)
        return new


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--aggregators", nargs="+", default=None, help="only these (default: compare.aggregators)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="only these (default: compare.seeds)")
    ap.add_argument("--report", action="store_true", help="print the tables from compare.results and draw the picture")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        if args.report:
            from benchmarks.compare_report import report

            print(report(params.compare.results))
            return
        run(params, args.aggregators, args.seeds)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
