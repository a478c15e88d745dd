"""Soft verdicts end to end: a satisfaction strictly between 0 and 1 (judge.mode one_token's P(yes) / (P(yes) + P(no)))
through every aggregator, every metric and the data checks, with numbers worked out by hand.

"Met", wherever a verdict must be yes or no (pass rates, strict completion, strict, agreement, the audit), is
r >= aggregate.MET = 0.5; everything that weighs satisfactions (static, the rubric score, gdpo, pow3r, both focal
forms, min) uses r itself."""

import math

import numpy as np
import pandas as pd
import pytest

from focal.config import Validate
from focal.judging.validate import check_judgments
from focal.rewards.aggregators import aggregate
from focal.rewards.metrics import pass_rates, response_scores, rubric_summary, strict_rows
from focal.rubrics.types import MET

R = [[0.9, 0.4], [0.7, 0.2]]  # one group of two rollouts, two criteria
W = [3, 1]


def run(name, r=R, w=W, categories=("a", "b"), **kw):
    return aggregate(name, r, list(w), groups=[0] * len(r), categories=list(categories), keys=["x", "y"], **kw)


def test_met_is_half():
    assert MET == 0.5


def test_static_soft():
    # (3 * 0.9 + 1 * 0.4) / 4, (3 * 0.7 + 1 * 0.2) / 4
    assert run("static").rewards == pytest.approx([0.775, 0.575])


def test_gdpo_soft():
    # both columns: std 0.1 around their means, so A = +-0.1 / 0.1001; raw R = 3A + A = +-4A, then batch-normalised
    a = 4 * 0.1 / (0.1 + 1e-4)
    assert run("gdpo").rewards == pytest.approx([a / (a + 1e-4), -a / (a + 1e-4)])


def test_pow3r_soft():
    # r = [[.8, .4], [.2, .6]]: contrast a = std = [.3, .1]; one category, W = 4: w' = 4 * [.9, .1] / 1 = [3.6, .4]
    out = run("pow3r", r=[[0.8, 0.4], [0.2, 0.6]], categories=("k", "k"))
    assert out.weights[0] == pytest.approx([3.6, 0.4])
    assert out.rewards == pytest.approx([(3.6 * 0.8 + 0.4 * 0.4) / 4, (3.6 * 0.2 + 0.4 * 0.6) / 4])  # .76, .24


def test_focal_soft():
    # no prior: s = group means [.8, .3]; alpha = [max(.1, .2^2), .7^2] = [.1, .49]; w' = alpha w 4 / .79
    out = run("focal", gamma=2.0, alpha_min=0.1)
    assert out.saturation[0] == pytest.approx([0.8, 0.3])
    assert out.weights[0] == pytest.approx([1.2 / 0.79, 1.96 / 0.79])
    assert out.rewards == pytest.approx([(1.2 * 0.9 + 1.96 * 0.4) / 3.16, (1.2 * 0.7 + 1.96 * 0.2) / 3.16])
    assert out.state.m == pytest.approx({"x": 0.8, "y": 0.3})


def test_focal_proj_soft():
    # u = [.75, .25]; S = static = [.775, .575]; q = softmax(S / 1); pace = sum_i q_i r_ic
    q0 = math.exp(0.775) / (math.exp(0.775) + math.exp(0.575))
    q = [q0, 1 - q0]
    pace = [q[0] * 0.9 + q[1] * 0.7, q[0] * 0.4 + q[1] * 0.2]  # [.80997, .30997]
    wp = [0.75 * (1 - pace[0] + 0.05) ** 3, 0.25 * (1 - pace[1] + 0.05) ** 3]
    wp = [x / sum(wp) for x in wp]  # [.092866, .907134]
    out = run("focal_proj")
    assert out.saturation[0] == pytest.approx(pace)
    assert out.rewards == pytest.approx([wp[0] * 0.9 + wp[1] * 0.4, wp[0] * 0.7 + wp[1] * 0.2])  # [.446433, .246433]


def test_strict_and_min_soft():
    # strict: met is r >= 0.5, so 0.5 counts and 0.49 does not; min: the smallest satisfaction itself
    assert run("strict", r=[[0.9, 0.5], [0.7, 0.49]]).rewards.tolist() == [1.0, 0.0]
    assert run("min").rewards == pytest.approx([0.4, 0.2])


def test_metrics_soft():
    r = np.array(R)
    # the rubric score weighs r: criterion 2 a pitfall with r = 1 - P(present): (3 * .9 - 1 * (1 - .4)) / 3
    assert response_scores(r[:1], W, [False, True]) == pytest.approx([0.7])
    assert response_scores(r, W, [False, False]) == pytest.approx([0.775, 0.575])
    # pass rates and strict completion count a verdict as met when r >= 0.5
    assert pass_rates(r, ["a", "b"]) == {"a": 1.0, "b": 0.0}
    assert strict_rows(r).tolist() == [0.0, 0.0] and strict_rows([[0.5, 0.6]]).tolist() == [1.0]
    summary = rubric_summary(r, W, [False, False], ["a", "b"], groups=[0, 0])
    assert summary["rubric/score"] == pytest.approx((0.775 + 0.575) / 2)
    assert summary["rubric/strict_completion"] == 0.0 and summary["rubric/min_category"] == 0.0


def test_data_checks_accept_soft_scores():
    rows = [{"prompt_id": f"p{i % 3}", "rollout_id": f"r{i}", "criterion_id": "relevant", "key": "relevant",
             "source": "judge", "score": s, "reason": ""} for i, s in enumerate([0.25, 0.75, 0.6, 0.1, 0.9, 0.33])]
    assert check_judgments(pd.DataFrame(rows), Validate(), 0.2)["success"]
    rows[0]["score"] = 1.25  # out of [0, 1] still fails
    assert not check_judgments(pd.DataFrame(rows), Validate(), 0.2)["success"]


def test_a_binary_criterion_projects_a_probability():
    from focal.rubrics.sets import Criterion

    assert Criterion("c", "Met.").satisfaction(0.75) == 0.75
    assert Criterion("p", "Rude.", pitfall=True).satisfaction(0.75) == 0.25  # P(present) 0.75 -> 1 - 0.75
    assert Criterion("c", "Met.").satisfaction(True) == 1.0 and Criterion("c", "Met.").satisfaction(False) == 0.0
    with pytest.raises(ValueError, match="a binary judgment is true/false or a probability in \\[0, 1\\], got 1.5"):
        Criterion("c", "Met.").satisfaction(1.5)
