"""Evaluation metrics on fixed judgments (no model), against hand-computed values; HealthBench agreement; plots."""

import math

import numpy as np
import pandas as pd
import pytest

from focal.evaluation.evaluate import (clipped_mean_and_std, evaluate_judgments, paired_difference, prompt_scores,
                            response_score)
from focal.evaluation.plots import pass_rates_plot, policies_plot, trajectories_plot


def test_healthbench_formula_hand_computed():
    # +5 met, +3 not met, -4 present: (5 - 4) / 8
    assert response_score([5, 3, 4], [False, False, True], [1, 0, 0]) == 0.125
    # pitfall absent costs nothing: 5 / 8
    assert response_score([5, 3, 4], [False, False, True], [1, 0, 1]) == 0.625
    # negative totals are allowed per response (only the mean is clipped)
    assert response_score([2, 6], [False, True], [0, 0]) == -3.0
    # a rubric with no positive points (e.g. item-less) has no score
    assert response_score([], [], []) is None
    assert response_score([4], [True], [0]) is None
    # a failed judgment is left out, not scored 0
    assert response_score([5, 3], [False, False], [1, math.nan]) == 1.0


def test_clipped_mean_as_healthbench():
    mean, std = clipped_mean_and_std([-0.5, 1.0])
    assert mean == 0.25 and std > 0
    assert clipped_mean_and_std([-1.0, -0.5])[0] == 0.0
    assert clipped_mean_and_std([1.5, 1.0])[0] == 1.0
    assert clipped_mean_and_std([0.4, 0.4, 0.4])[1] == pytest.approx(0.0, abs=1e-12)


def judgments():
    """Two prompts, two rollouts each. p1: relevant (5), short (3, check), rude (pitfall, 4). p2: relevant (5), rude (2)."""
    rows = []

    def add(pid, rid, cid, key, cat, w, pit, score):
        rows.append(dict(prompt_id=pid, rollout_id=rid, criterion_id=cid, key=key, category=cat, weight=w,
                         pitfall=pit, score=score))
    add("p1", "a", "relevant", "relevant", "essential", 5, False, 1.0)
    add("p1", "a", "short", "short", "important", 3, False, 1.0)
    add("p1", "a", "rude", "rude", "pitfall", 4, True, 1.0)      # a: 8/8 = 1, strict
    add("p1", "b", "relevant", "relevant", "essential", 5, False, 1.0)
    add("p1", "b", "short", "short", "important", 3, False, 0.0)
    add("p1", "b", "rude", "rude", "pitfall", 4, True, 0.0)      # b: (5 - 4)/8 = .125
    add("p2", "c", "relevant", "relevant", "essential", 5, False, 0.0)
    add("p2", "c", "rude", "rude", "pitfall", 2, True, 0.0)      # c: -2/5 = -.4
    add("p2", "d", "relevant", "relevant", "essential", 5, False, 1.0)
    add("p2", "d", "rude", "rude", "pitfall", 2, True, math.nan)  # d: 5/5 = 1 (failed pitfall judgment left out)
    return pd.DataFrame(rows)


def test_every_metric_hand_computed():
    df = judgments()
    scores = prompt_scores(df)
    assert scores.to_dict() == pytest.approx({"p1": (1 + 0.125) / 2, "p2": (-0.4 + 1) / 2})
    m = evaluate_judgments(df, n_bootstrap=200)
    assert m["rubric_score"] == pytest.approx((0.5625 + 0.3) / 2)
    assert m["prompts"] == 2
    assert m["strict_completion"] == 0.5  # a and d (d's failed judgment is not counted against it)
    assert m["category"] == {"essential": 0.75, "important": 0.5, "pitfall": pytest.approx(1 / 3)}
    assert m["key"] == {"relevant": 0.75, "rude": pytest.approx(1 / 3), "short": 0.5}
    assert m["min_category"] == pytest.approx(1 / 3)
    assert m["category_spread"] == pytest.approx(0.75 - 1 / 3)
    assert m["min_key"] == pytest.approx(1 / 3) and m["key_spread"] == pytest.approx(0.75 - 1 / 3)
    assert m["failed_judgments"] == 1


def test_paired_difference_on_common_prompts():
    a = pd.Series({"p1": 0.5, "p2": 0.25, "p3": 0.0})
    b = pd.Series({"p1": 0.75, "p2": 0.5, "p4": 1.0})
    d = paired_difference(a, b, n_bootstrap=300)
    assert d["diff"] == 0.25 and d["prompts"] == 2
    assert d["ci_low"] == d["ci_high"] == 0.25  # every paired difference is .25


def test_plots_write_pngs(tmp_path):
    m = evaluate_judgments(judgments(), n_bootstrap=50)
    bench = {"policies": {"base": m, "trained": m}}
    assert pass_rates_plot(bench, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert policies_plot(bench, tmp_path / "b.png").stat().st_size > 1000
    log = tmp_path / "log" / "plots" / "metrics" / "criteria"
    for key in ("short", "rude"):
        (log / key).mkdir(parents=True)
        for kind in ("saturation", "weight"):
            pd.DataFrame({"step": [0, 1, 2], kind: np.linspace(0.2, 0.9, 3)}).to_csv(log / key / f"{kind}.tsv", sep="\t", index=False)
    assert trajectories_plot(tmp_path / "log", tmp_path / "c.png").exists()
    assert trajectories_plot(tmp_path / "nothing", tmp_path / "d.png") is None


# ---- evaluation runs against loopback endpoints: identities, names, failures ------------------------------

def eval_params(tmp_path, serve_url, judge_url, **evaluate):
    from pathlib import Path

    import yaml

    from focal.config import load_params
    from stages import prepare

    root = Path(__file__).parents[1]
    raw = {"paths": {"rubrics": str(root / "rubrics"), **{k: str(tmp_path / v) for k, v in {
               "train_prompts": "train.parquet", "eval_prompts": "eval.parquet", "rollout_cache": "r.sqlite",
               "judge_template": "judge_template.md",
               "judge_cache": "j.sqlite", "trained_model": "trained", "base_model": "base"}.items()}},
           "prepare": {"max_train_prompts": 1, "max_eval_prompts": 2},
           "serve": {"base_url": serve_url},
           "rollouts": {"backoff_s": 0.01, "max_retries": 0},
           "judge": {"base_url": judge_url, "model": "judge", "backoff_s": 0.01, "max_retries": 0, "timeout_s": 5.0},
           "evaluate": {"limit": 2, "num_generations": 2, "n_bootstrap": 20, **evaluate}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    prepare.run(params)
    return params


def eval_items(params):
    from focal.evaluation.sets import load_benchmark

    items, _, template = load_benchmark("eval", params)
    return {"eval": (items, template)}


def test_remote_policies_are_each_asked_for_by_their_own_name(tmp_path):
    """With serve.base_url, base and trained used to share one id and trained reused base's rollouts (diff 0)."""
    from fake_openai import FakeOpenAI
    from focal.evaluation.evaluate import evaluate_policies

    with FakeOpenAI(models=("policy", "trained", "judge")) as server:
        params = eval_params(tmp_path, server.base_url, server.base_url)
        metrics, rollouts, _ = evaluate_policies(params, eval_items(params))
        asked = {b["model"] for b in server.requests if "n" in b}
    assert asked == {"policy", "trained"}
    ids = rollouts.groupby("policy_name").policy.first()
    assert ids["base"] != ids["trained"] and "|trained|" in ids["trained"]
    assert not set(rollouts[rollouts.policy_name == "base"].rollout_id) & set(
        rollouts[rollouts.policy_name == "trained"].rollout_id)
    assert metrics["eval"]["paired"]["trained_vs_base"]["prompts"] == 2
    assert metrics["eval"]["judge"]["agreement/n"] > 0  # the judge measured on the evaluation's own checks
    from focal.evaluation.evaluate import report

    text = report(metrics, [], params)
    assert "The judge vs the checks (agreement/*):" in text
    # every measure that was taken has its table, the repeated request's included
    assert "consistency/repeat/n" in metrics["eval"]["judge"]
    assert "The judge vs itself, the same request again (consistency/repeat/*):" in text
    with FakeOpenAI(models=("policy", "judge")) as server:  # nothing is served as 'trained'
        params = eval_params(tmp_path, server.base_url, server.base_url)
        with pytest.raises(ValueError, match="serve.base_url .* serves no model named 'trained'"):
            evaluate_policies(params, eval_items(params))


def test_evaluation_fails_when_the_judge_fails_and_reports_failures(tmp_path):
    from fake_openai import FakeOpenAI
    from focal.evaluation.evaluate import evaluate_policies, report
    from focal.judging.tables import TooManyFailures

    with FakeOpenAI(models=("policy", "trained")) as policy, FakeOpenAI(models=("judge",), always="500") as judge:
        params = eval_params(tmp_path, policy.base_url, judge.base_url)
        with pytest.raises(TooManyFailures, match=r"evaluate \(eval\): \d+ of \d+ judge calls failed \(100.0%"):
            evaluate_policies(params, eval_items(params))
    # under the budget, the report shows the failures per policy and criterion
    with FakeOpenAI(models=("policy", "trained")) as policy, FakeOpenAI(models=("judge",), always="500") as judge:
        (tmp_path / "b").mkdir()
        params = eval_params(tmp_path / "b", policy.base_url, judge.base_url)
        params.judge.max_failure_share = 1.0
        metrics, _, _ = evaluate_policies(params, eval_items(params))
    base = metrics["eval"]["policies"]["base"]
    assert base["failed_judgments"] > 0 and sum(base["failed_by_key"].values()) == base["failed_judgments"]
    text = report(metrics, [], params)
    assert f"| {base['failed_judgments']} of {base['judgments']} |" in text and "Failed judgments" in text
