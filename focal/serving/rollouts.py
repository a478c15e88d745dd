"""Sample G completions per prompt from a policy, through one small backend protocol.

    backend = OpenAIBackend(base_url, model, params.rollouts)     # vLLM server (or any OpenAI endpoint)
    backend = TransformersBackend("models/base")                  # in-process generate, the reference
    df = sample_rollouts(items, backend, sampling, policy_id, cache)

A backend has `sample(chats, sampling) -> [[Completion] * n] per chat`. The chat
template is applied by the server (OpenAI backend) or by the tokenizer
(transformers backend). Results are cached per prompt under a key of (policy,
chat, sampling), committed after each chunk of prompts: a rerun after a crash
samples only what is missing. rollout_id is derived from the policy, prompt,
seed, sample index and the completion text.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from focal.core.cache import Cache, content_key
from focal.serving.client import Breaker, CallsFailed, EndpointDown, failure_kind, make_client, scrub, with_retries

COLUMNS = ["prompt_id", "rollout_id", "policy", "sample_index", "completion", "prompt_tokens",
           "completion_tokens", "finish_reason", "seed"]


@dataclass(frozen=True)
class Sampling:
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 96
    seed: int = 0


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Backend(Protocol):
    def sample(self, chats: list[list[dict]], sampling: Sampling) -> list[list[Completion]]: ...


class OpenAIBackend:
    """Chat completions with n=G from an OpenAI-compatible server (vLLM); bounded concurrency and retries."""

    def __init__(self, base_url: str, model: str, cfg, param: str = "serve.base_url"):
        self.base_url, self.model, self.cfg, self.param = base_url, model, cfg, param

    async def _one(self, client, slot, breaker, chat, s: Sampling) -> list[Completion]:
        try:
            resp = await with_retries(lambda: client.chat.completions.create(
                model=self.model, messages=chat, n=s.n, temperature=s.temperature, top_p=s.top_p,
                max_tokens=s.max_tokens, seed=s.seed), self.cfg, slot=slot, breaker=breaker)
        except EndpointDown:
            raise
        except Exception as e:  # noqa: BLE001 - a rollout cannot be a missing value: stop with one line
            kind, transient = failure_kind(e)
            raise CallsFailed(f"{self.param} {self.base_url}: sampling failed after {self.cfg.max_retries} retries "
                              f"({kind}: {scrub(str(e), self.cfg.api_key_env)[:200]})", transient) from None
        if len(resp.choices) != s.n:
            raise RuntimeError(f"the server returned {len(resp.choices)} completions, asked for n={s.n}")
        per = (resp.usage.completion_tokens // s.n) if resp.usage else 0
        prompt_tokens = resp.usage.prompt_tokens if resp.usage else 0
        choices = sorted(resp.choices, key=lambda ch: ch.index)
        return [Completion(scrub(ch.message.content or "", self.cfg.api_key_env, shapes=False), prompt_tokens, per,
                           ch.finish_reason or "") for ch in choices]

    async def _all(self, chats, s):
        slot, breaker = asyncio.Semaphore(self.cfg.concurrency), Breaker(self.base_url, self.param)
        async with make_client(self.base_url, self.cfg.api_key_env, self.cfg.timeout_s) as client:
            tasks = [asyncio.ensure_future(self._one(client, slot, breaker, chat, s)) for chat in chats]
            try:
                return await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def sample(self, chats, sampling):
        return asyncio.run(self._all(chats, sampling))


class TransformersBackend:
    """In-process `generate` (for machines without vLLM, and as the reference vLLM is measured against).

    batch_prompts = 1 samples each prompt alone (the same prompt and seed give the same samples in any
    order); > 1 left-pads that many prompts into one `generate` (several times faster on a CPU; the
    samples then depend on the batch's make-up, so keep the item order fixed when comparing policies)."""

    def __init__(self, model_or_dir, tokenizer=None, batch_prompts: int = 1):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model_or_dir, (str, Path)):
            self.tok = AutoTokenizer.from_pretrained(model_or_dir)
            self.model = AutoModelForCausalLM.from_pretrained(model_or_dir, dtype=torch.float32)
        else:
            self.model, self.tok = model_or_dir, tokenizer
        self.model.eval()
        self.batch_prompts = max(1, int(batch_prompts))

    def sample(self, chats, s: Sampling):
        out = []
        for start in range(0, len(chats), self.batch_prompts):
            out += self._generate(chats[start:start + self.batch_prompts], s)
        return out

    def _generate(self, chats, s: Sampling) -> list[list[Completion]]:
        import torch

        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            ids = self.tok.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True, padding=True)
        finally:
            self.tok.padding_side = side
        torch.manual_seed(s.seed)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        with torch.no_grad():
            gen = self.model.generate(**ids, do_sample=True, temperature=s.temperature, top_p=s.top_p,
                                      max_new_tokens=s.max_tokens, num_return_sequences=s.n, pad_token_id=pad)
        n_prompt = ids["input_ids"].shape[1]
        prompt_lens = ids["attention_mask"].sum(1).tolist()
        eos = self.tok.eos_token_id
        out = []
        for c in range(len(chats)):
            comps = []
            for row in gen[c * s.n:(c + 1) * s.n, n_prompt:]:
                toks = row.tolist()
                length = toks.index(eos) + 1 if eos in toks else len(toks)
                reason = "stop" if eos in toks else "length"
                comps.append(Completion(self.tok.decode(toks[:length], skip_special_tokens=True), int(prompt_lens[c]),
                                        length, reason))
            out.append(comps)
        return out


def rollout_id(policy: str, prompt_id: str, seed: int, index: int, text: str) -> str:
    return content_key("rollout", policy, prompt_id, seed, index, text)[:16]


def sample_rollouts(items: list, backend: Backend, sampling: Sampling, policy: str, cache: Cache | None = None,
                    chunk: int = 8, progress: bool = False) -> pd.DataFrame:
    """G completions per item, cached per prompt; returns the rollouts table (COLUMNS), in item order."""
    keys = [content_key("rollouts", policy, it.chat(), asdict(sampling)) for it in items]
    done = {k: cache.get(k) for k in keys} if cache is not None else {}
    missing = [i for i, k in enumerate(keys) if done.get(k) is None]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(missing), desc="rollouts", unit="prompt", mininterval=5)
    for start in range(0, len(missing), chunk):
        idx = missing[start:start + chunk]
        results = backend.sample([items[i].chat() for i in idx], sampling)
        for i, comps in zip(idx, results):
            done[keys[i]] = [asdict(c) for c in comps]
            if cache is not None:
                cache.put(keys[i], done[keys[i]])
        if bar:
            bar.update(len(idx))
    if bar:
        bar.close()
    rows = []
    for item, key in zip(items, keys):
        for j, c in enumerate(done[key]):
            rows.append({"prompt_id": item.id, "rollout_id": rollout_id(policy, item.id, sampling.seed, j, c["text"]),
                         "policy": policy, "sample_index": j, "completion": c["text"],
                         "prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
                         "finish_reason": c["finish_reason"], "seed": sampling.seed})
    return pd.DataFrame(rows, columns=COLUMNS)


def sample_policy(items: list, policy_dir: str, sampling: Sampling, backend: str, client, serve, cache_path,
                  name: str | None = None) -> pd.DataFrame:
    """Rollouts of one policy with `backend` ('vllm': its endpoint from focal.serving.endpoints, called with the `client`
    settings of the stage: rollouts.* or evaluate.*; 'transformers': in-process), cached in cache_path.

    The rollouts' `policy` column, their ids and the cache key carry the policy's
    identity (its weights' fingerprint, or what a remote endpoint reports for `name`),
    so two policies never share rollouts."""
    from focal.serving.endpoints import local_identity, policy_endpoint

    cache = Cache(cache_path)
    try:
        if backend == "transformers":
            return sample_rollouts(items, TransformersBackend(policy_dir), sampling, local_identity(policy_dir), cache,
                                   progress=True)
        with policy_endpoint(serve, client, policy_dir, name) as ep:
            remote = OpenAIBackend(ep.base_url, ep.model, client, ep.param)
            return sample_rollouts(items, remote, sampling, ep.identity, cache, chunk=client.concurrency, progress=True)
    finally:
        cache.close()
