"""Sample G completions for every prompt of a split from the policy.

    python -m stages.rollouts [--params params.yaml]

Reads the prompt table of `rollouts.split` and `rollouts.*`; writes `paths.rollouts`
(prompt_id, rollout_id, policy, sample_index, completion, prompt_tokens,
completion_tokens, finish_reason, seed). Backend `vllm` serves the policy with
focal.serving.server (or uses serve.base_url); `transformers` generates in-process.
Resumable: finished prompts are cached in `paths.rollout_cache`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.core.atomic import write_parquet
from focal.core.stage import run_stage
from focal.rubrics.sets import item_from_row
from focal.serving.rollouts import Sampling, sample_policy

READS = ('base', 'rollouts', 'serve')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    r = params.rollouts
    table = params.paths.train_prompts if r.split == "train" else params.paths.eval_prompts
    items = [item_from_row(row) for _, row in pd.read_parquet(table).iterrows()][: r.max_prompts or None]
    sampling = Sampling(r.num_generations, r.temperature, r.top_p, r.max_tokens, params.base.seed)
    df = sample_policy(items, r.policy or params.paths.base_model, sampling, r.backend, r, params.serve,
                       params.paths.rollout_cache)
    write_parquet(params.paths.rollouts, df)
    print(f"rollouts: {len(df)} completions for {len(items)} {r.split} prompts from {df.policy.iloc[0]} "
          f"({df.completion_tokens.sum()} tokens)")
    return [Path(params.paths.rollouts)]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
