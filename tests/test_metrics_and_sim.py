"""Metrics with hand-computed values (the simulator's tests: tests/test_simulate.py)."""

import numpy as np
import pytest

from focal.rewards.aggregators import aggregate
from focal.rewards.metrics import noncontrastive_frac, rubric_summary, step_metrics

nan = np.nan


def test_rubric_summary_hand_computed():
    r = np.array([[1, 0, 1], [1, 1, nan], [nan, nan, nan]])
    w = [2, 1, 1]
    out = rubric_summary(r, w, [False, False, True], ["essential", "important", "pitfall"])
    # HealthBench: rollout 1: (2 + 0 - 0) / 3; rollout 2: (2 + 1) / 3 = 1; rollout 3 not scored
    assert out["rubric/score"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["rubric/strict_completion"] == 0.5
    assert out["category/essential/pass_rate"] == 1.0
    assert out["category/important/pass_rate"] == 0.5
    assert out["rubric/min_category"] == 0.5
    assert "rubric/min_key" not in out  # only with keys
    # keys: "a" pools columns 0 and 1 (1, 0, 1, 1 -> .75), "b" is column 2 (1 -> 1.0): not the category minimum
    keyed = rubric_summary(r, w, [False, False, True], ["essential", "important", "pitfall"], keys=["a", "a", "b"])
    assert keyed["rubric/min_key"] == 0.75


def test_one_rubric_score_for_training_logs_and_evaluation():
    """The issue's case: w = [5, pitfall 4], met and pitfall present -> (5 - 4) / 5 = 0.2 on both paths."""
    import pandas as pd

    from focal.evaluation.evaluate import evaluate_judgments
    from focal.rewards.metrics import satisfaction_matrix

    rows = [dict(prompt_id="p", rollout_id=rid, criterion_id=cid, key=cid, category=cat, weight=w, pitfall=pit,
                 score=score, reason="")
            for rid, present in (("a", 1.0), ("b", 0.0))
            for cid, cat, w, pit, score in (("good", "essential", 5.0, False, 1.0),
                                            ("bad", "pitfall", 4.0, True, 1.0 - present))]
    df = pd.DataFrame(rows)
    m = satisfaction_matrix(df)
    agg = aggregate("static", m.r, m.w, m.groups, m.categories, m.keys)
    logged = step_metrics(m.r, m.w, m.groups, m.categories, m.keys, agg, pitfall=m.pitfall)
    evaluated = evaluate_judgments(df, n_bootstrap=10)
    assert logged["rubric/score"] == evaluated["rubric_score"] == pytest.approx((0.2 + 1.0) / 2)
    assert logged["rubric/strict_completion"] == evaluated["strict_completion"] == 0.5
    assert logged["rubric/min_category"] == evaluated["min_category"] == 0.5
    assert logged["criteria/bad/pass_rate"] == evaluated["key"]["bad"] == 0.5
    assert logged["rubric/min_key"] == evaluated["min_key"] == 0.5  # "good" is met by both (1.0), "bad" by one


def test_noncontrastive_frac_hand_computed():
    # group 0: col 0 varies, col 1 constant; group 1: both constant
    r = np.array([[1, 1], [0, 1], [1, 0], [1, 0]])
    assert noncontrastive_frac(r, [0, 0, 1, 1]) == 0.75


def test_step_metrics_names_and_weights():
    r = np.array([[1, 0], [1, 1]])
    agg = aggregate("focal", r, [1, 1], [0, 0], ["essential", "important"], ["a", "b"])
    m = step_metrics(r, [1, 1], [0, 0], ["essential", "important"], ["a", "b"], agg)
    assert m["criteria/a/pass_rate"] == 1.0 and m["criteria/b/pass_rate"] == 0.5
    assert m["criteria/a/saturation"] == 1.0 and m["criteria/b/saturation"] == 0.5
    assert m["criteria/a/weight"] == pytest.approx(4 / 7) and m["criteria/b/weight"] == pytest.approx(10 / 7)
    assert m["rubric/noncontrastive_frac"] == 0.5
    assert m["rubric/min_key"] == 0.5  # b


def test_constant_by_key_hand_computed():
    from focal.rewards.metrics import constant_by_key

    # group 0: a varies, b constant; group 1: a constant, b constant; c judged once per group: not counted
    r = np.array([[1, 1, 1], [0, 1, nan], [1, 0, 0], [1, 0, nan]])
    assert constant_by_key(r, [0, 0, 1, 1], ["a", "b", "c"]) == {"a": 0.5, "b": 1.0}
