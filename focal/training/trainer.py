"""GRPO with a rubric reward (TRL), the aggregator chosen by name; checkpoints that resume.

    trainer = train_policy(policy, items, reward, cfg, work_dir, seed, log_dir)   # resumes if it can
    save_policy(trainer, "models/trained")

How this differs from plain GRPO (TRL's GRPOTrainer, with focal/training/grpo.py's reuse of the sampling pass, 5.):
1. One reward function, FocalReward, sees all P*G completions of a generation batch,
   judges each on its prompt's rubric and aggregates the whole batch at once.
2. The aggregator reweights criteria per group (Focal: toward unsaturated criteria;
   POW3R: toward contrastive ones; GDPO: normalises each criterion first); TRL then
   turns the scalar rewards into group-normalised advantages as usual.
3. Focal's state (the per-key moving average of satisfaction) persists across
   steps, seeded from the base policy's judged rollouts when they exist, and is
   saved beside every checkpoint (`focal_state.json`), so a resumed run continues
   with the state the interrupted one had.
4. CPU defaults: float32, no bf16, no gradient checkpointing, one thread, short
   completions, few steps; `beta = 0` (no reference model) unless train.kl_beta > 0.
5. With steps_per_generation > 1 the old policy's log-probs come from the sampling pass
   (train.sampling_logps) rather than a second forward pass over the generation batch,
   and with LoRA on the top layers only the loss's forward pass starts from the frozen
   layers' output kept from sampling (train.trunk_cache). Both reach into TRL's private API (focal/training/grpo.py
   checks it when the trainer is built); with both off the trainer is TRL's own GRPOTrainer.

Checkpoints live in `work_dir` (one folder per run identity, see `run_key`): a run
killed mid-way and started again with the same identity resumes from the last
checkpoint that has Focal's state beside it; anything else starts fresh.

Under `accelerate launch` with several processes every process runs train_policy and
save_policy (both hold collectives: DeepSpeed ZeRO-3 gathers the weights to save), but
only the main process writes: the trained policy, the dvclive curves, Focal's state
beside a checkpoint (as TRL writes the checkpoint itself). `on_main` runs a stage's
other writes there and makes the others wait, so every process ends together.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from focal.core.atomic import atomic_dir, write_json
from focal.core.cache import content_key

STATE_FILE = "focal_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


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
        log_completions=cfg.log_completions,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, save_total_limit=2,
        steps_per_generation=cfg.steps_per_generation, activation_checkpointing=cfg.activation_checkpointing,
        scale_rewards=cfg.scale_rewards, dataloader_num_workers=0, use_vllm=cfg.use_vllm, **_vllm(cfg))


def _vllm(cfg) -> dict:
    """TRL's vLLM fields for train.use_vllm (none without it, so the default GRPOConfig keeps TRL's defaults)."""
    if not cfg.use_vllm:
        return {}
    url = {"vllm_server_base_url": cfg.vllm_server_base_url} if cfg.vllm_server_base_url else {}
    return {"vllm_mode": cfg.vllm_mode, **(url if cfg.vllm_mode == "server" else {})}


def lora_config(cfg, model):
    """peft's LoRA on every linear layer (train.lora_r > 0), of the top train.lora_layers transformer layers only
    when that is set; None for full fine-tuning."""
    if not cfg.lora_r:
        return None
    from peft import LoraConfig

    if not cfg.lora_layers:
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    n = model.config.num_hidden_layers
    if cfg.lora_layers > n:
        raise ValueError(f"train.lora_layers is {cfg.lora_layers} but the policy has {n} layers; "
                         f"set it to at most {n} (0 = every layer)")
    # peft takes a layer list only with module names: the linear layers inside the transformer blocks
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and ".layers." in name})
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=linear, task_type="CAUSAL_LM",
                      layers_to_transform=list(range(n - cfg.lora_layers, n)))


def build_trainer(policy_dir, items: list, reward, cfg, out_dir: str, seed: int, callbacks=()):
    """A GRPOTrainer on `policy_dir` (a folder or a loaded (model, tokenizer)) with `reward` as the only reward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from focal.training.grpo import FocalGRPOTrainer

    torch.manual_seed(seed)
    if isinstance(policy_dir, (str, Path)):
        tok = AutoTokenizer.from_pretrained(policy_dir)
        model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    else:
        model, tok = policy_dir
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    reuse = {k: v for k, v in (("sampling_logps", cfg.sampling_logps), ("trunk_cache", cfg.trunk_cache)) if v}
    trainer = FocalGRPOTrainer if reuse else GRPOTrainer  # both off: TRL as it is (focal/training/grpo.py's docstring)
    return trainer(model=model, reward_funcs=[reward], args=grpo_config(cfg, out_dir, seed),
                   train_dataset=prompt_dataset(items), processing_class=tok, peft_config=lora_config(cfg, model),
                   callbacks=list(callbacks), **reuse)


def dry_run_overrides(cfg):
    """(cfg, notes): what building a GPU profile on a machine without CUDA must change (only a dry run applies it),
    each change said in words; with CUDA nothing changes."""
    import dataclasses

    if torch.cuda.is_available():
        return cfg, []
    notes = []
    if cfg.use_vllm:
        notes.append(f"train.use_vllm true -> false: vLLM generation ({cfg.vllm_mode} mode) needs CUDA and the vllm "
                     "package; this build generates with transformers")
        cfg = dataclasses.replace(cfg, use_vllm=False)
    return cfg, notes


def describe(trainer) -> dict:
    """What a built GRPOTrainer will run with: processes, precision, DeepSpeed, batch sizes, generation."""
    acc, args = trainer.accelerator, trainer.args
    ds = acc.state.deepspeed_plugin
    if ds is not None:  # DeepSpeed validates its config only at the first step: check the ZeRO section now
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        try:
            DeepSpeedZeroConfig(**ds.deepspeed_config["zero_optimization"])
        except ValueError as e:
            raise ValueError(f"the DeepSpeed ZeRO settings from the accelerate config are invalid "
                             f"({ds.deepspeed_config['zero_optimization']}): {e}; fix deepspeed_config in the "
                             "--config_file given to accelerate launch") from None
    world, accum = acc.num_processes, args.gradient_accumulation_steps
    per_process = args.per_device_train_batch_size
    return {
        "world_size": world, "distributed_type": str(acc.distributed_type.value), "device": str(acc.device),
        "mixed_precision": str(acc.mixed_precision), "bf16": bool(args.bf16),
        "deepspeed_zero_stage": ds.zero_stage if ds is not None else None,
        "deepspeed_offload": ({"optimizer": ds.offload_optimizer_device, "params": ds.offload_param_device}
                              if ds is not None else None),
        "deepspeed_train_batch_size": ds.deepspeed_config.get("train_batch_size") if ds is not None else None,
        "completions_per_process": per_process, "gradient_accumulation_steps": accum,
        "effective_batch": per_process * world * accum, "num_generations": args.num_generations,
        "prompts_per_optimizer_step": per_process * world * accum // args.num_generations,
        "generation_batch_size": args.generation_batch_size, "use_vllm": bool(args.use_vllm),
        "vllm_mode": args.vllm_mode if args.use_vllm else None,
        "activation_checkpointing": bool(args.activation_checkpointing), "lora": hasattr(trainer.model, "peft_config"),
        "max_steps": args.max_steps,
    }


def run_key(*identity) -> str:
    """A short name for a training run from everything that defines it (policy fingerprint, prompts, params, seed)."""
    return content_key("train-run", *identity)[:16]


def last_checkpoint(work_dir) -> Path | None:
    """The newest checkpoint-N in work_dir that has Focal's state beside it (else None)."""
    found = []
    for p in Path(work_dir).glob("checkpoint-*"):
        m = _CKPT.match(p.name)
        if m and (p / STATE_FILE).exists() and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


class _Callback:
    """A TrainerCallback with every event a no-op (transformers calls them all)."""

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def save_beside_checkpoint(args, state, name: str, data) -> None:
    """`data` as JSON file `name` in the checkpoint TRL just saved, by the process that wrote it (the main one)."""
    folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
    if args.should_save and folder.exists():
        write_json(folder / name, data)


class SaveFocalState(_Callback):
    """Writes the reward's state (Focal's moving average, its step) beside each checkpoint TRL saves."""

    def __init__(self, reward):
        self.reward = reward

    def on_save(self, args, state, control, **kwargs):
        save_beside_checkpoint(args, state, STATE_FILE, self.reward.checkpoint())


class LiveLog(_Callback):
    """Every number TRL logs (rewards, loss, criteria/*, rubric/*, judge/*) as a dvclive step."""

    def __init__(self, live):
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.live.step = state.global_step
        for name, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                self.live.log_metric(name, float(value))
        self.live.make_summary()


class SignalGate(_Callback):
    """Warns when a reward call had no learning signal (every group's rewards equal) for `warn_after` calls in a
    row, and stops training after `max_flat` such calls (0 = never stop); `stopped` then says why."""

    def __init__(self, reward, max_flat: int = 0, warn_after: int = 3):
        self.reward, self.max_flat, self.warn_after = reward, max_flat, warn_after
        self.flat, self.seen_step, self.stopped = 0, reward.step, None

    def on_step_end(self, args, state, control, **kwargs):
        if self.reward.step == self.seen_step:  # no new generation batch this step (steps_per_generation > 1)
            return
        self.seen_step = self.reward.step
        m = self.reward.last_metrics
        self.flat = self.flat + 1 if m.get("rubric/zero_std_frac") == 1.0 else 0
        if self.flat < self.warn_after:
            return
        constant = sorted(k.split("/")[1] for k, v in m.items() if k.endswith("/judge_constant") and v == 1.0)
        why = (f"no learning signal for {self.flat} generation batches in a row: every group's rewards were equal "
               f"(rubric/zero_std_frac = 1)" + (f"; the judge gave one verdict to every rollout on: "
                                               f"{', '.join(constant)}" if constant else ""))
        if state.is_world_process_zero:  # every process sees the same gathered batch: one warning, not one each
            print(f"train: warning: {why}")
        if self.max_flat and self.flat >= self.max_flat:
            self.stopped = f"{why}; stopped by train.max_zero_std_steps = {self.max_flat}"
            control.should_training_stop = True


class StepTimer(_Callback):
    """Records the wall time of each optimizer step (for the aggregation overhead)."""

    def __init__(self):
        self.durations, self._t0 = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._t0)


class Elapsed(_Callback):
    """Training wall time across resumes: each checkpoint keeps the seconds spent up to it, and a run resumed in
    `work_dir` starts its clock from its checkpoint's figure (work lost after the last checkpoint is not counted)."""

    FILE = "elapsed_seconds.json"

    def __init__(self, work_dir):
        ckpt = last_checkpoint(work_dir)
        self.before = json.loads((ckpt / self.FILE).read_text())["seconds"] if ckpt and (ckpt / self.FILE).exists() else 0.0
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def on_save(self, args, state, control, **kwargs):
        save_beside_checkpoint(args, state, self.FILE, {"seconds": self.seconds()})


def on_main(state, fn, *args):
    """fn(*args) on the main process only (the one that writes outputs), then a barrier, so every process leaves
    together; fn's result on the main process, None on the others. `state`: an Accelerator or PartialState."""
    out = fn(*args) if state.is_main_process else None
    state.wait_for_everyone()
    return out


@contextmanager
def shared_atomic_dir(state, path):
    """atomic_dir(path) on the main process, the same temp folder named to every process (a collective save is
    called on all of them with one folder; only the main process writes there); it replaces `path` once every
    process is done, and every process leaves after that."""
    from accelerate.utils import broadcast_object_list

    if state.is_main_process:
        with atomic_dir(path) as tmp:
            broadcast_object_list([str(tmp)])
            yield tmp
            state.wait_for_everyone()  # every process is done with tmp
    else:
        tmp = Path(broadcast_object_list([None])[0])
        yield tmp
        state.wait_for_everyone()
    state.wait_for_everyone()  # `path` is in place, for every process


def judge_server_check(judge_base_url: str, needed: bool, processes: int) -> None:
    """Refuse a local judge server under several training processes: each process would start its own.

    One server started by the main process for all would need its URL sent to the others, would sit on a
    training GPU (the one the main process trains on) and listen on 127.0.0.1 only (no other node reaches it);
    a judge server of its own, at judge.base_url, has none of these problems (docs/scaling.md)."""
    if needed and not judge_base_url and processes > 1:
        raise ValueError(f"judge.base_url is empty and training runs on {processes} processes: each would start "
                         "its own local judge server; start one judge server (e.g. `vllm serve <judge model> "
                         "--served-model-name judge`) and set judge.base_url to its .../v1 URL (docs/scaling.md)")


def saveable_check(trainer) -> None:
    """Refuse, before the first step, a run whose policy save_policy could not write as a plain HF folder."""
    ds = trainer.accelerator.state.deepspeed_plugin
    if ds is None or ds.zero_stage != 3:
        return
    if hasattr(trainer.model, "merge_and_unload"):
        raise ValueError("LoRA (train.lora_r > 0) with DeepSpeed ZeRO-3 is not supported: merging the adapter "
                         "needs the whole base weights on one process; use deepspeed_zero2.yaml or multi_gpu.yaml "
                         "for LoRA (its optimizer state is small), or train.lora_r: 0")
    if not ds.deepspeed_config["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save"):
        raise ValueError("DeepSpeed ZeRO-3 without zero3_save_16bit_model: true cannot save the trained policy as "
                         "a plain HF folder (only sharded DeepSpeed checkpoints); set it in deepspeed_config of the "
                         "--config_file given to accelerate launch")


def train_policy(policy, items: list, reward, cfg, work_dir, seed: int, log_dir=None, callbacks=()):
    """Train (resuming from the last checkpoint in work_dir, if any); returns the trainer. Every process calls it.

    log_dir: a dvclive folder for the curves (continued, not restarted, on resume), written by the main process."""
    work_dir = Path(work_dir)
    resume = last_checkpoint(work_dir)
    if resume is not None:
        reward.restore(json.loads((resume / STATE_FILE).read_text()))
        print(f"train: resuming from {resume} (step {reward.step} of the reward)")
    trainer = build_trainer(policy, items, reward, cfg, str(work_dir), seed,
                            callbacks=[SaveFocalState(reward), *callbacks])
    saveable_check(trainer)
    live = None
    if log_dir is not None and trainer.accelerator.is_main_process:  # the main process logs TRL's global figures
        from dvclive import Live

        live = Live(dir=str(log_dir), resume=resume is not None, save_dvc_exp=False, dvcyaml=False)
        trainer.add_callback(LiveLog(live))
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if live is not None:
        live.end()
    return trainer


def save_policy(trainer, out_dir) -> None:
    """Save the trained policy as a plain HF folder (weights, config, tokenizer; LoRA merged), atomically, written
    by the main process. Every process calls it: under DeepSpeed ZeRO-3 trainer.save_model gathers the shards.

    LoRA is merged on the main process, whose weights are whole (DDP, ZeRO-2; saveable_check refuses LoRA with
    ZeRO-3); trainer.save_model would write the adapter alone. trainer.save_model's training_args.bin is dropped:
    a pickle naming the temp folder, it would make the folder's fingerprint differ from run to run."""
    acc = trainer.accelerator
    with shared_atomic_dir(acc, out_dir) as tmp:
        if not hasattr(trainer.model, "merge_and_unload"):
            trainer.save_model(str(tmp))
            if acc.is_main_process:
                (tmp / "training_args.bin").unlink(missing_ok=True)
        elif acc.is_main_process:
            trainer.model.merge_and_unload().save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
