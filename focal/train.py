"""GRPO with a rubric reward (TRL), the aggregator chosen by name.

    trainer = build_trainer(policy_dir, items, reward, cfg, out_dir, seed, callbacks)
    trainer.train()

How this differs from plain GRPO (TRL's GRPOTrainer is used unchanged):
1. One reward function, FocalReward, sees all P*G completions of a generation batch,
   judges each on its prompt's rubric and aggregates the whole batch at once.
2. The aggregator reweights criteria per group (Focal: toward unsaturated criteria;
   POW3R: toward contrastive ones; GDPO: normalises each criterion first); TRL then
   turns the scalar rewards into group-normalised advantages as usual.
3. Focal's state (the per-key moving average of satisfaction) persists across
   steps, seeded from the base policy's judged rollouts when they exist.
4. CPU defaults: float32, no bf16, no gradient checkpointing, one thread, short
   completions, few steps; `beta = 0` (no reference model) unless train.kl_beta > 0.
"""

from __future__ import annotations

import torch


def prompt_dataset(items: list):
    """A conversational dataset: `prompt` (chat messages) and `prompt_id` (for the rubric lookup)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": it.chat(), "prompt_id": it.id} for it in items])


def grpo_config(cfg, out_dir: str, seed: int):
    """TRL's GRPOConfig from the train section; one prompt group = num_generations completions."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=out_dir, use_cpu=not torch.cuda.is_available(), bf16=cfg.bf16 and torch.cuda.is_available(),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.kl_beta,
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, seed=seed, logging_steps=1, report_to="none",
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        activation_checkpointing=False, scale_rewards=cfg.scale_rewards, dataloader_num_workers=0,
        use_vllm=cfg.use_vllm, **({"vllm_mode": "server", "vllm_server_base_url": cfg.vllm_server_base_url}
                                   if cfg.use_vllm else {}))


def lora_config(cfg):
    if not cfg.lora_r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")


def build_trainer(policy_dir, items: list, reward, cfg, out_dir: str, seed: int, callbacks=()):
    """A GRPOTrainer on `policy_dir` (a folder or a loaded model) with `reward` as the only reward function."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    torch.manual_seed(seed)
    if isinstance(policy_dir, str):
        tok = AutoTokenizer.from_pretrained(policy_dir)
        model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    else:
        model, tok = policy_dir
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return GRPOTrainer(model=model, reward_funcs=[reward], args=grpo_config(cfg, out_dir, seed),
                       train_dataset=prompt_dataset(items), processing_class=tok, peft_config=lora_config(cfg),
                       callbacks=list(callbacks))


def save_policy(trainer, out_dir) -> None:
    """Save the trained policy as a plain HF folder (LoRA merged), atomically."""
    from focal.io import atomic_dir

    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        trainer.processing_class.save_pretrained(tmp)


class StepTimer:
    """A TrainerCallback recording the wall time of each optimizer step (for the aggregation overhead)."""

    def __init__(self):
        import time

        self.clock, self.durations, self._t0 = time.perf_counter, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(self.clock() - self._t0)

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)
