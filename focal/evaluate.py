"""Evaluation of one policy's judged rollouts, and paired comparisons (METHOD.md, "Evaluation metrics").

    per_prompt = prompt_scores(judgments)              # HealthBench score of each rollout, mean per prompt
    summary = evaluate_judgments(judgments, seed=0)    # rubric score, strict completion, balance, failures
    diff = paired_difference(a_scores, b_scores)       # same prompts: mean difference, bootstrap interval

Every figure is defined once, in focal/metrics.py (the training logs use the same
functions); this module adds what only evaluation needs: the bootstrap std of the
clipped mean over prompts (as simple-evals does), spreads, failed-judgment counts
and paired differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from focal.metrics import pass_rates, prompt_means, response_scores, satisfaction_matrix, strict_rows


def response_score(weights, pitfall, r) -> float | None:
    """HealthBench's score of one response (weights > 0, pitfall flags, satisfactions r); None if no positive weight."""
    s = response_scores(np.asarray(r, float)[None, :], np.asarray(weights, float), np.asarray(pitfall, bool))[0]
    return None if np.isnan(s) else float(s)


def prompt_scores(judgments: pd.DataFrame) -> pd.Series:
    """Mean rollout score per prompt (prompts whose rubric has no positive weight are left out)."""
    m = satisfaction_matrix(judgments)
    return pd.Series(prompt_means(response_scores(m.r, m.w, m.pitfall), m.groups), dtype=float).sort_index()


def clipped_mean_and_std(values, n_bootstrap: int = 1000, seed: int = 0) -> tuple[float, float]:
    """HealthBench: the mean clipped to [0, 1], and the std of that over bootstrap resamples."""
    values = np.asarray(values, float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = [np.clip(rng.choice(values, len(values)).mean(), 0, 1) for _ in range(n_bootstrap)]
    return float(np.clip(values.mean(), 0, 1)), float(np.std(boots))


def failures(judgments: pd.DataFrame) -> dict:
    """Failed judgments: total, and per criterion key and per failure kind (the reason's first word)."""
    bad = judgments[judgments.score.isna()]
    kinds = bad.reason.fillna("").str.split(":", n=1).str[0] if "reason" in bad else pd.Series(dtype=str)
    return {"failed_judgments": int(len(bad)),
            "failed_by_key": {str(k): int(v) for k, v in bad.key.value_counts().sort_index().items()},
            "failed_by_kind": {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}}


def evaluate_judgments(judgments: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every evaluation metric of one policy on one benchmark."""
    m = satisfaction_matrix(judgments)
    scores = prompt_scores(judgments)
    mean, std = clipped_mean_and_std(scores.to_numpy(), n_bootstrap, seed)
    done = strict_rows(m.r)
    done = done[~np.isnan(done)]
    cats, keys = pass_rates(m.r, m.categories), pass_rates(m.r, m.keys)
    cats = {k: v for k, v in cats.items() if not np.isnan(v)}
    keys = {k: v for k, v in keys.items() if not np.isnan(v)}
    return {
        "rubric_score": mean, "rubric_score_std": std, "prompts": int(len(scores)),
        "strict_completion": float(done.mean()) if done.size else float("nan"),
        "min_category": min(cats.values()) if cats else float("nan"),
        "category_spread": (max(cats.values()) - min(cats.values())) if cats else float("nan"),
        "min_key": min(keys.values()) if keys else float("nan"),
        "key_spread": (max(keys.values()) - min(keys.values())) if keys else float("nan"),
        "category": cats, "key": keys, "judgments": int(len(judgments)),
        **failures(judgments),
    }


def paired_difference(a: pd.Series, b: pd.Series, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """b - a on the prompts both scored: mean difference and a 95% bootstrap interval over prompts.

    `missing` counts prompts scored for only one of the two (left out of the comparison)."""
    common = sorted(set(a.index) & set(b.index))
    missing = len(set(a.index) ^ set(b.index))
    d = (b.loc[common] - a.loc[common]).to_numpy(float)
    if d.size == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "prompts": 0, "missing": missing}
    rng = np.random.default_rng(seed)
    boots = [rng.choice(d, d.size).mean() for _ in range(n_bootstrap)]
    return {"diff": float(d.mean()), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5)), "prompts": int(d.size), "missing": missing}
