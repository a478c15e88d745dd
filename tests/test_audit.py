"""The reward-hacking audit (focal/rewards/audit.py): the gap math by hand, the audit inside the reward, and a short GRPO run
with a judge that always says "met", whose gap shows in the logs, the plot, the report and TRL's completions table."""

import asyncio
import json
import math

import pandas as pd
import pytest

from focal.config import Judge as JudgeConfig
from focal.config import Train, params_from_dict
from focal.core.cache import Cache
from focal.judging.judge import Judge
from focal.rewards.audit import Audit, gap_metrics, growing, growth, report
from focal.rewards.reward import FocalReward, judge_deltas
from focal.rubrics.sets import Check, Criterion, Item
from focal.serving.endpoints import Endpoint
from helpers import CRITERIA, ITEMS, Always, string_splits
from tiny import make_tiny_model

# a checked criterion the tiny policy can never meet ("zebra" is not in its vocabulary) and one the judge decides
ZEBRA = Criterion("zebra", "Mentions a zebra.", 1.0, "important", check=Check("contains_any", {"words": ["zebra"]}),
                  key="zebra")
KIND = Criterion("kind", "Is kind.", 1.0, "important", key="kind")
AUDITED = [Item(it.id, it.prompt, CRITERIA + (ZEBRA, KIND)) for it in ITEMS]


def judge_at(server, tmp_path, name="fake-judge"):
    cfg = JudgeConfig(model="judge", max_retries=0, backoff_s=0.01, timeout_s=5.0, mode="per_criterion")
    return Judge(cfg, Endpoint(server.base_url, "judge", name), cache=Cache(tmp_path / f"{name}.sqlite"))


# ---- the math, by hand ----------------------------------------------------------------

def test_gap_by_hand():
    nan = math.nan
    m = gap_metrics(keys=["a", "a", "a", "b", "b", "c"], trained=[1, 1, 0, 1, 0.75, nan], audited=[0, 1, 0, 0, 1, 1])
    # pairs: a (1,0) (1,1) (0,0) -> 2/3 - 1/3; b (1,0) (0.75,1): 0.75 >= MET counts as met -> 2/2 - 1/2; c: no pair
    assert m["criteria/a/audit_gap"] == pytest.approx(1 / 3) and m["criteria/b/audit_gap"] == pytest.approx(0.5)
    assert "criteria/c/audit_gap" not in m and m["audit/n"] == 5
    # overall: trained met 4 of 5, audit met 2 of 5
    assert m["audit/gap"] == pytest.approx(0.4) and m["audit/train_pass_rate"] == pytest.approx(0.8)
    assert m["audit/audit_pass_rate"] == pytest.approx(0.4)
    assert gap_metrics([], [], []) == {"audit/n": 0.0}


def test_the_completions_table_finds_each_completion_by_its_id():
    from types import SimpleNamespace as J

    from focal.rewards.reward import rollout_ids, verdict_columns

    assert rollout_ids("s3-r1", 2) == ["s3-r1-0", "s3-r1-1"]
    ids = ["b-x", "a"]  # any ids: a completion's row is its place in `ids`, never a number read out of the id
    judged = [J(rollout_id="a", criterion_id="kind", score=1.0), J(rollout_id="b-x", criterion_id="kind", score=math.nan)]
    pairs = [{"rollout_id": "a", "criterion_id": "zebra", "trained": 1.0, "audit": 0.0},
             {"rollout_id": "other-process-0", "criterion_id": "zebra", "trained": 1.0, "audit": 1.0}]
    out = verdict_columns(judged, ids, pairs)
    assert [json.loads(c) for c in out["criteria"]] == [{"kind": None}, {"kind": 1.0}]
    assert out["audit"] == [None, json.dumps({"zebra": [1.0, 0.0]})]
    assert string_splits("focal/rewards/reward.py") == []  # no rollout id is parsed back


def test_growth_is_last_third_minus_first_third():
    assert growth([0.0, 0.0, 0.1, 0.2, 0.5, 0.6]) == pytest.approx(0.55)  # thirds of 2: 0.55 - 0.0
    assert growth([0.3, 0.1, 0.2, 0.9]) == pytest.approx(0.9 - 0.3)  # thirds of 1 (the middle is not used)
    assert math.isnan(growth([0.1, 0.9])) and math.isnan(growth([]))  # fewer than 3 steps cannot grow
    assert growth([0.2, math.nan, 0.2, 0.2]) == 0.0  # a step with nothing audited is left out
    series = {"rising": [0.0, 0.0, 0.1, 0.2, 0.5, 0.6], "flat": [0.5] * 6, "short": [0.0, 1.0]}
    assert growing(series, 0.1) == {"rising": pytest.approx(0.55)}
    assert growing(series, 0.6) == {}
    text = report(series, 0.1)
    assert "**Warning: the audit gap grows on rising**" in text and "| flat | 6 | +0.500 | +0.500 | +0.000 | no |" in text
    assert report({}, 0.1) == ""


def test_judge_metrics_are_forwarded_as_this_calls_deltas():
    before = {"judge/calls": 2, "judge/latency_s": 1.0, "judge/cost_usd": 0.5, "judge/failures": 0, "train/x": 9}
    after = {"judge/calls": 6, "judge/latency_s": 2.0, "judge/cost_usd": 0.75, "judge/failures": 1,
             "judge/failures/timeout": 1, "judge/note": "text"}
    # latency is a mean per call: (2.0 * 6 - 1.0 * 2) / 4 calls = 2.5; the rest are totals
    assert judge_deltas(before, after) == {"judge/calls": 4, "judge/latency_s": 2.5, "judge/cost_usd": 0.25,
                                           "judge/failures": 1, "judge/failures/timeout": 1}


# ---- the audit inside the reward ---------------------------------------------------------

BATCH = dict(prompts=["x"] * 4, completions=["the sun", "a b c d e f g !", "sun", "the cat"], prompt_id=["p0"] * 4)


def test_checks_audit_asks_the_training_judge_the_checked_criteria(tmp_path):
    logged, extra = {}, {}
    with Always(met=True) as server:
        judge = judge_at(server, tmp_path)
        reward = FocalReward({it.id: it for it in AUDITED}, "static", judge=judge, audit=Audit(1.0, "checks"))
        asyncio.run(reward(**BATCH, log_metric=logged.__setitem__, log_extra=extra.__setitem__))
        # 4 completions x kind (for the reward) + 4 x the 4 checked criteria (the audit's probes)
        assert server.calls == 4 + 16 == logged["judge/calls"]
    # the judge says "met" everywhere. short (<= 5 words): checks pass 3 of 4 -> gap 1 - 3/4; sun: 2 of 4 -> 1/2;
    # zebra: 0 of 4 -> 1; bang is a pitfall: "met" = present = not passed, the check finds it absent in 3 -> 0 - 3/4
    assert logged["criteria/short/audit_gap"] == pytest.approx(0.25)
    assert logged["criteria/sun/audit_gap"] == pytest.approx(0.5)
    assert logged["criteria/zebra/audit_gap"] == pytest.approx(1.0)
    assert logged["criteria/bang/audit_gap"] == pytest.approx(-0.75)
    assert logged["audit/n"] == 16 and logged["audit/gap"] == pytest.approx((0.25 + 0.5 + 1.0 - 0.75) / 4)
    assert "criteria/kind/audit_gap" not in logged  # judged criteria have no check to audit them
    # the reward saw the checks, never the probes: kind is the only judged column
    assert reward.last_metrics["criteria/zebra/pass_rate"] == 0.0
    # TRL's completions table: one JSON cell per completion
    assert json.loads(extra["criteria"][0]) == {"bang": 1.0, "kind": 1.0, "short": 1.0, "sun": 1.0, "zebra": 0.0}
    assert json.loads(extra["audit"][1]) == {"bang": [0.0, 0.0], "short": [1.0, 0.0], "sun": [1.0, 0.0],
                                             "zebra": [1.0, 0.0]}


def test_endpoint_audit_is_another_judge_on_the_judged_criteria(tmp_path):
    logged = {}
    with Always(met=True) as lenient, Always(met=False) as strict:
        audit = Audit(1.0, "endpoint", judge_at(strict, tmp_path, "strict-judge"))
        reward = FocalReward({it.id: it for it in AUDITED}, "static", judge=judge_at(lenient, tmp_path), audit=audit)
        asyncio.run(reward(**BATCH, log_metric=logged.__setitem__))
        assert lenient.calls == 4 and strict.calls == 4  # kind, for the reward and for the audit
    assert logged["criteria/kind/audit_gap"] == 1.0 and logged["audit/gap"] == 1.0 and logged["audit/n"] == 4
    assert logged["audit/judge/calls"] == 4 and logged["judge/calls"] == 4
    assert not any(k.startswith("criteria/zebra/audit") for k in logged)


def test_no_audit_when_the_share_is_0_or_there_is_no_judge(tmp_path):
    with Always(met=True) as server:
        off = FocalReward({it.id: it for it in AUDITED}, "static", judge=judge_at(server, tmp_path),
                          audit=Audit(0.0, "checks"))
        asyncio.run(off(**BATCH))
        assert server.calls == 4 and not any(k.startswith("audit/") for k in off.last_metrics)
    checks_only = FocalReward({it.id: it for it in ITEMS}, "static", audit=Audit(1.0, "checks"))
    assert checks_only.audit is None


def test_audit_settings_are_checked():
    with pytest.raises(ValueError, match="audit.source 'endpoint' needs audit.base_url"):
        params_from_dict({"audit": {"source": "endpoint"}})
    with pytest.raises(ValueError, match="audit.share must be in"):
        params_from_dict({"audit": {"share": 1.5}})
    with pytest.raises(ValueError, match="needs an audit judge"):
        Audit(0.5, "endpoint")


def test_a_short_run_with_a_judge_that_always_says_met_shows_the_gap(tmp_path):
    """The acceptance test: 3 GRPO steps; the gap of a checked criterion the policy fails is logged, drawn and
    reported; the completions table has each completion's verdicts."""
    from stages.train import write_audit_report
    from focal.evaluation.plots import read_series
    from focal.training.trainer import train_policy

    cfg = Train(max_steps=3, prompts_per_step=2, num_generations=4, max_completion_length=8, learning_rate=1e-2,
                log_completions=True)
    with Always(met=True) as server:
        reward = FocalReward({it.id: it for it in AUDITED}, "focal", judge=judge_at(server, tmp_path),
                             audit=Audit(0.5, "checks"))
        trainer = train_policy(str(make_tiny_model(tmp_path / "tiny")), AUDITED, reward, cfg, tmp_path / "w", seed=0,
                               log_dir=tmp_path / "log")
    logs = [e for e in trainer.state.log_history if "audit/n" in e]
    assert len(logs) == 3 and all(e["audit/n"] > 0 for e in logs)
    zebra = [e["criteria/zebra/audit_gap"] for e in logs if "criteria/zebra/audit_gap" in e]
    assert zebra and all(g == 1.0 for g in zebra)  # the judge passes it, the check never does
    series = read_series(tmp_path / "log", "audit_gap")
    assert list(series["zebra"].values) == zebra
    grows = write_audit_report(tmp_path / "log", tmp_path / "report", max_growth=0.1)
    assert "zebra" not in grows  # 1.0 from the start: large, but not growing
    assert (tmp_path / "report" / "audit_gap.png").stat().st_size > 1000
    assert "| zebra | 3 | +1.000 | +1.000 | +0.000 | no |" in (tmp_path / "report" / "report.md").read_text()
    table = pd.read_parquet(tmp_path / "w" / "completions" / "completions_00003.parquet")
    assert {"criteria", "audit"} <= set(table.columns) and len(table) == 8
    assert all(json.loads(c)["zebra"] == 0.0 for c in table["criteria"])


def test_report_flags_a_growing_gap_and_leaves_short_series_blank():
    from focal.rewards.audit import report

    text = report({"a": [0.1, 0.2], "b": [0.0, 0.0, 0.5, 0.6, 0.9, 1.0]}, max_growth=0.1)
    assert "| a | 2 | - | - | - | no |" in text  # 2 steps: no thirds
    assert "| b | 6 | +0.000 | +0.950 | +0.950 | **GROWS** |" in text  # (0.9 + 1.0) / 2 - (0 + 0) / 2
    assert "grows on b**" in text
