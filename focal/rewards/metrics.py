"""Every metric's one definition (each name explained once, in docs/method.md), over a satisfaction matrix.

Training logs (focal/rewards/reward.py), evaluation (focal/evaluation/evaluate.py) and the simulator all
call these functions, so a number has the same meaning wherever it is printed.

    response_scores(r, w, pitfall)           HealthBench's score of each rollout
    strict_rows(r)                           1 if a rollout meets every judged criterion
    pass_rates(r, labels)                    share of judged entries met, per label (category or key)
    rubric_summary(r, w, pitfall, categories, groups)
                                             rubric/score, rubric/strict_completion, rubric/min_category,
                                             category/<k>/pass_rate
    step_metrics(r, w, groups, categories, keys, agg, pitfall)
                                             the summary plus criteria/<key>/{pass_rate,saturation,weight},
                                             rubric/noncontrastive_frac, rubric/zero_std_frac
    constant_by_key(r, groups, keys)          criteria/<key>/judge_constant (on the judge's rows)

- rubric score (HealthBench's grader formula): for one response, (sum of the weights
  of met positive criteria - sum of the weights of present pitfalls) / (sum of the
  positive weights), over the criteria judged for it (a failed judgment is left
  out, never scored 0); likert criteria count w * r. A rubric with no positive
  weight has no score. The reported score is the mean over prompts of each prompt's
  mean over its rollouts, clipped to [0, 1].
- strict completion: share of rollouts meeting every judged criterion (positives
  met, no pitfall present); rollouts with nothing judged are left out.
- a criterion is met when r >= aggregate.MET (0.5); a pitfall is met when it is absent. With
  soft verdicts (judge.mode one_token: r = P(yes) / (P(yes) + P(no)), any value in [0, 1])
  pass rates and strict completion count r >= 0.5 as met (0.5 is met, 0.49 is not), while
  the rubric score weighs r itself (the expected share of points).

`criteria/<key>/weight` is the mean over groups of w'_pc / w_c: 1.0 means the static
weight, above 1 more pressure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from focal.rewards.aggregators import Aggregated, group_index, group_stats
from focal.rubrics.types import MET


def response_scores(r, w, pitfall) -> np.ndarray:
    """HealthBench's score of each row of r [N, C]; NaN where no positive criterion was judged."""
    r = np.asarray(r, float)
    w = np.broadcast_to(np.asarray(w, float), r.shape)
    pit = np.broadcast_to(np.asarray(pitfall, bool), r.shape)
    judged = ~np.isnan(r)
    x = np.nan_to_num(r)
    possible = np.where(judged & ~pit, w, 0.0).sum(1)
    gained = np.where(judged & ~pit, w * x, 0.0).sum(1)
    lost = np.where(judged & pit, w * (1 - x), 0.0).sum(1)  # a pitfall's r = 1 - present
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(possible > 0, (gained - lost) / np.where(possible > 0, possible, 1.0), np.nan)


def strict_rows(r) -> np.ndarray:
    """1.0 if a row meets every judged criterion, 0.0 if not, NaN if nothing was judged."""
    r = np.asarray(r, float)
    judged = ~np.isnan(r)
    out = np.where(judged, np.nan_to_num(r) >= MET, True).all(1).astype(float)
    out[~judged.any(1)] = np.nan
    return out


def _mean_met(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float((values >= MET).mean()) if values.size else float("nan")


def pass_rates(r, labels) -> dict[str, float]:
    """Share of judged entries that are met, per label (category or key) of the columns, sorted by label."""
    r = np.asarray(r, float)
    labels = np.asarray(labels).astype(str)
    return {k: _mean_met(r[:, labels == k]) for k in sorted(set(labels.tolist()))}


def prompt_means(values, groups) -> dict:
    """{group: mean of the non-NaN values of its rows}, groups with no value left out, sorted by group."""
    values = np.asarray(values, float)
    groups = np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        v = values[groups == g]
        v = v[~np.isnan(v)]
        if v.size:
            out[g] = float(v.mean())
    return out


def _finite_min(d: dict) -> float:
    vals = [v for v in d.values() if not np.isnan(v)]
    return min(vals) if vals else float("nan")


def rubric_summary(r, w, pitfall, categories, groups=None, keys=None) -> dict[str, float]:
    """The headline figures: rubric score, strict completion and category balance, and with `keys` (one per column)
    the weakest criterion key's pass rate (see the module docstring)."""
    r = np.asarray(r, float)
    groups = np.arange(len(r)) if groups is None else np.asarray(groups)
    per_prompt = list(prompt_means(response_scores(r, w, pitfall), groups).values())
    done = strict_rows(r)
    done = done[~np.isnan(done)]
    cats = pass_rates(r, categories)
    out = {
        "rubric/score": float(np.clip(np.mean(per_prompt), 0, 1)) if per_prompt else float("nan"),
        "rubric/strict_completion": float(done.mean()) if done.size else float("nan"),
        "rubric/min_category": _finite_min(cats),
    }
    if keys is not None:
        out["rubric/min_key"] = _finite_min(pass_rates(r, keys))
    out.update({f"category/{k}/pass_rate": v for k, v in cats.items()})
    return out


def _constant(r, groups):
    """[C] (constant, seen): per column, how many groups judged it at least twice, and in how many of those it was constant."""
    r = np.asarray(r, float)
    flat, seen = np.zeros(r.shape[1]), np.zeros(r.shape[1])
    for idx in group_index(groups):
        n, _, _, std = group_stats(r[idx])
        seen += n >= 2
        flat += (n >= 2) & (std == 0)
    return flat, seen


def noncontrastive_frac(r, groups) -> float:
    """Share of (group, criterion) pairs judged at least twice whose within-group std is 0."""
    flat, seen = _constant(r, groups)
    return float(flat.sum() / seen.sum()) if seen.sum() else float("nan")


def constant_by_key(r, groups, keys) -> dict[str, float]:
    """Per criterion key: share of its (group, criterion) pairs judged at least twice that got one verdict for all."""
    flat, seen = _constant(r, groups)
    keys = np.asarray(keys).astype(str)
    return {k: float(flat[keys == k].sum() / seen[keys == k].sum())
            for k in sorted(set(keys.tolist())) if seen[keys == k].sum()}


def zero_std_frac(rewards, groups) -> float:
    """Share of groups whose rewards are all equal (GRPO learns nothing from them)."""
    rewards = np.asarray(rewards, float)
    flat, total = 0, 0
    for idx in group_index(groups):
        v = rewards[idx]
        v = v[~np.isnan(v)]
        if v.size >= 2:
            total += 1
            flat += int(np.ptp(v) == 0)
    return flat / total if total else float("nan")


def step_metrics(r, w, groups, categories, keys, agg: Aggregated, pitfall=None) -> dict[str, float]:
    """Everything docs/method.md asks to log at each training step (judge/* come from the judge)."""
    r = np.asarray(r, dtype=float)
    w = np.asarray(w, dtype=float)
    keys = np.asarray(keys).astype(str)
    pitfall = np.asarray(categories) == "pitfall" if pitfall is None else np.asarray(pitfall, bool)
    out = rubric_summary(r, w, pitfall, categories, groups, keys)
    out["rubric/noncontrastive_frac"] = noncontrastive_frac(r, groups)
    out["rubric/zero_std_frac"] = zero_std_frac(agg.rewards, groups)
    judged = ~np.isnan(r)
    for k, rate in pass_rates(r, keys).items():
        cols = keys == k
        out[f"criteria/{k}/pass_rate"] = rate
        mask = judged[:, cols]
        ratio = (agg.weights[:, cols] / w[cols])[mask]
        out[f"criteria/{k}/weight"] = float(ratio.mean()) if ratio.size else float("nan")
        if agg.saturation is not None:
            s = agg.saturation[:, cols][mask]
            out[f"criteria/{k}/saturation"] = float(s.mean()) if s.size else float("nan")
    return out


@dataclass
class Matrix:
    """A judgments table as docs/method.md's satisfaction matrix: rows = rollouts, columns = (prompt, criterion)."""

    r: np.ndarray  # [N, C]
    w: np.ndarray  # [C]
    groups: np.ndarray  # [N] prompt id of each rollout
    categories: list  # [C]
    keys: list  # [C]
    rollout_ids: list  # [N]
    columns: list  # [C] (prompt_id, criterion_id)
    pitfall: np.ndarray  # [C] bool


def satisfaction_matrix(df) -> Matrix:
    """Build the matrix from rows with prompt_id, rollout_id, criterion_id, key, category, weight, pitfall, score."""
    rollouts = list(dict.fromkeys(df.rollout_id))
    cols = list(dict.fromkeys(zip(df.prompt_id, df.criterion_id)))
    ri = {r: i for i, r in enumerate(rollouts)}
    ci = {c: j for j, c in enumerate(cols)}
    r = np.full((len(rollouts), len(cols)), np.nan)
    meta = {}
    group_of = {}
    has_pitfall = "pitfall" in df.columns
    for row in df.itertuples(index=False):
        r[ri[row.rollout_id], ci[(row.prompt_id, row.criterion_id)]] = row.score
        pit = bool(row.pitfall) if has_pitfall else row.category == "pitfall"
        meta[(row.prompt_id, row.criterion_id)] = (row.weight, row.category, row.key, pit)
        group_of[row.rollout_id] = row.prompt_id
    w, categories, keys, pitfall = (list(x) for x in zip(*(meta[c] for c in cols))) if cols else ([], [], [], [])
    return Matrix(r, np.asarray(w, dtype=float), np.asarray([group_of[x] for x in rollouts]), categories, keys,
                  rollouts, cols, np.asarray(pitfall, bool))
