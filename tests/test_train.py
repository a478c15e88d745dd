"""GRPO with FocalReward on a tiny random model (no download): parameters change, metrics are logged."""

import asyncio
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from focal.config import Train
from focal.reward import FocalReward
from focal.rubric import Check, Criterion, Item
from focal.train import build_trainer
from tiny import make_tiny_model

CRITERIA = (Criterion("short", "At most 5 words.", 3.0, "essential", check=Check("max_words", {"n": 5}), key="short"),
            Criterion("sun", "Mentions the sun.", 2.0, "important", check=Check("contains_any", {"words": ["sun"]}), key="sun"),
            Criterion("bang", "Uses an exclamation mark.", 2.0, "pitfall", pitfall=True,
                      check=Check("min_count", {"text": "!", "n": 1}), key="bang"))
ITEMS = [Item(f"p{i}", q, CRITERIA) for i, q in enumerate(["why is the sun green", "what is a good list",
                                                           "how can the cat sleep", "tips for the moon"])]


def test_reward_alone_matches_the_aggregator():
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="static")
    logged = {}
    out = asyncio.run(reward(prompts=["x"] * 2, completions=["the sun", "a b c d e f g !"], prompt_id=["p0", "p0"],
                             log_metric=lambda k, v: logged.__setitem__(k, v)))
    # rollout 1: short met (3), sun met (2), no bang (2) -> 1; rollout 2: 0 + 0 + 0 -> 0
    assert out == [1.0, 0.0]
    assert logged["criteria/short/pass_rate"] == 0.5 and logged["judge/calls"] == 0
    with pytest.raises(ValueError, match="valid aggregators"):
        FocalReward({}, aggregator="focla")


def test_grpo_steps_with_focal_reward_change_parameters_and_log_metrics(tmp_path):
    folder = make_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="focal", gamma=2.0)
    cfg = Train(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=8, learning_rate=1e-2)
    trainer = build_trainer((model, tok), ITEMS, reward, cfg, str(tmp_path / "out"), seed=0)
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "no parameter changed"
    logs = {k for entry in trainer.state.log_history for k in entry}
    for name in ("criteria/short/weight", "criteria/short/saturation", "criteria/sun/pass_rate",
                 "rubric/score", "rubric/noncontrastive_frac", "rubric/strict_completion", "judge/calls",
                 "train/aggregate_s", "rewards/rubric_focal/mean"):
        assert name in logs, name
    assert reward.step == 2 and set(reward.state.m) == {"short", "sun", "bang"}
    assert all(math.isfinite(t["aggregate_s"]) for t in reward.timings)


def test_reward_works_inside_a_running_event_loop():
    """A notebook has a running loop: the reward is awaited there, not asyncio.run inside it."""
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="focal")

    async def notebook_cell():
        return await reward(prompts=["x"] * 2, completions=["the sun", "a b"], prompt_id=["p0", "p0"])

    assert asyncio.run(notebook_cell()) == pytest.approx([1.0, 5 / 7], abs=0.3)
    assert reward.step == 1


def test_llm_judged_criteria_without_a_judge_need_checks_only():
    judged = Criterion("kind", "Is kind.", 1.0, "important", key="kind")
    items = {"p": Item("p", "q", (CRITERIA[0], judged))}
    with pytest.raises(ValueError, match="1 criteria have no check .*'kind'.*checks_only=True"):
        FocalReward(items)
    reward = FocalReward(items, checks_only=True)
    assert [r.criterion.id for r in reward.requests(["p"], ["a"])] == ["short"]
