"""Evaluation metrics over judged rollouts (METHOD.md, "Evaluation metrics"), pure functions.

    per_prompt = prompt_scores(judgments)              # HealthBench score of each rollout, mean per prompt
    summary = evaluate_judgments(judgments, seed=0)    # rubric score, strict completion, balance
    diff = paired_difference(a_scores, b_scores)       # same prompts: mean difference, bootstrap interval

- rubric score (HealthBench's grader formula): for one response,
  (sum of the weights of met positive criteria - sum of the weights of present
  pitfalls) / (sum of positive weights); a rubric without positive weight has no
  score. Likert criteria count w * r. Per prompt: the mean over its rollouts. The
  reported score is the mean over prompts clipped to [0, 1], with the std of that
  clipped mean over bootstrap resamples of the prompts (as simple-evals does).
- strict completion: share of rollouts meeting every positive criterion with no pitfall present.
- balance: pass rate per category and per criterion key, their minimum and spread (max - min).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from focal.aggregate import MET


def response_score(weights, pitfall, r) -> float | None:
    """HealthBench's score of one response from its criteria (weights > 0, pitfall flags, satisfactions r)."""
    w, pit, r = np.asarray(weights, float), np.asarray(pitfall, bool), np.asarray(r, float)
    judged = ~np.isnan(r)
    total = w[~pit & judged].sum()  # possible points (a failed judgment is left out, never scored 0)
    if total <= 0:
        return None
    gained = (w * np.nan_to_num(r))[~pit & judged].sum()
    lost = (w * (1 - np.nan_to_num(r)))[pit & judged].sum()  # a pitfall's r = 1 - present
    return float((gained - lost) / total)


def rollout_table(judgments: pd.DataFrame) -> pd.DataFrame:
    """One row per rollout: prompt_id, score (HealthBench formula), strict (bool)."""
    rows = []
    for (pid, rid), g in judgments.groupby(["prompt_id", "rollout_id"], sort=False):
        r = g.score.to_numpy(float)
        pit = g.pitfall.to_numpy(bool)
        judged = ~np.isnan(r)
        strict = bool(judged.any() and (r[judged] >= MET).all())
        rows.append({"prompt_id": pid, "rollout_id": rid, "score": response_score(g.weight, pit, r), "strict": strict})
    return pd.DataFrame(rows, columns=["prompt_id", "rollout_id", "score", "strict"])


def prompt_scores(judgments: pd.DataFrame) -> pd.Series:
    """Mean rollout score per prompt (prompts whose rubric has no positive weight are left out)."""
    t = rollout_table(judgments).dropna(subset=["score"])
    return t.groupby("prompt_id", sort=True).score.mean()


def clipped_mean_and_std(values, n_bootstrap: int = 1000, seed: int = 0) -> tuple[float, float]:
    """HealthBench: the mean clipped to [0, 1], and the std of that over bootstrap resamples."""
    values = np.asarray(values, float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = [np.clip(rng.choice(values, len(values)).mean(), 0, 1) for _ in range(n_bootstrap)]
    return float(np.clip(values.mean(), 0, 1)), float(np.std(boots))


def pass_rates(judgments: pd.DataFrame, by: str) -> dict[str, float]:
    """Share of judged (rollout, criterion) pairs that are met, per category or key."""
    judged = judgments.dropna(subset=["score"])
    return {str(k): float((g.score >= MET).mean()) for k, g in judged.groupby(by, sort=True)}


def evaluate_judgments(judgments: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every evaluation metric of one policy on one benchmark."""
    scores = prompt_scores(judgments)
    mean, std = clipped_mean_and_std(scores.to_numpy(), n_bootstrap, seed)
    t = rollout_table(judgments)
    cats, keys = pass_rates(judgments, "category"), pass_rates(judgments, "key")
    return {
        "rubric_score": mean, "rubric_score_std": std, "prompts": int(len(scores)),
        "strict_completion": float(t.strict.mean()) if len(t) else float("nan"),
        "min_category": min(cats.values()) if cats else float("nan"),
        "category_spread": (max(cats.values()) - min(cats.values())) if cats else float("nan"),
        "min_key": min(keys.values()) if keys else float("nan"),
        "key_spread": (max(keys.values()) - min(keys.values())) if keys else float("nan"),
        "category": cats, "key": keys,
        "failed_judgments": int(judgments.score.isna().sum()),
    }


def paired_difference(a: pd.Series, b: pd.Series, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """b - a on the prompts both scored: mean difference and a 95% bootstrap interval over prompts."""
    common = sorted(set(a.index) & set(b.index))
    d = (b.loc[common] - a.loc[common]).to_numpy(float)
    if d.size == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "prompts": 0}
    rng = np.random.default_rng(seed)
    boots = [rng.choice(d, d.size).mean() for _ in range(n_bootstrap)]
    return {"diff": float(d.mean()), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5)), "prompts": int(d.size)}
