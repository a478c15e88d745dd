"""FocalReward: a TRL reward function that judges each completion on its rubric and aggregates the batch.

    from focal import FocalReward
    judge = Judge(params.judge, endpoint, cache=Cache("cache/judge.sqlite"))   # cached: a repeat costs no call
    reward = FocalReward(items, aggregator="focal", judge=judge)   # items: {prompt_id: Item}
    reward = FocalReward(items, aggregator="focal", checks_only=True)   # no judge: only criteria with a check
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=ds, args=cfg)  # ds has prompt_id

Called by TRL once per generation batch (all P*G completions). It is async (TRL
awaits it on its own event loop), so it also works where a loop is already running
(a notebook): `await reward(prompts, completions, prompt_id=ids)`. Each call:
judge every (completion, criterion) (checks locally, the rest through the cached
judge), build the satisfaction matrix, group rollouts by prompt, apply the
aggregator (`static`, `gdpo`, `pow3r`, `focal`, `strict`, `min`) and carry
Focal's state to the next step. A failed judgment is left out of its row (see
focal/aggregate.py); a completion with nothing judged gets None (TRL's "could not
score"). Through TRL's `log_metric` it logs docs/method.md's names: criteria/<key>/*,
rubric/*, judge/*, train/aggregate_s and train/judge_s; rubric/zero_std_frac (groups
whose rewards are all equal: no gradient) and criteria/<key>/judge_constant (groups
in which the judge gave every rollout the same verdict) say whether anything can be
learned (focal.train.SignalGate acts on them).

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

import time

import numpy as np
import pandas as pd

from focal.aggregate import FocalState, aggregate, get_aggregator, update_state
from focal.judge import Judge, Request
from focal.metrics import constant_by_key, satisfaction_matrix, step_metrics


def world() -> tuple[int, int]:
    """(number of processes, this process's index) once torch.distributed is set up (accelerate, torchrun,
    DeepSpeed all do it); (1, 0) in a plain process."""
    import torch.distributed as dist

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


def state_from_judgments(df: pd.DataFrame) -> FocalState:
    """Seed Focal's moving average with the base policy's judged rollouts (its measured saturation)."""
    m = satisfaction_matrix(df)
    return update_state(FocalState(), m.r, m.groups, m.keys, beta=0.0)


class FocalReward:
    def __init__(self, items: dict, aggregator: str = "focal", judge: Judge | None = None,
                 state: FocalState | None = None, checks_only: bool = False, **aggregator_params):
        get_aggregator(aggregator)  # a typo fails here, listing the valid names
        judged = sorted({c.id for it in items.values() for c in it.criteria if c.check is None})
        if judge is None and judged and not checks_only:
            raise ValueError(f"FocalReward: {len(judged)} criteria have no check (e.g. {judged[0]!r}) and need a "
                             "judge; pass judge=Judge(...), or checks_only=True to reward only the checked criteria")
        self.items, self.aggregator, self.params = items, aggregator, aggregator_params
        self.judge = judge
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

    def requests(self, prompt_ids, texts, tag: str = "") -> list[Request]:
        """One request per (completion, criterion); rollout ids `<tag>-<i>` (tag: step and process)."""
        reqs = []
        for i, (pid, text) in enumerate(zip(prompt_ids, texts)):
            if pid not in self.items:
                raise ValueError(f"prompt_id {pid!r} has no rubric; the dataset's prompt_id column must match the items")
            reqs += [Request(self.items[pid], c, text, f"{tag or f's{self.step}'}-{i}") for c in self.items[pid].criteria
                     if not self.checks_only or c.check is not None]
        return reqs

    async def __call__(self, prompts, completions, prompt_id=None, log_metric=None, **kwargs) -> list[float | None]:
        from focal.judge import decide_checks

        if prompt_id is None:
            raise ValueError("FocalReward needs a `prompt_id` column in the training dataset")
        t0 = time.perf_counter()
        texts = [completion_text(c) for c in completions]
        processes, rank = world()
        tag = f"s{self.step}-r{rank}"
        reqs = self.requests(prompt_id, texts, tag)
        if self.judge is None:
            judgments, counts = decide_checks(reqs), {"judge/calls": 0, "judge/cache_hits": 0, "judge/failures": 0}
        else:
            before = self.judge.stats.metrics()
            judgments = await self.judge.arun(reqs)
            after = self.judge.stats.metrics()
            counts = {k: after[k] - before.get(k, 0) for k in ("judge/calls", "judge/cache_hits", "judge/failures")}
        t1 = time.perf_counter()
        rows = [j.__dict__ for j in judgments]
        if processes > 1:  # TRL gives each process its share of the batch (a group may be split): aggregate it whole
            rows = gather_rows(rows, processes)
        df = pd.DataFrame(rows)
        rewards = [None] * len(texts)
        metrics = {}
        if len(df):
            m = satisfaction_matrix(df)
            out = aggregate(self.aggregator, m.r, m.w, m.groups, m.categories, m.keys, self.state, **self.params)
            self.state = out.state
            index = {rid: k for k, rid in enumerate(m.rollout_ids)}
            values = out.as_list()
            rewards = [values[index[f"{tag}-{i}"]] if f"{tag}-{i}" in index else None for i in range(len(texts))]
            metrics = step_metrics(m.r, m.w, m.groups, m.categories, m.keys, out, pitfall=m.pitfall)
            judged = df[df.source == "judge"]
            if len(judged):  # a judge that gives every rollout of a group the same verdict teaches nothing
                jm = satisfaction_matrix(judged)
                metrics.update({f"criteria/{k}/judge_constant": v
                                for k, v in constant_by_key(jm.r, jm.groups, jm.keys).items()})
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
