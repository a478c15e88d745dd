"""TRL's GRPOTrainer, reusing what the sampling pass computed: the old policy's log-probs (train.sampling_logps) and
the frozen layers' output (train.trunk_cache).

When one generation serves several optimizer steps (steps_per_generation > 1), GRPO's clipped ratio needs each
sampled token's log-prob under the policy that sampled it. TRL gets it with an extra forward pass over the whole
generation batch, right after generating and with the same weights. On a CPU that pass costs about as much as
the loss's own forward pass. The numbers already exist: each decoding step computes the logits of the token it
samples. This trainer keeps log_softmax(logits / temperature) of each sampled token while transformers
generates (what TRL's fused LM head computes, up to float rounding between the cached and the full pass) and
hands them over in place of the extra pass.

With LoRA on the top layers only (train.lora_layers), the layers below the lowest adapted one never change, so
their output for a sampled sequence is the same at sampling time and in every loss forward pass that follows.
This trainer keeps that output (the "trunk") while generating, and the loss's forward pass runs only the
adapted layers on top of it: with 8 of 30 layers adapted, about a third of the transformer's work.

Both apply only where they are the same quantity: transformers generation (not vLLM, whose log-probs TRL already
uses), no tools and no custom rollout function; the old log-probs only when TRL would compute them at all, the
trunk only for a decoder whose frozen layers come first (`model.model.layers`, `embed_tokens` frozen, one
attention type) and without DeepSpeed or FSDP. They agree with TRL's own passes up to float rounding between a
cached and a full pass (tests/test_grpo.py).

Both reach into TRL's private API: this trainer overrides four GRPOTrainer methods and reads some of its
attributes (TRL_API below, as trl 1.16 defines them). It checks them when it is built: a TRL whose methods or
attributes differ stops training at once with a ValueError naming the knobs to turn off; with both knobs off,
focal/training/trainer.py builds TRL's own GRPOTrainer and none of this is used (tests/test_trl_compat.py).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from trl import GRPOTrainer

KNOBS = ("train.sampling_logps", "train.trunk_cache")
TESTED_TRL = "trl>=1.16,<1.17"  # pyproject.toml's `train` extra says the same (tests/test_trl_compat.py)
# GRPOTrainer's methods this trainer overrides (each calls TRL's through super() with these parameters), exactly
# as trl 1.16 defines them, annotations left out
TRL_API = {
    "_generate_single_turn": "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)",
    "_generate_and_score_completions": "(self, inputs)",
    "_compute_loss": "(self, model, inputs)",
    "_get_per_token_logps_and_entropies": (
        "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
        "compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None, pixel_attention_mask=None, "
        "spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None, mm_token_type_ids=None, "
        "image_position_ids=None)"),
}
# what it reads of a built GRPOTrainer (self.<name>, self.args.<name>)
TRL_ATTRIBUTES = ("use_vllm", "tools", "rollout_func", "use_transformers_continuous_batching", "temperature",
                  "num_iterations", "accelerator", "model")
TRL_ARGS = ("steps_per_generation", "gradient_accumulation_steps")


def parameters(fn) -> str:
    """A function's parameters as written, without annotations: '(self, inputs, k=1)'."""
    sig = inspect.signature(fn)
    plain = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=plain, return_annotation=inspect.Signature.empty))


def api_changes(cls, expected: dict[str, str]) -> list[str]:
    """How `cls` differs from `expected` (method name -> parameters): one line per method gone or changed."""
    out = []
    for name, params in expected.items():
        fn = inspect.getattr_static(cls, name, None)
        if not callable(fn):
            out.append(f"{cls.__name__}.{name} is gone")
        elif (found := parameters(fn)) != params:
            out.append(f"{cls.__name__}.{name} takes {found}, not {params}")
    return out


def check_trl(changes: list[str], knobs=KNOBS) -> None:
    """ValueError naming the knobs to turn off, when TRL is not the one this trainer was written for."""
    if changes:
        import trl

        raise ValueError(f"TRL {trl.__version__} is not the TRL focal/training/grpo.py was written for ({TESTED_TRL}): "
                         f"{'; '.join(changes)}. {' and '.join(knobs)} {'rely' if len(knobs) > 1 else 'relies'} on it: set "
                         f"{' and '.join(f'{k}: false' for k in knobs)} in params.yaml (training then uses TRL's "
                         f"GRPOTrainer as it is), or install {TESTED_TRL}")


class SampledLogps:
    """A forward hook on the causal LM during `generate`: the log-prob of each token sampled.

    Each call after the first (prefill) feeds back the token the previous call's logits sampled, so that token's
    log-prob is read from the previous call's log_softmax; the last sampled token is read in `finish`. Memory: one
    (batch, vocab) row of log-probs at a time."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.columns: list[torch.Tensor] = []
        self.previous = None

    def __call__(self, module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self.previous is not None:
            self.columns.append(self.previous.gather(1, ids[:, -1:].to(self.previous.device)).squeeze(1))
        self.previous = F.log_softmax(output.logits[:, -1, :].float() / self.temperature, dim=-1)

    def finish(self, completions: list[list[int]]) -> list[list[float]]:
        """Per completion (token ids, cut after EOS, in batch order), the log-prob of each of its tokens."""
        n = len(self.columns) + 1  # forward calls = tokens generated
        last = torch.tensor([c[-1] if len(c) == n else 0 for c in completions], device=self.previous.device)
        table = torch.stack(self.columns + [self.previous.gather(1, last[:, None]).squeeze(1)], dim=1)
        return [table[i, :len(c)].tolist() for i, c in enumerate(completions)]


class Trunk:
    """A forward hook on the last frozen layer during `generate`: its output for every position of each sequence."""

    def __init__(self):
        self.pieces: list[torch.Tensor] = []

    def __call__(self, module, args, output):
        self.pieces.append((output[0] if isinstance(output, tuple) else output).detach())

    def finish(self) -> torch.Tensor:
        """(batch, prompt + completion positions, hidden): the prefill's positions, one per decoding call, and zeros
        for the last sampled token, which no call saw (causal attention: no earlier position depends on it, and
        TRL's loss reads no logit from it)."""
        last = torch.zeros_like(self.pieces[-1][:, -1:])
        return torch.cat(self.pieces + [last], dim=1)


class _Replay(torch.nn.Module):
    """Stands in for the input embedding during a loss forward pass: returns the cached trunk, chunk after chunk."""

    def __init__(self, trunk: torch.Tensor):
        super().__init__()
        self.trunk, self.at = trunk, 0

    def forward(self, input_ids):
        rows = self.trunk[self.at:self.at + input_ids.size(0)]
        if rows.shape[:2] != input_ids.shape:
            raise RuntimeError(f"trunk cache: rows {tuple(rows.shape[:2])} for input {tuple(input_ids.shape)}")
        self.at += input_ids.size(0)
        return rows


def frozen_trunk(model) -> int:
    """How many bottom decoder layers have no trainable parameter and can be cached (0 = none, or not this
    architecture): every trainable parameter must sit in those layers' successors, the final norm or the head."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(inner, "embed_tokens"):
        return 0
    if len(set(getattr(lm.config, "layer_types", None) or ["one"])) > 1:
        return 0  # per-layer attention types are looked up by position in the layer list
    lowest = len(layers)
    for name, p in lm.named_parameters():
        if p.requires_grad:
            if name.startswith("model.layers."):
                lowest = min(lowest, int(name.split(".")[2]))
            elif name.startswith("model.") and not name.startswith("model.norm."):
                return 0  # e.g. trainable embeddings: nothing below the layers is frozen
    return lowest if lowest < len(layers) else 0


class FocalGRPOTrainer(GRPOTrainer):
    """GRPOTrainer; with sampling_logps the old log-probs come from generation instead of a forward pass, with
    trunk_cache the loss forward pass starts from the frozen layers' output kept from generation."""

    def __init__(self, *args, sampling_logps: bool = False, trunk_cache: bool = False, **kwargs):
        knobs = [k for k, on in zip(KNOBS, (sampling_logps, trunk_cache)) if on] or KNOBS
        check_trl(api_changes(GRPOTrainer, TRL_API), knobs)
        super().__init__(*args, **kwargs)
        check_trl([f"a GRPOTrainer has no {name}" for name in TRL_ATTRIBUTES if not hasattr(self, name)]
                  + [f"GRPOConfig has no {name}" for name in TRL_ARGS if not hasattr(self.args, name)], knobs)
        self.sampling_logps = sampling_logps
        sharded = getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False)
        self.trunk_layers = frozen_trunk(self.accelerator.unwrap_model(self.model)) if trunk_cache and not sharded else 0
        self._stash = None  # the last generation's log-probs, for the old-log-prob call that follows it
        self._trunks = None  # the last generation's trunk, attached to its batch
        self._trunk = None  # the trunk of the batch whose loss is being computed

    def _needs_old_logps(self) -> bool:
        """TRL's own rule: the old log-probs are computed when a generation serves more than one optimizer step."""
        every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % every != 0

    def _plain_generation(self) -> bool:
        return (not self.use_vllm and not self.tools and self.rollout_func is None
                and not self.use_transformers_continuous_batching)

    def _lm(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        logps = self.sampling_logps and self._needs_old_logps() and self._plain_generation()
        trunk = Trunk() if self.trunk_layers and self._plain_generation() and self.model.training else None
        lm, handles = self._lm(), []
        if logps:
            hook = SampledLogps(self.temperature)
            handles.append(lm.register_forward_hook(hook, with_kwargs=True))
        if trunk is not None:
            handles.append(lm.model.layers[self.trunk_layers - 1].register_forward_hook(trunk))
        try:
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                                     num_generations, has_tool_images)
        finally:
            for h in handles:
                h.remove()
        self._stash = hook.finish(completion_ids) if logps and logprobs is None else None
        self._trunks = trunk.finish() if trunk is not None and trunk.pieces else None
        return completion_ids, logprobs

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        trunks, self._trunks = self._trunks, None
        width = out["prompt_ids"].size(1) + out["completion_ids"].size(1)
        if trunks is not None and trunks.shape[:2] == (out["prompt_ids"].size(0), width):
            out["trunk_hidden"] = trunks  # shuffled and split by TRL together with the batch's other tensors
        return out

    def _compute_loss(self, model, inputs):
        self._trunk = inputs.get("trunk_hidden")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._trunk = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, *args, **kwargs):
        stash, self._stash = self._stash, None  # only the call right after generating may use it
        if (stash is not None and model is self.model and not torch.is_grad_enabled() and not compute_entropy
                and len(stash) == input_ids.size(0)):
            out = torch.zeros(len(stash), logits_to_keep, device=input_ids.device)
            for i, row in enumerate(stash):
                out[i, :len(row)] = torch.tensor(row[:logits_to_keep])
            return out, None, None
        trunk, self._trunk = self._trunk, None  # only the loss's own forward pass may use it
        if trunk is None or not torch.is_grad_enabled() or trunk.shape[:2] != input_ids.shape:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, *args, **kwargs)
        inner = self._lm().model
        embed, layers = inner.embed_tokens, inner.layers
        inner.embed_tokens, inner.layers = _Replay(trunk), layers[self.trunk_layers:]
        try:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, *args, **kwargs)
        finally:
            inner.embed_tokens, inner.layers = embed, layers
