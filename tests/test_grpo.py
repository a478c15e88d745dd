"""focal/training/grpo.py: the old policy's log-probs taken from sampling equal TRL's forward pass, and replace it; the loss
pass from the cached trunk equals the full pass. These are what the reuses rely on TRL to do (tests/test_trl_compat.py
checks its methods' signatures): a failure after a TRL upgrade names the knob to turn off (OFF_*)."""

import pytest
import torch
from trl import GRPOTrainer

from focal.config import Train
from focal.rewards.reward import FocalReward
from focal.rubrics.sets import Check, Criterion, Item
from focal.training.grpo import SampledLogps
from focal.training.trainer import build_trainer
from tiny import make_tiny_model

SHORT = Criterion("short", "At most 5 words.", 1.0, "essential", check=Check("max_words", {"n": 5}), key="short")
ITEMS = [Item("p0", "why is the sun green", (SHORT,)), Item("p1", "tips for the moon", (SHORT,))]
OFF_LOGPS = "TRL no longer does what train.sampling_logps relies on: set train.sampling_logps: false (focal/training/grpo.py)"
OFF_TRUNK = "TRL no longer does what train.trunk_cache relies on: set train.trunk_cache: false (focal/training/grpo.py)"


def generation_batch(trainer):
    """One generation batch as TRL's sampler gives it: each prompt num_generations times in a row."""
    rows = [{"prompt": it.chat(), "prompt_id": it.id} for it in ITEMS]
    return [r for r in rows for _ in range(trainer.num_generations)]


def trainer_for(tmp_path, **train):
    folder = make_tiny_model(tmp_path / "tiny")
    cfg = Train(max_steps=2, prompts_per_step=1, num_generations=4, max_completion_length=12, **train)
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="static")
    return build_trainer(str(folder), ITEMS, reward, cfg, str(tmp_path / "out"), seed=0)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_sampled_logps_equal_trls_forward_pass(tmp_path, lora_r):
    trainer = trainer_for(tmp_path, steps_per_generation=2, temperature=0.7, lora_r=lora_r)
    out = trainer._generate_and_score_completions(generation_batch(trainer))
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():  # TRL's own computation, which the sampled log-probs stand in for
        ref, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask,
                                                                   out["completion_ids"].size(1))
    m = out["completion_mask"].bool()
    assert m.sum() > 8 and out["completion_mask"].sum(1).max() > 1  # several tokens, so an off-by-one shows
    assert torch.allclose(out["old_per_token_logps"][m], ref[m], atol=1e-4), \
        (OFF_LOGPS, (out["old_per_token_logps"][m] - ref[m]).abs().max())
    assert trainer._stash is None  # used once, never by a later call


@pytest.mark.parametrize("sampling_logps, forwards", [(True, 0), (False, 1)])
def test_the_extra_forward_pass_is_skipped_only_when_asked(tmp_path, monkeypatch, sampling_logps, forwards):
    trainer = trainer_for(tmp_path, steps_per_generation=2, sampling_logps=sampling_logps)
    calls = []
    original = GRPOTrainer._get_per_token_logps_and_entropies
    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies",
                        lambda self, *a, **k: calls.append(torch.is_grad_enabled()) or original(self, *a, **k))
    out = trainer._generate_and_score_completions(generation_batch(trainer))
    assert calls.count(False) == forwards, OFF_LOGPS  # TRL's rule for when it computes them (_needs_old_logps)
    assert out["old_per_token_logps"].shape == out["completion_ids"].shape


def test_on_policy_steps_keep_trls_path(tmp_path):
    # one generation per optimizer step: TRL computes no old log-probs, so nothing is stashed (a reference
    # model's call, with kl_beta > 0, must never receive the policy's sampled log-probs)
    trainer = trainer_for(tmp_path, steps_per_generation=1, kl_beta=0.1, lora_r=4)
    with torch.no_grad():  # an adapter that changes the policy, so policy and reference differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = trainer._generate_and_score_completions(generation_batch(trainer)[:4])
    assert trainer._stash is None and "old_per_token_logps" not in out
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad(), trainer.model.disable_adapter():
        ref, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask,
                                                                   out["completion_ids"].size(1))
        m = out["completion_mask"].bool()
    assert torch.allclose(out["ref_per_token_logps"][m], ref[m], atol=1e-5)


def test_the_hook_reads_each_sampled_token_from_the_step_that_sampled_it():
    # three decoding calls over a 3-token vocabulary; completions of 3 tokens and of 1 token (EOS first)
    class Out:
        def __init__(self, logits):
            self.logits = torch.tensor(logits).log()[:, None, :]  # log of probabilities: log_softmax gives them back

    hook = SampledLogps(temperature=1.0)
    hook(None, (), {"input_ids": torch.tensor([[9, 9], [9, 9]])}, Out([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    hook(None, (), {"input_ids": torch.tensor([[1], [2]])}, Out([[0.2, 0.6, 0.2], [0.3, 0.3, 0.4]]))
    hook(None, (), {"input_ids": torch.tensor([[0], [0]])}, Out([[0.1, 0.7, 0.2], [1 / 3, 1 / 3, 1 / 3]]))
    got = hook.finish([[1, 0, 2], [2]])
    want = [[0.25, 0.2, 0.2], [0.8]]
    assert [[round(torch.tensor(x).exp().item(), 6) for x in row] for row in got] == want


def test_the_step_profile_attributes_the_extra_forward_pass(tmp_path):
    from benchmarks.grpo_step import PARTS, profile

    folder = str(make_tiny_model(tmp_path / "tiny"))
    for sampling_logps in (True, False):
        cfg = Train(max_steps=2, prompts_per_step=1, num_generations=4, max_completion_length=8, aggregator="static",
                    use_judge=False, steps_per_generation=2, sampling_logps=sampling_logps)
        r = profile(cfg, ITEMS, folder, steps=2)
        assert set(r) == {"step", *PARTS} and all(r[k] >= 0 for k in PARTS if k != "rest")
        assert r["generation"] > 0 and r["loss forward"] > 0 and r["backward"] > 0
        assert (r["old log-probs forward"] > 0) == (not sampling_logps)
        assert abs(sum(r[k] for k in PARTS) - r["step"]) < 1e-9


def loss_logps(trainer, out, rows):
    """The loss's forward pass over some rows of a generation batch, as TRL's _compute_loss calls it."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)[rows]
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)[rows]
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, out["completion_ids"].size(1),
                                                             batch_size=2, compute_entropy=True)
    return logps


def test_the_loss_pass_from_the_cached_trunk_equals_the_full_pass(tmp_path):
    trainer = trainer_for(tmp_path, steps_per_generation=2, lora_r=4, lora_layers=1, temperature=0.7)
    assert trainer.trunk_layers == 1  # the tiny model's bottom layer is frozen
    with torch.no_grad():  # an adapter that changes the policy, so its gradient is not trivially zero
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = trainer._generate_and_score_completions(generation_batch(trainer))
    rows = torch.tensor([5, 0, 3])  # a shuffled chunk, as TRL's split hands it over
    bottom = []
    handle = trainer._lm().model.layers[0].register_forward_hook(lambda *a: bottom.append(1))
    trainer._trunk = out["trunk_hidden"][rows]
    cached = loss_logps(trainer, out, rows)
    assert not bottom and trainer._trunk is None  # the frozen layer did not run; the trunk was used once
    full = loss_logps(trainer, out, rows)
    handle.remove()
    assert bottom  # the plain pass runs it
    m = out["completion_mask"][rows].bool()
    assert torch.allclose(cached[m], full[m], atol=1e-4), (OFF_TRUNK, (cached[m] - full[m]).abs().max())
    lora = [p for n, p in trainer.model.named_parameters() if p.requires_grad]
    g_cached = torch.autograd.grad(cached[m].sum(), lora)
    g_full = torch.autograd.grad(full[m].sum(), lora)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_cached, g_full))
    assert len(trainer._lm().model.layers) == 2 and not hasattr(trainer._lm().model.embed_tokens, "trunk")


def test_no_trunk_where_nothing_below_the_adapters_is_frozen(tmp_path):
    assert trainer_for(tmp_path / "a", lora_r=4).trunk_layers == 0  # LoRA on every layer
    assert trainer_for(tmp_path / "b").trunk_layers == 0  # full fine-tuning
    assert trainer_for(tmp_path / "c", lora_r=4, lora_layers=1, trunk_cache=False).trunk_layers == 0


def test_training_uses_the_trunk_in_every_loss_pass(tmp_path):
    trainer = trainer_for(tmp_path, steps_per_generation=2, lora_r=4, lora_layers=1)
    used = []
    original = trainer._get_per_token_logps_and_entropies

    def spy(*a, **k):
        if torch.is_grad_enabled():
            used.append(trainer._trunk is not None)
        return original(*a, **k)

    trainer._get_per_token_logps_and_entropies = spy
    trainer.train()
    # both steps' loss passes started from the trunk (one generation for two steps): it travels with its rows
    # through TRL's shuffle and split of the generation batch
    assert used == [True, True], OFF_TRUNK
