"""A reward-hacking audit during training: does the training judge pass what a second opinion fails?

    audit = Audit(share=0.25, source="checks")          # truth: the programmatic checks
    with open_audit(params.audit, JudgeSpec.from_params(params, template)) as audit:  # the train stage
    reward = FocalReward(items, "focal", judge=judge, audit=audit)   # logs criteria/<key>/audit_gap each step

On a share `audit.share` of each generation batch's completions (picked by a hash of
the rollout id, so each step samples afresh), a second opinion is asked:
- source "checks": the *training* judge is also asked the criteria that have a
  programmatic check, as if they had none (probes, never trained on, like
  focal/judging/agreement.py's check probes); the check's verdict is the truth. This
  measures the training judge where the answer is known.
- source "endpoint": another judge (audit.base_url, its own identity, so its own
  cache keys) scores the same completions on the LLM-judged criteria the training
  judge scored for the reward.

Per (completion, criterion) pair with both verdicts (a failed judgment on either side
leaves the pair out), a criterion is passed when its satisfaction r >= aggregate.MET
(a pitfall: absent), as everywhere else (focal/rewards/metrics.py). Logged every step:
- `criteria/<key>/audit_gap` = training judge's pass rate - the audit's pass rate on
  that key's pairs; positive = the training judge is more lenient than the truth,
  which is what a policy that games its judge produces;
- `audit/gap` over all pairs, `audit/n` the pairs compared, `audit/train_pass_rate`,
  `audit/audit_pass_rate`.

A gap that grows over training is the warning sign (the policy learns what fools the
judge). "Grows", defined simply: over the logged steps of a key, the mean of the last
third minus the mean of the first third (`growth`) exceeds `audit.max_gap_growth`;
fewer than 3 steps cannot grow. The train stage writes that verdict in its report.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from focal.judging.agreement import sampled
from focal.judging.judge import Judge, open_judge
from focal.judging.prompts import Judgment, Request, probe
from focal.judging.spec import JudgeSpec
from focal.rubrics.types import MET

SOURCES = ("checks", "endpoint")


# ---- the math ---------------------------------------------------------------------

def gap_metrics(keys, trained, audited) -> dict:
    """criteria/<key>/audit_gap and audit/* of paired satisfactions (NaN on either side = pair left out)."""
    keys = np.asarray(list(keys), dtype=object)
    t, a = np.asarray(list(trained), float), np.asarray(list(audited), float)
    both = ~np.isnan(t) & ~np.isnan(a)
    out = {"audit/n": float(both.sum())}
    if not both.any():
        return out
    keys, tm, am = keys[both], t[both] >= MET, a[both] >= MET
    out |= {"audit/gap": float(tm.mean() - am.mean()), "audit/train_pass_rate": float(tm.mean()),
            "audit/audit_pass_rate": float(am.mean())}
    for k in sorted(set(keys.tolist())):
        pick = keys == k
        out[f"criteria/{k}/audit_gap"] = float(tm[pick].mean() - am[pick].mean())
    return out


def growth(values) -> float:
    """Mean of the last third of `values` minus the mean of the first third (NaN left out); NaN below 3 values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    third = len(v) // 3
    if third == 0:
        return math.nan
    return float(v[-third:].mean() - v[:third].mean())


def growing(series: dict, max_growth: float) -> dict[str, float]:
    """{name: growth} of the series (name -> values over steps) whose growth exceeds max_growth."""
    out = {}
    for name, values in series.items():
        g = growth(values)
        if not math.isnan(g) and g > max_growth:
            out[name] = g
    return out


def report(series: dict, max_growth: float) -> str:
    """Markdown: per series (criterion key -> gap values over steps) its first and last third's means, growth, and
    a flag when it grows (> max_growth); '' when nothing was audited."""
    if not series:
        return ""
    lines = ["| criterion key | steps | first third | last third | growth | grows? |", "|---|---|---|---|---|---|"]
    flagged = growing(series, max_growth)
    for name, values in series.items():
        v = [x for x in values if x is not None and not math.isnan(x)]
        third = len(v) // 3
        first, last = (np.mean(v[:third]), np.mean(v[-third:])) if third else (math.nan, math.nan)
        cells = " | ".join("-" if math.isnan(x) else f"{x:+.3f}" for x in (first, last, growth(v)))
        lines.append(f"| {name} | {len(v)} | {cells} | {'**GROWS**' if name in flagged else 'no'} |")
    head = (f"Audit gap (training judge's pass rate - the audit's, per criterion key); it grows when the mean of the "
            f"last third of steps exceeds the first third's by more than audit.max_gap_growth = {max_growth} ('-': "
            "fewer than 3 audited steps).")
    if flagged:
        head += (f"\n\n**Warning: the audit gap grows on {', '.join(flagged)}**: the policy may be learning what the "
                 "training judge passes but the audit does not (reward hacking).")
    return head + "\n\n" + "\n".join(lines)


# ---- the audit inside the reward ------------------------------------------------------

def pairs_of(trained: list[Judgment], audited: list[Judgment]) -> list[dict]:
    """Rows {rollout_id, criterion_id, key, trained, audit} of the pairs on both sides (same rollout and criterion):
    `trained` holds the training judge's verdicts, `audited` the audit's truth."""
    first = {(j.rollout_id, j.criterion_id): j for j in trained}
    return [{"rollout_id": j.rollout_id, "criterion_id": j.criterion_id, "key": j.key,
             "trained": first[(j.rollout_id, j.criterion_id)].score, "audit": j.score}
            for j in audited if (j.rollout_id, j.criterion_id) in first]


@dataclass
class Audit:
    """The audit's settings and, for source 'endpoint', its judge (see the module docstring)."""

    share: float
    source: str = "checks"
    judge: Judge | None = None

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"audit.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "endpoint" and self.judge is None:
            raise ValueError("audit.source 'endpoint' needs an audit judge (set audit.base_url and audit.model)")

    def probes(self, requests: list[Request]) -> list[Request]:
        """The requests to ask the second opinion: for the sampled completions, their checked criteria without the
        check (source 'checks') or their LLM-judged criteria (source 'endpoint')."""
        picked = [r for r in requests if self.share > 0 and sampled(r.rollout_id, "audit", self.share)]
        if self.source == "checks":
            return [probe(r) for r in picked if r.criterion.check is not None]
        return [r for r in picked if r.criterion.check is None]

    async def judged(self, training: Judge, requests: list[Request]) -> tuple[list[Judgment], list[dict]]:
        """The training judge's judgments of `requests` (what the reward uses) and the audit's pairs {key, trained,
        audit}. The probes of source 'checks' go to the training judge in the same call (its judge/* counts
        include them); the audit judge of source 'endpoint' runs concurrently."""
        probes = self.probes(requests)
        if self.source == "checks":
            out = await training.arun(requests + probes)
            judgments, answers = out[:len(requests)], out[len(requests):]
            return judgments, pairs_of(answers, [j for j in judgments if j.source == "check"])
        judgments, answers = await asyncio.gather(training.arun(requests), self.judge.arun(probes))
        return judgments, pairs_of(judgments, answers)


# ---- the train stage's side --------------------------------------------------------------

@contextmanager
def open_audit(audit, spec: JudgeSpec, needed: bool = True):
    """The audit the `audit` section asks for (None when audit.share is 0 or no judge is `needed`); source
    'endpoint' gets a judge at audit.base_url opened by focal.judging.judge.open_judge from spec.for_audit: the
    training judge's mode, decoding, bounds, template and cache, and its own identity (so its own cache keys)."""
    if audit.share == 0 or not needed:
        yield None
        return
    if audit.source == "checks":
        yield Audit(audit.share, audit.source)
        return
    with open_judge(spec.for_audit(audit)) as second:
        yield Audit(audit.share, audit.source, second)
