"""Judge every rollout on every criterion of its prompt's rubric.

    python -m stages.judge [--params params.yaml]

Reads `paths.rollouts` and the prompt tables; writes `paths.judgments` (one row per
(rollout, criterion): prompt_id, rollout_id, criterion_id, key, category, weight,
source, raw, score in [0, 1] or NaN, reason, cached, latency_s) and the judge's
counts to `paths.judge_stats`. Judgments are cached in `paths.judge_cache`: a rerun,
or a restart after a crash, calls the API only for what is missing. The vLLM
server is started only if something is left to ask.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pandas as pd

from focal.config import Params, run_stage
from focal.io import write_json, write_parquet
from focal.cache import Cache
from focal.judge import Judge, Request
from focal.rubric import item_from_row, load_rubric_set
from focal.serve import serving


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


def endpoint(params: Params, needed: bool):
    """Context yielding the judge's base URL: judge.base_url, else the local vLLM server (only if needed)."""
    if params.judge.base_url or not needed:
        return nullcontext(params.judge.base_url or "http://127.0.0.1:9/v1")
    return serving(params.serve, params.paths.base_model)


def run(params: Params) -> list[Path]:
    rollouts = pd.read_parquet(params.paths.rollouts)
    requests = requests_for(rollouts, load_items(params), params.paths.rollouts)
    template = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set).judge_template
    cache = Cache(params.paths.judge_cache)
    try:
        probe = Judge(params.judge, "", template, cache)
        with endpoint(params, probe.pending(requests) > 0) as base_url:
            judge = Judge(params.judge, base_url, template, cache)
            judgments = judge.run(requests, progress=True)
    finally:
        cache.close()
    df = pd.DataFrame([j.__dict__ for j in judgments])
    write_parquet(params.paths.judgments, df)
    stats = judge.stats.metrics()
    write_json(params.paths.judge_stats, stats)
    print(f"judge: {len(df)} judgments ({stats['judge/checks']} by checks), {stats['judge/calls']} API calls, "
          f"{stats['judge/cache_hits']} cache hits, {stats['judge/failures']} failures")
    return [Path(params.paths.judgments), Path(params.paths.judge_stats)]


if __name__ == "__main__":
    run_stage(run, __doc__)
