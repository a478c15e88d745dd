"""Sample G completions for every prompt of a split from the policy.

    python -m stages.rollouts [--params params.yaml]

Reads the prompt table of `rollouts.split` and `rollouts.*`; writes `paths.rollouts`
(prompt_id, rollout_id, policy, sample_index, completion, prompt_tokens,
completion_tokens, finish_reason, seed). Backend `vllm` serves the policy with
focal.serve (or uses serve.base_url); `transformers` generates in-process.
Resumable: finished prompts are cached in `paths.rollout_cache`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from focal.cache import Cache
from focal.config import Params, run_stage
from focal.io import write_parquet
from focal.models import fingerprint
from focal.rollouts import OpenAIBackend, Sampling, TransformersBackend, sample_rollouts
from focal.rubric import item_from_row
from focal.serve import serving


def sampling_of(params: Params) -> Sampling:
    r = params.rollouts
    return Sampling(r.num_generations, r.temperature, r.top_p, r.max_tokens, params.base.seed)


def run(params: Params) -> list[Path]:
    r = params.rollouts
    table = params.paths.train_prompts if r.split == "train" else params.paths.eval_prompts
    rows = pd.read_parquet(table)
    items = [item_from_row(row) for _, row in rows.iterrows()][: r.max_prompts or None]
    policy_dir = r.policy or params.paths.base_model
    policy = f"{params.serve.served_model_name}@{params.serve.base_url}" if params.serve.base_url else fingerprint(policy_dir)
    cache = Cache(params.paths.rollout_cache)
    try:
        if r.backend == "transformers":
            df = sample_rollouts(items, TransformersBackend(policy_dir), sampling_of(params), policy, cache,
                                 progress=True)
        else:
            with serving(params.serve, policy_dir) as base_url:
                backend = OpenAIBackend(base_url, params.serve.served_model_name, r)
                df = sample_rollouts(items, backend, sampling_of(params), policy, cache, chunk=r.concurrency,
                                     progress=True)
    finally:
        cache.close()
    write_parquet(params.paths.rollouts, df)
    print(f"rollouts: {len(df)} completions for {len(items)} {r.split} prompts from {policy} "
          f"({df.completion_tokens.sum()} tokens)")
    return [Path(params.paths.rollouts)]


if __name__ == "__main__":
    run_stage(run, __doc__)
