"""Metrics over a satisfaction matrix, with METHOD.md's names (explained in the README).

    rubric_summary(r, w, categories, keys)       -> rubric/score, rubric/strict_completion,
                                                    rubric/min_category, category/<k>/pass_rate
    step_metrics(r, w, groups, categories, keys, agg)
                                                 -> the summary plus criteria/<key>/pass_rate,
                                                    criteria/<key>/saturation, criteria/<key>/weight,
                                                    rubric/noncontrastive_frac

A criterion is met when r >= aggregate.MET. `criteria/<key>/weight` is the mean
over groups of w'_pc / w_c: 1.0 means the static weight, above 1 more pressure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from focal.aggregate import MET, Aggregated, _group_index, _group_stats, static, strict


def _mean_met(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float((values >= MET).mean()) if values.size else float("nan")


def pass_rates(r: np.ndarray, labels) -> dict[str, float]:
    """Share of judged entries that are met, per label (category or key) of the columns."""
    labels = np.asarray(labels)
    return {str(k): _mean_met(r[:, labels == k]) for k in dict.fromkeys(labels.tolist())}


def rubric_summary(r, w, categories, keys) -> dict[str, float]:
    """Static rubric score (clipped to [0, 1]), strict completion and category balance."""
    r = np.asarray(r, dtype=float)
    w = np.asarray(w, dtype=float)
    scored = ~np.isnan(r).all(1)
    none = np.zeros(len(r))
    score = static(r[scored], w, none[scored], categories, keys, None).rewards
    done = strict(r[scored], w, none[scored], categories, keys, None).rewards
    cats = pass_rates(r, categories)
    finite = [v for v in cats.values() if not np.isnan(v)]
    out = {
        "rubric/score": float(np.clip(score, 0, 1).mean()) if score.size else float("nan"),
        "rubric/strict_completion": float(done.mean()) if done.size else float("nan"),
        "rubric/min_category": min(finite) if finite else float("nan"),
    }
    out.update({f"category/{k}/pass_rate": v for k, v in cats.items()})
    return out


def noncontrastive_frac(r: np.ndarray, groups) -> float:
    """Share of (group, criterion) pairs judged at least twice whose within-group std is 0."""
    flat, total = 0, 0
    for idx in _group_index(groups):
        n, _, _, std = _group_stats(r[idx])
        seen = n >= 2
        total += int(seen.sum())
        flat += int((std[seen] == 0).sum())
    return flat / total if total else float("nan")


def step_metrics(r, w, groups, categories, keys, agg: Aggregated) -> dict[str, float]:
    """Everything METHOD.md asks to log at each training step (judge/* come from the judge)."""
    r = np.asarray(r, dtype=float)
    w = np.asarray(w, dtype=float)
    keys = np.asarray(keys)
    out = rubric_summary(r, w, categories, keys)
    out["rubric/noncontrastive_frac"] = noncontrastive_frac(r, groups)
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
    """A judgments table as METHOD.md's satisfaction matrix: rows = rollouts, columns = (prompt, criterion)."""

    r: np.ndarray  # [N, C]
    w: np.ndarray  # [C]
    groups: np.ndarray  # [N] prompt id of each rollout
    categories: list  # [C]
    keys: list  # [C]
    rollout_ids: list  # [N]
    columns: list  # [C] (prompt_id, criterion_id)


def satisfaction_matrix(df) -> Matrix:
    """Build the matrix from rows with prompt_id, rollout_id, criterion_id, key, category, weight, score."""
    rollouts = list(dict.fromkeys(df.rollout_id))
    cols = list(dict.fromkeys(zip(df.prompt_id, df.criterion_id)))
    ri = {r: i for i, r in enumerate(rollouts)}
    ci = {c: j for j, c in enumerate(cols)}
    r = np.full((len(rollouts), len(cols)), np.nan)
    meta = {}
    group_of = {}
    for row in df.itertuples(index=False):
        r[ri[row.rollout_id], ci[(row.prompt_id, row.criterion_id)]] = row.score
        meta[(row.prompt_id, row.criterion_id)] = (row.weight, row.category, row.key)
        group_of[row.rollout_id] = row.prompt_id
    w, categories, keys = (list(x) for x in zip(*(meta[c] for c in cols))) if cols else ([], [], [])
    return Matrix(r, np.asarray(w, dtype=float), np.asarray([group_of[x] for x in rollouts]), categories, keys,
                  rollouts, cols)
