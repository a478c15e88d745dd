"""Several judges voting on each (rollout, criterion): majority or mean, each member's verdict kept.

    with open_ensemble(params.ensemble, JudgeSpec.from_params(params, template)) as ens:  # or by hand:
        ens = Ensemble({"judge-b": judge_b, "judge-c": judge_c}, vote="majority")   # focal.judging.judge.open_judge's
    votes = ens.run(requests, known={"judge": [1.0, 0.0, ...]})   # a member whose answers are already in hand
    votes   # DataFrame: rollout_id, criterion_id, key, one column per member (its satisfaction), vote

Each member is a focal.judging.judge.Judge with its own Endpoint, so its own identity and its
own cache keys (`open_ensemble` opens each with focal.judging.judge.open_judge, its spec
the stage's judge spec at the member's endpoint: JudgeSpec.for_member). The judge stage measures the ensemble beside its members on the
check probes (focal/judging/agreement.py `with_ensemble`: ensemble/agreement/* for the vote,
ensemble/member/<name>/agreement/* for each member; the configured judge's own
figures are agreement/*) and writes `votes` to paths.judge_votes.

The vote, over the members' satisfactions r (polarity already applied: a pitfall's
r is 1 when absent), failed judgments (NaN) left out:
- majority: r = 1 if more members say met (r >= aggregate.MET) than not, 0 if fewer;
  a tie is no verdict (NaN): use an odd number of members;
- mean: r = the mean of the members' r (met when >= MET, so a 1-1 split is met).
Nothing to vote on (every member failed) is NaN.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import ExitStack, contextmanager

import numpy as np
import pandas as pd

from focal.judging.judge import Judge, open_judge
from focal.judging.prompts import Request
from focal.judging.spec import JudgeSpec
from focal.rubrics.types import MET

VOTES = ("majority", "mean")
EMPTY = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (("rollout_id", str), ("criterion_id", str), ("key", str),
                                                           ("judge", float), ("vote", float))})  # no ensemble


def vote(scores, how: str) -> float:
    """One satisfaction from the members' (NaN = failed, left out); see the module docstring."""
    ok = [float(s) for s in scores if s is not None and not math.isnan(s)]
    if not ok:
        return math.nan
    if how == "mean":
        return float(np.mean(ok))
    if how != "majority":
        raise ValueError(f"ensemble.vote must be one of {', '.join(VOTES)}, got {how!r}")
    met = sum(s >= MET for s in ok)
    return math.nan if 2 * met == len(ok) else float(2 * met > len(ok))


class Ensemble:
    """Judges voting; `members` maps a name (a column of the votes) to a Judge."""

    def __init__(self, members: dict[str, Judge], how: str = "majority"):
        if how not in VOTES:
            raise ValueError(f"ensemble.vote must be one of {', '.join(VOTES)}, got {how!r}")
        self.members, self.how = dict(members), how

    async def arun(self, requests: list[Request], known: dict[str, list] | None = None) -> pd.DataFrame:
        """The votes table of `requests`: each member's satisfaction (members in `known` are not asked; their
        scores are given in request order) and the vote."""
        known = dict(known or {})
        clash = sorted(set(known) & set(self.members))
        if clash:
            raise ValueError(f"ensemble member {clash[0]!r} is both asked and given; rename it")
        names = list(self.members)
        answers = await asyncio.gather(*(self.members[n].arun(requests) for n in names))
        columns = {**known, **{n: [j.score for j in a] for n, a in zip(names, answers)}}
        df = pd.DataFrame({"rollout_id": [r.rollout_id for r in requests],
                           "criterion_id": [r.criterion.id for r in requests],
                           "key": [r.criterion.key for r in requests], **columns})
        df["vote"] = [vote(row, self.how) for row in zip(*columns.values())] if columns else math.nan
        return df

    def run(self, requests: list[Request], known: dict[str, list] | None = None) -> pd.DataFrame:
        return asyncio.run(self.arun(requests, known))

    def stats(self) -> dict:
        """Each asked member's judge/* counts as ensemble/member/<name>/judge/*."""
        return {f"ensemble/member/{n}/{k}": v for n, j in self.members.items() for k, v in j.stats.metrics().items()}


@contextmanager
def open_ensemble(ensemble, spec: JudgeSpec):
    """The ensemble of the `ensemble` section (None without members): each member a judge opened by
    focal.judging.judge.open_judge from spec.for_member (its own endpoint, identity and API key; the judge's mode,
    decoding, bounds, template and cache)."""
    if not ensemble.members:
        yield None
        return
    with ExitStack() as stack:
        members = {m["name"]: stack.enter_context(open_judge(spec.for_member(m, i)))
                   for i, m in enumerate(ensemble.members)}
        yield Ensemble(members, ensemble.vote)
