"""Judges voting (focal/judging/ensemble.py): the vote by hand, three loopback judges that answer differently, and the
ensemble measured beside each member in the judge stage."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fake_openai import FakeOpenAI
from focal.config import Judge as JudgeConfig
from focal.config import load_params, params_from_dict
from focal.core.cache import Cache
from focal.judging.agreement import with_ensemble
from focal.judging.ensemble import Ensemble, vote
from focal.judging.judge import Judge
from focal.judging.prompts import Request
from focal.rubrics.sets import Criterion, Item
from focal.serving.endpoints import Endpoint
from stages import judge as judge_stage
from helpers import Always, judge_project

nan = math.nan


def test_the_vote_by_hand():
    assert vote([1, 0, 1], "majority") == 1.0 and vote([1, 0, 0], "majority") == 0.0
    assert math.isnan(vote([1, 0], "majority"))  # a tie is no verdict
    assert vote([1, nan, 0, 0], "majority") == 0.0  # a failed member is left out: 1 of 3 say met
    assert vote([0.75, 0.25, 0.5], "majority") == 1.0  # likert: met when r >= 0.5 (2 of 3)
    assert vote([1, 0, 1], "mean") == pytest.approx(2 / 3) and vote([1, 0], "mean") == 0.5
    assert math.isnan(vote([nan, nan], "mean")) and math.isnan(vote([], "majority"))
    with pytest.raises(ValueError, match="ensemble.vote must be one of majority, mean"):
        vote([1], "median")


KIND = Criterion("kind", "Is kind.", 1.0, "important", key="kind")
ITEM = Item("p", "say hi", (KIND,))
REQUESTS = [Request(ITEM, KIND, text, f"r{i}") for i, text in enumerate(["GOOD a", "b", "GOOD c", "d"])]


def member(server, tmp_path, name):
    cfg = JudgeConfig(model="fake", max_retries=0, backoff_s=0.01, timeout_s=5.0, mode="per_criterion")
    return Judge(cfg, Endpoint(server.base_url, "fake", f"fake-{name}"), cache=Cache(tmp_path / "cache.sqlite"))


def test_three_judges_that_answer_differently(tmp_path):
    with Always(met=True) as yes, Always(met=False) as no, FakeOpenAI() as good:  # good: met iff "GOOD"
        members = {"yes": member(yes, tmp_path, "yes"), "no": member(no, tmp_path, "no"),
                   "good": member(good, tmp_path, "good")}
        votes = Ensemble(members, "majority").run(REQUESTS)
        assert yes.calls == no.calls == good.calls == 4  # each member asked once per request: its own cache keys
        mean = Ensemble(members, "mean").run(REQUESTS)
        assert yes.calls == 4  # asked again: answered from each member's own cache entries
    assert list(votes.columns) == ["rollout_id", "criterion_id", "key", "yes", "no", "good", "vote"]
    assert votes.yes.tolist() == [1.0] * 4 and votes.no.tolist() == [0.0] * 4
    assert votes.vote.tolist() == votes.good.tolist() == [1.0, 0.0, 1.0, 0.0]  # yes and no cancel out
    assert mean.vote.tolist() == pytest.approx([2 / 3, 1 / 3, 2 / 3, 1 / 3])
    # against checks that say met only for r0: vote tp 1, fp 1, tn 2 -> agreement 3/4; p_truth 1/4, p_vote 1/2,
    # p_e = 1/8 + 3/8 = 1/2 -> kappa 1/2. yes: tp 1, fp 3 -> 1/4 (kappa 0); no: fn 1, tn 3 -> 3/4 (kappa 0)
    truth = pd.DataFrame({"rollout_id": ["r0", "r1", "r2", "r3"], "criterion_id": ["kind"] * 4, "key": ["kind"] * 4,
                          "source": ["check"] * 4, "score": [1.0, 0.0, 0.0, 0.0]})
    m = with_ensemble(truth, votes)
    assert (m["ensemble/agreement/overall"], m["ensemble/agreement/kappa"]) == (0.75, 0.5)
    assert (m["ensemble/member/yes/agreement/overall"], m["ensemble/member/yes/agreement/kappa"]) == (0.25, 0.0)
    assert (m["ensemble/member/no/agreement/overall"], m["ensemble/member/no/agreement/kappa"]) == (0.75, 0.0)
    assert m["ensemble/member/good/agreement/overall"] == 0.75
    assert m["ensemble/agreement/by_key/kind/n"] == 4


def test_a_known_member_is_not_asked_and_ties_are_no_verdict(tmp_path):
    with Always(met=False) as no:
        votes = Ensemble({"no": member(no, tmp_path, "no")}).run(REQUESTS, known={"judge": [1.0, 0.0, nan, 1.0]})
        assert no.calls == 4
    assert votes.judge.tolist()[:2] == [1.0, 0.0]
    # judge 1 vs no 0: tie -> NaN; judge 0 vs no 0 -> 0; judge failed: no alone -> 0; tie -> NaN
    assert [None if math.isnan(v) else v for v in votes.vote] == [None, 0.0, 0.0, None]
    with pytest.raises(ValueError, match="member 'no' is both asked and given"):
        Ensemble({"no": member(no, tmp_path, "no")}).run(REQUESTS, known={"no": [1.0] * 4})


def test_ensemble_settings_are_checked():
    ok = {"name": "b", "base_url": "http://x/v1", "model": "m"}
    assert params_from_dict({"ensemble": {"members": [ok]}}).ensemble.members == [ok]
    with pytest.raises(ValueError, match="ensemble.members must be a list whose entries are each a mapping"):
        params_from_dict({"ensemble": {"members": [{"base_url": "http://x/v1", "model": "m"}]}})  # no name
    with pytest.raises(ValueError, match="distinct names other than 'judge'"):
        params_from_dict({"ensemble": {"members": [{**ok, "name": "judge"}]}})


def test_the_judge_stage_measures_the_ensemble_beside_each_member(tmp_path):
    with FakeOpenAI() as judge, Always(met=True) as yes, Always(met=False) as no:
        path = judge_project(tmp_path, judge.base_url)
        raw = yaml.safe_load(path.read_text())
        raw["judge"]["mode"] = "per_criterion"  # the members (Always) answer JSON
        raw["ensemble"] = {"members": [{"name": "yes", "base_url": yes.base_url, "model": "fake"},
                                       {"name": "no", "base_url": no.base_url, "model": "fake"}]}
        path.write_text(yaml.safe_dump(raw))
        params = load_params(path)
        judge_stage.run(params)
        assert yes.calls == no.calls > 0
    stats = json.loads(Path(params.paths.judge_stats).read_text())
    votes = pd.read_parquet(params.paths.judge_votes)
    assert list(votes.columns) == ["rollout_id", "criterion_id", "key", "judge", "yes", "no", "vote"]
    assert len(votes) == stats["agreement/n"] + stats["agreement/missing"] == yes.calls
    # the configured judge as a member has its own figures; yes and no cancel, so the vote is the judge's
    for k in ("overall", "kappa", "n", "tp", "fp", "fn", "tn"):
        assert stats[f"ensemble/member/judge/agreement/{k}"] == stats[f"agreement/{k}"]
        assert stats[f"ensemble/agreement/{k}"] == stats[f"agreement/{k}"]
    # yes and no give opposite verdicts on every pair (pitfalls too), so exactly one of them agrees with each check
    assert stats["ensemble/member/yes/agreement/overall"] + stats["ensemble/member/no/agreement/overall"] == \
        pytest.approx(1.0, abs=1e-3)
    assert stats["ensemble/member/yes/judge/calls"] == yes.calls


def test_without_an_ensemble_the_votes_table_is_empty(tmp_path):
    with FakeOpenAI() as judge:
        params = load_params(judge_project(tmp_path, judge.base_url))
        judge_stage.run(params)
    assert pd.read_parquet(params.paths.judge_votes).empty
    assert not any(k.startswith("ensemble/") for k in json.loads(Path(params.paths.judge_stats).read_text()))
