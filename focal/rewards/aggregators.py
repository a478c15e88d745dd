"""Aggregators: one scalar reward per rollout from the satisfaction matrix (docs/method.md).

Every aggregator is a pure function with the same signature:

    f(r, w, groups, categories, keys, state, **params) -> Aggregated

- r          [N, C] float, satisfaction r[i, c] in [0, 1]; NaN = not applicable / not judged
- w          [C] weights w_c > 0
- groups     [N] group id of each rollout (its prompt); G rollouts per group
- categories [C] category of each criterion (essential, important, ..., pitfall, tags)
- keys       [C] saturation key of each criterion (its id, or its category)
- state      FocalState: Focal's moving average m_key (other aggregators pass it on)

Rows with nothing judged get NaN (`Aggregated.as_list()` turns NaN into None, the
"could not score" of TRL reward functions).

Sums over criteria run over the criteria judged for that row: with no NaN every
formula is exactly docs/method.md's; with NaN (a failed judgment) a row's reward is
`sum_{c judged} w'_pc r_ic / sum_{c judged} w'_pc`: the weights are renormalised
over what was judged, so every reward of static, focal and pow3r stays in [0, 1] and
a failed judgment never pays more than meeting that criterion would have. GDPO
gives a failed judgment a zero advantage (neither reward nor penalty).

Group statistics use the population std (ddof = 0) over the rollouts judged on
that criterion.

    from focal.rewards.aggregators import aggregate
    aggregate("static", [[1, 0]], [3, 1], groups=[0], categories=["a", "b"], keys=["x", "y"]).rewards
    # array([0.75])
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from focal.rubrics.types import MET

EPS = 1e-4  # GDPO's std guard (docs/method.md)


@dataclass(frozen=True)
class FocalState:
    """Focal's explicit state: m_key, an EMA of past group means per saturation key."""

    m: dict = field(default_factory=dict)


@dataclass
class Aggregated:
    """What an aggregator returns."""

    rewards: np.ndarray  # [N] reward per rollout, NaN where nothing was judged
    weights: np.ndarray  # [N, C] effective weight w'_pc applied to each row (static: w_c)
    state: FocalState  # the state to use at the next step
    saturation: np.ndarray | None = None  # [N, C] Focal's s_pc, or focal_proj's pace, of the row's group

    def as_list(self) -> list[float | None]:
        """Rewards for TRL: float, or None where nothing was judged."""
        return [None if np.isnan(x) else float(x) for x in self.rewards]


# ---- helpers ------------------------------------------------------------------------

def group_index(groups) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance."""
    groups = np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]


def _weighted_score(r: np.ndarray, w_eff: np.ndarray, w: np.ndarray) -> np.ndarray:
    """R_i = sum_{c judged} w'_ic r_ic / sum_{c judged} w'_ic; NaN for rows with nothing judged.

    With every criterion judged the denominator is sum_c w_c (focal and pow3r keep the
    total weight), docs/method.md's formula; with a failed judgment the row's weights are
    renormalised over what was judged, so R stays in [0, 1] and a failure never pays."""
    judged = ~np.isnan(r)
    w_eff = np.where((np.where(judged, w_eff, 0.0).sum(1) > 0)[:, None], w_eff, w[None, :])  # all judged w' = 0
    num = np.where(judged, w_eff * np.nan_to_num(r), 0.0).sum(1)
    den = np.where(judged, w_eff, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def group_stats(rg: np.ndarray):
    """Per column of one group: count judged, sum, mean, population std (NaN-aware)."""
    obs = ~np.isnan(rg)
    n = obs.sum(0)
    total = np.where(obs, rg, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        var = np.where(obs, (rg - mean) ** 2, 0.0).sum(0) / np.maximum(n, 1)
    return n, total, mean, np.where(n > 0, np.sqrt(var), np.nan)


def _nothing_judged(r: np.ndarray) -> np.ndarray:
    return np.isnan(r).all(1)


# ---- the aggregators ----------------------------------------------------------------

def static(r, w, groups, categories, keys, state):
    """R_i = sum_c w_c r_ic / sum_c w_c (the baseline every paper beats)."""
    w_eff = np.broadcast_to(w, r.shape).copy()
    return Aggregated(_weighted_score(r, w_eff, w), w_eff, state)


def gdpo(r, w, groups, categories, keys, state):
    """GDPO (TRL's normalize_then_sum): A_ic = (r_ic - mean_g r_c) / (std_g r_c + 1e-4);
    R_i = sum_c w_c A_ic; then R is normalized over the batch (same guard)."""
    adv = np.full(r.shape, np.nan)
    for idx in group_index(groups):
        _, _, mean, std = group_stats(r[idx])
        adv[idx] = (r[idx] - mean) / (std + EPS)
    judged = ~np.isnan(r)
    R = np.where(judged, w[None, :] * np.nan_to_num(adv), 0.0).sum(1)
    R[_nothing_judged(r)] = np.nan
    ok = ~np.isnan(R)
    if ok.any():
        R[ok] = (R[ok] - R[ok].mean()) / (R[ok].std() + EPS)
    return Aggregated(R, np.broadcast_to(w, r.shape).copy(), state)


def pow3r(r, w, groups, categories, keys, state):
    """POW3R (interpretation): weight each criterion by its within-group contrast
    a_pc = std_g(r_c), renormalized inside each category k to keep W_k = sum_{c in k} w_c:
    w'_pc = W_k w_c a_pc / sum_{c' in k} w_c' a_pc'; a category with all a = 0 keeps w.
    R_i = sum_c w'_pc r_ic / sum_c w_c."""
    categories = np.asarray(categories)
    w_eff = np.broadcast_to(w, r.shape).copy()
    for idx in group_index(groups):
        n, _, _, a = group_stats(r[idx])
        wp = w.astype(float).copy()
        for k in np.unique(categories[n > 0]):
            in_k = (categories == k) & (n > 0)
            contrast = w[in_k] * a[in_k]
            if contrast.sum() > 0:
                wp[in_k] = w[in_k].sum() * contrast / contrast.sum()
        w_eff[idx] = wp
    return Aggregated(_weighted_score(r, w_eff, w), w_eff, state)


def saturation(n, total, keys, state: FocalState, kappa: float) -> np.ndarray:
    """Saturation by inverse reward projection, one group:
    s_pc = (sum_i r_ic + kappa m_key(c)) / (G_obs + kappa); a key with no prior uses kappa = 0."""
    prior = np.array([state.m.get(k, np.nan) for k in keys], dtype=float)
    has = ~np.isnan(prior)
    k_eff = np.where(has, kappa, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total + k_eff * np.nan_to_num(prior)) / (n + k_eff)


def focal_weights(s: np.ndarray, w: np.ndarray, gamma: float, alpha_min: float) -> np.ndarray:
    """alpha_pc = max(alpha_min, (1 - s_pc)^gamma); w'_pc = alpha_pc w_c sum_c w_c / sum_c alpha_pc w_c,
    over the criteria that apply (s not NaN). Returns w' (NaN where s is NaN)."""
    applies = ~np.isnan(s)
    alpha = np.maximum(alpha_min, np.clip(1.0 - np.nan_to_num(s), 0.0, 1.0) ** gamma)
    scale = w[applies].sum() / (alpha[applies] * w[applies]).sum() if applies.any() else 1.0
    return np.where(applies, alpha * w * scale, np.nan)


def update_state(state: FocalState, r, groups, keys, beta: float) -> FocalState:
    """m_key <- beta m_key + (1 - beta) * (mean over this step's groups of the group mean);
    a key seen for the first time starts at that mean. The group mean of a key pools every judged
    value of the key's columns in the group's rows (one pass: group x row and column x key indicators)."""
    r = np.asarray(r, dtype=float)
    m = dict(state.m)
    if r.size == 0:
        return FocalState(m)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    names, k = np.unique(np.asarray(keys).astype(str), return_inverse=True)
    rows = np.zeros((g.max() + 1, r.shape[0]))
    rows[g, np.arange(r.shape[0])] = 1.0
    cols = np.zeros((r.shape[1], len(names)))
    cols[np.arange(r.shape[1]), k] = 1.0
    obs = ~np.isnan(r)
    total = rows @ np.where(obs, r, 0.0) @ cols  # [groups, keys]
    count = rows @ obs.astype(float) @ cols
    seen = count > 0
    means = total / np.maximum(count, 1.0)
    for j, name in enumerate(names.tolist()):
        if seen[:, j].any():
            step = float(means[seen[:, j], j].mean())
            m[name] = beta * m[name] + (1 - beta) * step if name in m else step
    return FocalState(m)


def focal(r, w, groups, categories, keys, state, gamma=2.0, alpha_min=0.1, kappa=4.0, beta=0.9):
    """Focal Reward (interpretation): weights from saturation estimated with the EMA of
    earlier steps, then the EMA is updated with this step. R_i = sum_c w'_pc r_ic / sum_c w_c."""
    if gamma < 0 or not 0 < alpha_min <= 1 or kappa < 0 or not 0 <= beta < 1:
        raise ValueError(f"focal needs gamma >= 0, 0 < alpha_min <= 1, kappa >= 0, 0 <= beta < 1; "
                         f"got gamma={gamma}, alpha_min={alpha_min}, kappa={kappa}, beta={beta}")
    keys = list(keys)
    w_eff = np.broadcast_to(w, r.shape).copy()
    sat = np.full(r.shape, np.nan)
    for idx in group_index(groups):
        n, total, _, _ = group_stats(r[idx])
        s = saturation(n, total, keys, state, kappa)
        s[n == 0] = np.nan
        sat[idx] = s
        w_eff[idx] = np.nan_to_num(focal_weights(s, w, gamma, alpha_min), nan=0.0)
    return Aggregated(_weighted_score(r, w_eff, w), w_eff, update_state(state, r, groups, keys, beta), sat)


def floor_weights(wp, floor: float) -> np.ndarray:
    """Positive weights wp (any scale) -> weights that sum to 1, each at least `floor`, by water-filling:
    the k below the floor are set to it and the rest rescaled to fill 1 - k floor, repeated until none
    falls below; the weights above the floor keep their proportions. Equivalently max(floor, s wp) with
    the s that makes the sum 1. When floor * len(wp) >= 1 the only answer that fits (= 1) or comes
    closest (> 1) is uniform, which is returned.
    floor_weights([0.90, 0.06, 0.04], 0.1) -> [0.8, 0.1, 0.1]."""
    wp = np.asarray(wp, dtype=float)
    if floor * len(wp) >= 1:
        return np.full(len(wp), 1.0 / len(wp))
    at = np.zeros(len(wp), dtype=bool)  # the weights held at the floor; never empties the rest (see below)
    while True:
        out = np.where(at, floor, wp * (1.0 - at.sum() * floor) / wp[~at].sum())
        low = ~at & (out < floor)
        if not low.any():
            return out
        at |= low  # the rest sum to 1 - k floor > (C - k) floor, so at least one stays above


def focal_proj(r, w, groups, categories, keys, state, T=1.0, gamma=3.0, eps=0.05, floor=0.0, mix=0.0):
    """Focal Reward, the authors' form (docs/method.md 4b): inverse reward projection, no state.
    Per group, with u_c = w_c / sum w and the static score S_i = sum_c u_c r_ic:
    q_i = softmax_i(S_i / T); pace_pc = clip(sum_i q_i r_ic, 0, 1) (the saturation logged);
    w'_pc proportional to u_c (1 - pace_pc + eps)^gamma, normalised to sum 1; then the knobs the
    authors suggest against easy criteria collapsing: w' = floor_weights(w', floor) (each applicable
    criterion's weight at least `floor`, by water-filling) and R_i = (1 - mix) sum_c w'_pc r_ic + mix S_i.
    gamma = 0 with floor = 0 (mix any) gives static exactly (a floor raises small static weights).
    Failures: a rollout with nothing judged gets no reward (NaN), not its group's mean as in the
    authors' code (a failed judgment never pays); q and pace run over the rollouts judged on c, and
    a row with some criteria failed is renormalised over what was judged, as for every aggregator."""
    if T <= 0 or gamma < 0 or eps <= 0 or not 0 <= floor < 1 or not 0 <= mix <= 1:
        raise ValueError(f"focal_proj needs T > 0, gamma >= 0, eps > 0, 0 <= floor < 1, 0 <= mix <= 1; "
                         f"got T={T}, gamma={gamma}, eps={eps}, floor={floor}, mix={mix}")
    S = _weighted_score(r, np.broadcast_to(w, r.shape).copy(), w)
    w_eff = np.broadcast_to(w, r.shape).copy()
    pace = np.full(r.shape, np.nan)
    for idx in group_index(groups):
        rg, sg = r[idx], S[idx]
        ok = ~np.isnan(sg)
        q = np.zeros(len(idx))
        if ok.any():
            z = (sg[ok] - sg[ok].max()) / T
            q[ok] = np.exp(z) / np.exp(z).sum()
        judged = ~np.isnan(rg)
        mass = np.where(judged, q[:, None], 0.0).sum(0)  # [C] q renormalised over the rows judged on c
        applies = mass > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.clip(np.where(judged, q[:, None] * np.nan_to_num(rg), 0.0).sum(0) / mass, 0.0, 1.0)
        p[~applies] = np.nan
        pace[idx] = p
        if not applies.any():
            continue
        wp = np.where(applies, (w / w.sum()) * (1.0 - np.nan_to_num(p) + eps) ** gamma, 0.0)
        wp = wp / wp.sum()
        if floor > 0:
            wp[applies] = floor_weights(wp[applies], floor)
        w_focal = wp * w[applies].sum()  # on the static scale: w'_pc / w_c = 1 is the static weight
        w_eff[idx] = np.where(applies, (1.0 - mix) * w_focal + mix * w, 0.0)
    return Aggregated(_weighted_score(r, w_eff, w), w_eff, state, pace)


def strict(r, w, groups, categories, keys, state):
    """1 if every judged criterion is met (r >= MET: positives met, no pitfall present), else 0."""
    judged = ~np.isnan(r)
    met = np.where(judged, np.nan_to_num(r) >= MET, True).all(1)
    R = met.astype(float)
    R[_nothing_judged(r)] = np.nan
    return Aggregated(R, np.broadcast_to(w, r.shape).copy(), state)


def worst(r, w, groups, categories, keys, state):
    """min: the worst judged criterion's satisfaction."""
    R = np.where(np.isnan(r), np.inf, r).min(1)
    R[_nothing_judged(r)] = np.nan
    return Aggregated(R, np.broadcast_to(w, r.shape).copy(), state)


AGGREGATORS = {
    "static": static,
    "gdpo": gdpo,
    "pow3r": pow3r,
    "focal": focal,
    "focal_proj": focal_proj,
    "strict": strict,
    "min": worst,
}


def aggregator_params(name: str) -> dict:
    """The tunable parameters of an aggregator and their defaults."""
    sig = inspect.signature(get_aggregator(name))
    return {p: v.default for p, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def get_aggregator(name: str, knob: str | None = None):
    """The aggregator called `name`; a typo lists the valid names (and names the params knob it came from)."""
    if name not in AGGREGATORS:
        where = f" ({knob})" if knob else ""
        raise ValueError(f"unknown aggregator {name!r}{where}; valid aggregators: {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name]


def check_aggregator_knobs(params, source: str = "params") -> None:
    """Every aggregator named in params (train.aggregator, compare.aggregators, compare.confirm_arms) is one of
    AGGREGATORS: called where params become a reward (the train stage, the CLI, the evidence protocol), since
    focal.config sits below this registry and cannot check the names itself."""
    get_aggregator(params.train.aggregator, f"{source}: train.aggregator")
    for knob in ("aggregators", "confirm_arms"):
        for name in getattr(params.compare, knob):
            get_aggregator(name, f"{source}: compare.{knob}")


def aggregate(name, r, w, groups, categories, keys, state: FocalState | None = None, **params) -> Aggregated:
    """Validate inputs and run the aggregator `name`. Unknown params raise ValueError."""
    fn = get_aggregator(name)
    allowed = aggregator_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"aggregator {name!r} has no parameter {unknown[0]!r}; its parameters: {sorted(allowed) or 'none'}")
    r = np.asarray(r, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"r must be a [rollouts, criteria] matrix, got shape {r.shape}")
    w = np.asarray(w, dtype=float)
    groups = np.asarray(groups)
    if w.shape != (r.shape[1],) or len(categories) != r.shape[1] or len(keys) != r.shape[1]:
        raise ValueError(f"w, categories and keys need one entry per criterion ({r.shape[1]}); "
                         f"got {w.shape[0] if w.ndim else w}, {len(categories)}, {len(keys)}")
    if groups.shape != (r.shape[0],):
        raise ValueError(f"groups needs one entry per rollout ({r.shape[0]}), got {groups.shape}")
    if (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be finite and > 0, got {w.tolist()}")
    finite = r[~np.isnan(r)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("satisfactions must lie in [0, 1] (or be NaN); project raw judgments first")
    return fn(r, w, groups, list(categories), list(keys), state or FocalState(), **params)
