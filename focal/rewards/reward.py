"""FocalReward: a TRL reward function that judges each completion on its rubric and aggregates the batch.

    from focal import FocalReward, OpenAIJudge, load_rubric_set
    rubrics = load_rubric_set("default")      # a shipped set by name, or your folder: "rubrics/<name>"
    judge = OpenAIJudge("http://127.0.0.1:8001/v1", "my-judge", cache="judge.sqlite")   # any OpenAI-compatible server
    reward = FocalReward(rubrics, aggregator="focal", judge=judge)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=rubrics.dataset("train"), args=cfg)
    FocalReward(load_rubric_set("ifeval"), aggregator="focal")   # no judge: every criterion of that set is checked
    FocalReward(rubrics, aggregator="focal", checks_only=True)   # no judge: only the criteria that have a check

Called by TRL once per generation batch (all P*G completions). It is async (TRL
awaits it on its own event loop), so it also works where a loop is already running
(a notebook): `await reward(prompts, completions, prompt_id=ids)`. Each call:
judge every (completion, criterion) (checks locally, the rest through the cached
judge), build the satisfaction matrix, group rollouts by prompt, apply the
aggregator (`static`, `gdpo`, `pow3r`, `focal`, `strict`, `min`) and carry
Focal's state to the next step. A failed judgment is left out of its row (see
focal/rewards/aggregators.py); a completion with nothing judged gets None (TRL's "could not
score"); with `max_failure_share`, a step in which more of the judge's calls failed stops
training. Through TRL's `log_metric` it logs docs/method.md's names: `criteria/<key>/*`,
`rubric/*`, `judge/*`, `train/aggregate_s` and `train/judge_s`; `rubric/zero_std_frac` (groups
whose rewards are all equal: no gradient) and `criteria/<key>/judge_constant` (groups
in which the judge gave every rollout the same verdict) say whether anything can be
learned (focal.training.trainer.SignalGate acts on them). `judge/*` are this call's share of every
numeric count the judge's `stats.metrics()` reports (calls, cache hits, failures,
tokens, ...; a per-call mean such as `judge/latency_s` is this call's mean).

With `audit=focal.rewards.audit.Audit(...)`, a share of the completions also gets a second
opinion (the checks, or another endpoint) and criteria/<key>/audit_gap, audit/* are
logged (focal/rewards/audit.py). Through TRL's `log_extra`, every completion's per-criterion
satisfactions go to TRL's completions table (column `criteria`, JSON {criterion id: r,
null = failed}) and, with an audit, the audited pairs (column `audit`, JSON {criterion
id: [training judge's r, audit's r]}, null when not audited).

Items with criteria that have no check need a judge: without one the reward
refuses to start unless `checks_only=True` says to use only the checked criteria.

Under data parallelism (accelerate, torchrun, DeepSpeed) TRL calls the reward on
each process's share of the batch, and a prompt's group can be split across
processes. Each process judges its own share (so judging is spread), then the
judged rows of all processes are gathered (`torch.distributed.all_gather_object`), the
whole global batch is aggregated once, identically on every process, and each
returns its own share's rewards: the group statistics are global and every process
carries the same Focal state. One process behaves exactly as before.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from focal.judging.judge import Judge
from focal.judging.prompts import Request, requests_for
from focal.judging.tables import check_failure_budget
from focal.rewards.aggregators import FocalState, aggregate, get_aggregator, update_state
from focal.rewards.audit import Audit, gap_metrics
from focal.rewards.metrics import constant_by_key, satisfaction_matrix, step_metrics


def world() -> tuple[int, int]:
    """(number of processes, this process's index) once torch.distributed is set up (accelerate, torchrun,
    DeepSpeed all do it); (1, 0) in a plain process, and without torch (the core install: one process)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 1, 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_rows(rows: list, processes: int) -> list:
    """Every process's rows, in process order, on every process (torch.distributed.all_gather_object)."""
    import torch.distributed as dist

    parts = [None] * processes
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


def completion_text(c) -> str:
    """TRL passes a string, or a list of messages for conversational data."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return c[-1].get("content") or ""
    return str(c)


PER_CALL_MEANS = ("judge/latency_s",)  # judge metrics that are means over calls, not running totals


def judge_deltas(before: dict, after: dict) -> dict:
    """What one reward call added to the judge's metrics: every numeric judge/* key of `stats.metrics()` as the
    difference of its totals, except PER_CALL_MEANS, which become the mean over this call's calls."""
    calls = after.get("judge/calls", 0) - before.get("judge/calls", 0)
    out = {}
    for k, v in after.items():
        if not k.startswith("judge/") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if k in PER_CALL_MEANS:
            total = v * after.get("judge/calls", 0) - before.get(k, 0) * before.get("judge/calls", 0)
            out[k] = total / calls if calls else 0.0
        else:
            out[k] = v - before.get(k, 0)
    return out


def rollout_ids(tag: str, n: int) -> list[str]:
    """The rollout ids of one call's n completions, `<tag>-<i>` (tag: step and process). A completion's index is its
    place in this list (looked up by id), never read back out of the id."""
    return [f"{tag}-{i}" for i in range(n)]


def verdict_columns(judgments, ids: list[str], pairs: list[dict] | None) -> dict[str, list]:
    """TRL completions-table columns of this process's completions (`ids`: their rollout ids, in order): `criteria`
    (JSON {criterion id: r}) and, with an audit, `audit` (JSON {criterion id: [training r, audit r]}, None when the
    completion was not audited)."""
    def r(x):
        return None if x != x else round(float(x), 4)

    row = {rid: i for i, rid in enumerate(ids)}
    by_row = [{} for _ in ids]
    for j in judgments:
        by_row[row[j.rollout_id]][j.criterion_id] = r(j.score)
    out = {"criteria": [json.dumps(v, sort_keys=True) for v in by_row]}
    if pairs is not None:
        audited = [{} for _ in ids]
        for p in pairs:
            if p["rollout_id"] in row:
                audited[row[p["rollout_id"]]][p["criterion_id"]] = [r(p["trained"]), r(p["audit"])]
        out["audit"] = [json.dumps(v, sort_keys=True) if v else None for v in audited]
    return out


def items_by_id(items) -> dict:
    """{prompt id: Item} from a RubricSet, a list of Items or such a dict (a repeated id is an error)."""
    if isinstance(items, dict):
        return items
    listed = list(getattr(items, "items", items))
    out = {it.id: it for it in listed}
    if len(out) != len(listed):
        raise ValueError("FocalReward: two items share an id; prompt ids must be unique")
    return out


def state_from_judgments(df: pd.DataFrame) -> FocalState:
    """Seed Focal's moving average with the base policy's judged rollouts (its measured saturation)."""
    m = satisfaction_matrix(df)
    return update_state(FocalState(), m.r, m.groups, m.keys, beta=0.0)


class FocalReward:
    """The TRL reward function: judge a batch, build the satisfaction matrix, aggregate (docs/method.md).

        rubrics = load_rubric_set("default")
        reward = FocalReward(rubrics, aggregator="focal", judge=OpenAIJudge(url, model))
        GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=rubrics.dataset("train"), ...)

    `items`: a RubricSet, a list of Items, or {prompt id: Item}; the training dataset's `prompt_id` column names
    each completion's item. `judge`: a focal.judging.judge.Judge (OpenAIJudge, or open_judge in the pipeline); None with
    checks_only rewards only the criteria that have a programmatic check. `aggregator_params`: the aggregator's
    knobs (e.g. gamma=2.0 for focal; focal.rewards.aggregators.aggregator_params lists them). `max_failure_share`: a step
    in which more than this share of the judge's calls failed raises focal.judging.tables.TooManyFailures (training stops,
    its checkpoints and the cached judgments kept) instead of training on what is left; None: no budget."""

    def __init__(self, items, aggregator: str = "focal", judge: Judge | None = None,
                 state: FocalState | None = None, checks_only: bool = False, audit: Audit | None = None,
                 max_failure_share: float | None = None, **aggregator_params):
        get_aggregator(aggregator)  # a typo fails here, listing the valid names
        items = items_by_id(items)
        judged = sorted({c.id for it in items.values() for c in it.criteria if c.check is None})
        if judge is None and judged and not checks_only:
            raise ValueError(f"FocalReward: {len(judged)} criteria have no check (e.g. {judged[0]!r}) and need a "
                             "judge; pass judge=Judge(...), or checks_only=True to reward only the checked criteria")
        self.items, self.aggregator, self.params = items, aggregator, aggregator_params
        self.judge, self.max_failure_share = judge, max_failure_share
        self.audit = audit if audit is not None and audit.share > 0 and judge is not None else None  # needs a judge
        self.checks_only = checks_only or judge is None
        self.state = state or FocalState()
        self.__name__ = f"rubric_{aggregator}"  # TRL logs rewards/<__name__>/mean
        self.step = 0
        self.timings: list[dict] = []
        self.last_metrics: dict = {}

    def checkpoint(self) -> dict:
        """What a checkpoint keeps of the reward: Focal's moving average and the step count."""
        return {"m": dict(self.state.m), "step": self.step, "aggregator": self.aggregator}

    def restore(self, saved: dict) -> None:
        if saved.get("aggregator", self.aggregator) != self.aggregator:
            raise ValueError(f"checkpoint was written with aggregator {saved['aggregator']!r}, not {self.aggregator!r}")
        self.state, self.step = FocalState(dict(saved["m"])), int(saved["step"])

    def requests(self, prompt_ids, texts, ids: list[str] | None = None) -> list[Request]:
        """One request per (completion, criterion) (focal.judging.prompts.requests_for); `ids`: the completions'
        rollout ids (default rollout_ids of this step)."""
        ids = ids or rollout_ids(f"s{self.step}", len(texts))
        rows = [{"prompt_id": pid, "rollout_id": rid, "completion": text}
                for pid, text, rid in zip(prompt_ids, texts, ids)]
        return requests_for(rows, self.items, "FocalReward", only_checks=self.checks_only,
                            fix="the training dataset's prompt_id column must match the items")

    async def __call__(self, prompts, completions, prompt_id=None, log_metric=None, log_extra=None,
                       **kwargs) -> list[float | None]:
        from focal.judging.prompts import decide_checks

        if prompt_id is None:
            raise ValueError("FocalReward needs a `prompt_id` column in the training dataset")
        t0 = time.perf_counter()
        texts = [completion_text(c) for c in completions]
        processes, rank = world()
        ids = rollout_ids(f"s{self.step}-r{rank}", len(texts))
        reqs = self.requests(prompt_id, texts, ids)
        pairs = None
        if self.judge is None:
            judgments, counts = decide_checks(reqs), {"judge/calls": 0, "judge/cache_hits": 0, "judge/failures": 0}
        else:
            second = self.audit.judge if self.audit is not None else None  # the audit's own judge (source endpoint)
            before, other = self.judge.stats.metrics(), second.stats.metrics() if second is not None else {}
            if self.audit is None:
                judgments = await self.judge.arun(reqs)
            else:
                judgments, pairs = await self.audit.judged(self.judge, reqs)
            counts = judge_deltas(before, self.judge.stats.metrics())
            if second is not None:
                counts |= {f"audit/{k}": v for k, v in judge_deltas(other, second.stats.metrics()).items()}
        t1 = time.perf_counter()
        if log_extra is not None:
            for column, values in verdict_columns(judgments, ids, pairs).items():
                log_extra(column, values)
        rows = [j.__dict__ for j in judgments]
        if processes > 1:  # TRL gives each process its share of the batch (a group may be split): aggregate it whole
            rows = gather_rows(rows, processes)
            pairs = gather_rows(pairs, processes) if pairs is not None else None
        df = pd.DataFrame(rows)
        if self.max_failure_share is not None and len(df):  # the whole batch (every process's rows): all stop alike
            check_failure_budget(df, self.max_failure_share, f"FocalReward step {self.step}")
        rewards = [None] * len(texts)
        metrics = {}
        if len(df):
            m = satisfaction_matrix(df)
            out = aggregate(self.aggregator, m.r, m.w, m.groups, m.categories, m.keys, self.state, **self.params)
            self.state = out.state
            index = {rid: k for k, rid in enumerate(m.rollout_ids)}
            values = out.as_list()
            rewards = [values[index[rid]] if rid in index else None for rid in ids]
            metrics = step_metrics(m.r, m.w, m.groups, m.categories, m.keys, out, pitfall=m.pitfall)
            judged = df[df.source == "judge"]
            if len(judged):  # a judge that gives every rollout of a group the same verdict teaches nothing
                jm = satisfaction_matrix(judged)
                metrics.update({f"criteria/{k}/judge_constant": v
                                for k, v in constant_by_key(jm.r, jm.groups, jm.keys).items()})
        if pairs is not None:
            metrics.update(gap_metrics([p["key"] for p in pairs], [p["trained"] for p in pairs],
                                       [p["audit"] for p in pairs]))
        t2 = time.perf_counter()
        metrics.update(counts)
        metrics["train/aggregate_s"] = t2 - t1
        metrics["train/judge_s"] = t1 - t0
        self.timings.append({"judge_s": t1 - t0, "aggregate_s": t2 - t1})
        if log_metric is not None:
            for name, value in metrics.items():
                if value is not None and np.isfinite(value):
                    log_metric(name, float(value))
        self.last_metrics = metrics
        self.step += 1
        return rewards
