"""GRPO with FocalReward on a tiny random model (no download): parameters change, metrics are logged."""

import asyncio
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from focal.config import Train
from focal.rewards.reward import FocalReward
from focal.rubrics.sets import Check, Criterion, Item
from focal.training.trainer import build_trainer
from helpers import CRITERIA, ITEMS
from tiny import make_tiny_model


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


def test_lora_on_the_top_layers_only(tmp_path):
    folder = make_tiny_model(tmp_path / "tiny")  # 2 layers
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="static")
    cfg = Train(max_steps=1, prompts_per_step=2, num_generations=2, max_completion_length=4, lora_r=4, lora_layers=1)
    trainer = build_trainer(str(folder), ITEMS, reward, cfg, str(tmp_path / "out"), seed=0)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in trainer.model.named_parameters()
               if p.requires_grad and "lora_" in n}
    assert adapted == {"1"}  # the top layer only
    with pytest.raises(ValueError, match="train.lora_layers is 3 but the policy has 2 layers"):
        build_trainer(str(folder), ITEMS, reward, Train(lora_r=4, lora_layers=3), str(tmp_path / "out2"), seed=0)


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


def test_grpo_with_focal_reward_calling_a_loopback_judge(tmp_path):
    """LLM-judged criteria go to the judge (cached); a criterion whose judgment always fails is left out of the
    reward, which stays finite; a repeated batch is answered from the cache."""
    from fake_openai import FakeOpenAI
    from focal.config import Judge as JudgeConfig
    from focal.core.cache import Cache
    from focal.judging.judge import Judge
    from focal.serving.endpoints import Endpoint

    judged = Criterion("on_topic", "Stays on topic.", 2.0, "important", key="on_topic")
    broken = Criterion("broken", "Always fails [[fault:500:all]].", 2.0, "important", key="broken")
    items = [Item(it.id, it.prompt, it.criteria + (judged, broken)) for it in ITEMS]
    folder = make_tiny_model(tmp_path / "tiny")
    cfg = JudgeConfig(model="judge", max_retries=0, backoff_s=0.01, timeout_s=5.0, mode="per_criterion")
    with FakeOpenAI() as server:
        judge = Judge(cfg, Endpoint(server.base_url, "judge", "fake-judge"), cache=Cache(tmp_path / "j.sqlite"))
        reward = FocalReward({it.id: it for it in items}, aggregator="focal", judge=judge)
        train = Train(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=8, learning_rate=1e-2)
        trainer = build_trainer(str(folder), items, reward, train, str(tmp_path / "out"), seed=0)
        trainer.train()
        assert server.calls == judge.stats.calls > 0
        logs = [e for e in trainer.state.log_history if "judge/calls" in e]
        assert logs and all(e["judge/failures"] >= 1 for e in logs)  # the broken criterion, every step
        assert all(math.isfinite(e["reward"]) for e in logs)  # its failures never reach the reward
        assert "criteria/broken/pass_rate" not in {k for e in logs for k in e}  # nothing judged: no pass rate
        # the same batch twice: the second time only the failing criterion is asked again
        batch = dict(prompts=["x"] * 4, completions=["the sun", "a b", "sun sun", "why"], prompt_id=["p0"] * 4)
        first = asyncio.run(reward(**batch))
        calls = server.calls
        second = asyncio.run(reward(**batch))
    assert server.calls - calls == 4  # 4 rollouts x the broken criterion; on_topic came from the cache
    assert reward.last_metrics["judge/cache_hits"] == 4 and reward.last_metrics["judge/failures"] == 4
    assert len(first) == len(second) == 4 and all(r is not None for r in second)


class _Kill:
    """A TrainerCallback that 'kills' training at the start of a given step (after the checkpoint before it)."""

    def __init__(self, at: int):
        self.at = at

    def __getattr__(self, name):
        return lambda *a, **k: None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed")


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    from focal.training.trainer import last_checkpoint, train_policy

    folder = str(make_tiny_model(tmp_path / "tiny"))
    cfg = Train(max_steps=4, prompts_per_step=2, num_generations=4, max_completion_length=8, learning_rate=1e-2,
                save_steps=2)

    def reward():
        return FocalReward({it.id: it for it in ITEMS}, aggregator="focal", gamma=2.0)

    whole = reward()
    full = train_policy(folder, ITEMS, whole, cfg, tmp_path / "a", seed=0)
    first = reward()
    with pytest.raises(KeyboardInterrupt):
        train_policy(folder, ITEMS, first, cfg, tmp_path / "b", seed=0, callbacks=[_Kill(at=2)])
    assert last_checkpoint(tmp_path / "b").name == "checkpoint-2"
    resumed = reward()  # a new process: nothing in memory but what the checkpoint holds
    again = train_policy(folder, ITEMS, resumed, cfg, tmp_path / "b", seed=0)
    assert again.state.global_step == 4 and resumed.step == whole.step == 4
    assert resumed.state.m == pytest.approx(whole.state.m, abs=1e-12)  # Focal's state, as if never interrupted
    steps = [(e["step"], e["reward"], e["loss"]) for e in full.state.log_history if "reward" in e]
    assert [(e["step"], e["reward"], e["loss"]) for e in again.state.log_history if "reward" in e] == steps
    # the weights agree to optimizer noise (measured: at most 3e-3 after 4 steps at lr 1e-2 on this model)
    for (name, p), q in zip(full.model.named_parameters(), again.model.parameters()):
        assert torch.allclose(p, q, atol=1e-2), name


def test_no_learning_signal_warns_and_stops_training(tmp_path, capsys):
    """Every completion meets the only criterion: every group's rewards are equal, the gradient is 0."""
    from focal.training.trainer import SignalGate, train_policy

    always = Criterion("long_enough", "At most 1000 words.", 1.0, "important", check=Check("max_words", {"n": 1000}),
                       key="long_enough")
    items = [Item(it.id, it.prompt, (always,)) for it in ITEMS]
    reward = FocalReward({it.id: it for it in items}, aggregator="static")
    gate = SignalGate(reward, max_flat=3, warn_after=2)
    cfg = Train(max_steps=6, prompts_per_step=2, num_generations=4, max_completion_length=8)
    trainer = train_policy(str(make_tiny_model(tmp_path / "tiny")), items, reward, cfg, tmp_path / "w", seed=0,
                           callbacks=[gate])
    assert trainer.state.global_step == 3 and reward.last_metrics["rubric/zero_std_frac"] == 1.0
    assert gate.stopped and "no learning signal for 3 generation batches" in gate.stopped
    assert "warning: no learning signal for 2" in capsys.readouterr().out


def test_the_no_signal_warning_prints_on_the_main_process_only(capsys):
    """Under data parallelism every process sees the same gathered batch; only process 0 prints the warning."""
    from types import SimpleNamespace

    from focal.training.trainer import SignalGate

    for main, printed in ((False, False), (True, True)):
        reward = SimpleNamespace(step=0, last_metrics={"rubric/zero_std_frac": 1.0})
        gate = SignalGate(reward, max_flat=0, warn_after=1)
        reward.step = 1  # a new generation batch, with no signal
        gate.on_step_end(None, SimpleNamespace(is_world_process_zero=main), SimpleNamespace())
        assert ("no learning signal" in capsys.readouterr().out) == printed
