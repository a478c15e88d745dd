"""Judge every rollout on every criterion of its prompt's rubric.

    python -m stages.judge [--params params.yaml]

Reads `paths.rollouts` and the prompt tables; writes `paths.judgments` (one row per
(rollout, criterion): prompt_id, rollout_id, criterion_id, key, category, weight,
pitfall, source, raw, score in [0, 1] or NaN, reason, cached, latency_s) and the
judge's counts to `paths.judge_stats`. Judgments are cached in `paths.judge_cache`:
a rerun, or a restart after a crash, calls the API only for what is missing. The
vLLM server is started only if something is left to ask.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from focal.config import Params, run_stage
from focal.io import write_json, write_parquet
from focal.judge import Request, judge_table
from focal.rubric import item_from_row, load_rubric_set


def load_items(params: Params) -> dict:
    """prompt_id -> Item, from both prompt tables."""
    frames = [pd.read_parquet(p) for p in (params.paths.train_prompts, params.paths.eval_prompts)]
    return {row["prompt_id"]: item_from_row(row) for df in frames for _, row in df.iterrows()}


def requests_for(rollouts: pd.DataFrame, items: dict, source: str) -> list[Request]:
    """One request per (rollout, criterion), in table order."""
    missing = sorted(set(rollouts.prompt_id) - set(items))
    if missing:
        raise ValueError(f"{source}: prompt_id {missing[0]!r} (and {len(missing) - 1} more) is in no prompt table; "
                         "rerun the prepare stage or regenerate the rollouts")
    return [Request(items[r.prompt_id], c, r.completion, r.rollout_id)
            for r in rollouts.itertuples() for c in items[r.prompt_id].criteria]


def run(params: Params) -> list[Path]:
    rollouts = pd.read_parquet(params.paths.rollouts)
    requests = requests_for(rollouts, load_items(params), params.paths.rollouts)
    template = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set).judge_template
    df, stats = judge_table(params, requests, template)
    write_parquet(params.paths.judgments, df)
    m = stats.metrics()
    write_json(params.paths.judge_stats, m)
    print(f"judge: {len(df)} judgments ({m['judge/checks']} by checks), {m['judge/calls']} API calls, "
          f"{m['judge/cache_hits']} cache hits, {m['judge/failures']} failures")
    return [Path(params.paths.judgments), Path(params.paths.judge_stats)]


if __name__ == "__main__":
    run_stage(run, __doc__)
