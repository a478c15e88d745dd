"""FocalReward: a TRL reward function that judges each completion on its rubric and aggregates the batch.

    from focal import FocalReward
    reward = FocalReward(items, aggregator="focal", judge=judge)   # items: {prompt_id: Item}
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=ds, args=cfg)  # ds has prompt_id

Called by TRL once per generation batch (all P*G completions): it judges every
(completion, criterion) (checks locally, the rest through the cached async judge),
builds the satisfaction matrix, groups rollouts by prompt, and applies the
aggregator (`static`, `gdpo`, `pow3r`, `focal`, `strict`, `min`), carrying Focal's
state across steps. Through TRL's `log_metric` it logs METHOD.md's names:
criteria/<key>/{pass_rate,saturation,weight}, rubric/*, judge/*, and
train/aggregate_s (the time the aggregation took). A completion with nothing
judged gets None (TRL's "could not score").
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from focal.aggregate import FocalState, aggregate, get_aggregator, update_state
from focal.config import Judge as JudgeConfig
from focal.judge import Judge, Request
from focal.metrics import satisfaction_matrix, step_metrics


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
                 state: FocalState | None = None, use_judge: bool = True, **aggregator_params):
        get_aggregator(aggregator)  # a typo fails here, listing the valid names
        self.items, self.aggregator, self.params = items, aggregator, aggregator_params
        self.judge = judge or Judge(JudgeConfig(), "http://127.0.0.1:9/v1")  # checks only: never called
        self.use_judge = use_judge and judge is not None
        self.state = state or FocalState()
        self.__name__ = f"rubric_{aggregator}"  # TRL logs rewards/<__name__>/mean
        self.step = 0
        self.timings: list[dict] = []

    def requests(self, prompt_ids, texts) -> list[Request]:
        reqs = []
        for i, (pid, text) in enumerate(zip(prompt_ids, texts)):
            if pid not in self.items:
                raise ValueError(f"prompt_id {pid!r} has no rubric; the dataset's prompt_id column must match the items")
            reqs += [Request(self.items[pid], c, text, f"s{self.step}-{i}") for c in self.items[pid].criteria
                     if self.use_judge or c.check is not None]
        return reqs

    def __call__(self, prompts, completions, prompt_id=None, log_metric=None, **kwargs) -> list[float | None]:
        if prompt_id is None:
            raise ValueError("FocalReward needs a `prompt_id` column in the training dataset")
        t0 = time.perf_counter()
        texts = [completion_text(c) for c in completions]
        before = self.judge.stats.metrics()
        judgments = self.judge.run(self.requests(prompt_id, texts))
        t1 = time.perf_counter()
        df = pd.DataFrame([j.__dict__ for j in judgments])
        rewards = [None] * len(texts)
        metrics = {}
        if len(df):
            m = satisfaction_matrix(df)
            out = aggregate(self.aggregator, m.r, m.w, m.groups, m.categories, m.keys, self.state, **self.params)
            self.state = out.state
            index = {rid: k for k, rid in enumerate(m.rollout_ids)}
            values = out.as_list()
            rewards = [values[index[f"s{self.step}-{i}"]] if f"s{self.step}-{i}" in index else None
                       for i in range(len(texts))]
            metrics = step_metrics(m.r, m.w, m.groups, m.categories, m.keys, out)
        t2 = time.perf_counter()
        after = self.judge.stats.metrics()
        metrics.update({k: after[k] - before.get(k, 0) for k in ("judge/calls", "judge/cache_hits", "judge/failures")})
        calls = metrics["judge/calls"]
        metrics["judge/latency_s"] = ((after["judge/latency_s"] * after["judge/calls"] -
                                       before["judge/latency_s"] * before["judge/calls"]) / calls) if calls else 0.0
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
