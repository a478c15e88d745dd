"""A cheap rubric bandit for comparing aggregators without an LLM.

The world: C criteria over a latent "behaviour" space R^D. A rollout is a point
u = mu + sigma * eps (mu is the policy); criterion c is met with probability
sigmoid(sharpness * (a_c . u + b_c + d_pc)), where
- b_c sets its difficulty (easy criteria start near saturation, hard ones near 0;
  for a pitfall, "met" means the bad behaviour is present),
- a_c is its direction: a criterion declared `like` another mostly shares its
  direction (correlated), one declared `against` another mostly opposes it
  (conflicting, e.g. "short" against "complete"); other directions are random,
- d_pc is a per-prompt offset, and each prompt uses a subset of the criteria.
The policy's capacity is bounded (|mu| <= radius), so gains on one criterion can
cost another. A training step samples P prompts x G rollouts, aggregates the
satisfaction matrix with the chosen aggregator, turns rewards into GRPO advantages
(group-normalised) and takes a REINFORCE step on mu.

A world is a YAML file whose keys are `World`'s fields (benchmarks/worlds/*.yaml), so
a new setting needs no code; a seed draws a `Bandit` from it (the random directions,
prompt offsets and criteria of each prompt). A `Variant` is one thing the benchmarks
compare: an aggregator with its parameters, the saturation key (criterion id or
category) and how training prompts are drawn: `uniform`, or `unsaturated`, in
proportion to the weight of their criteria that still have room
(`unsaturated_probabilities`).

    from focal.rewards.simulate import SimConfig, Variant, load_world, make_bandit, train
    world = load_world("default", "benchmarks/worlds")
    curve = train(make_bandit(world, seed=0), Variant("focal"), SimConfig(), seed=0)

Benchmarks: python -m benchmarks.aggregators (every aggregator), python -m benchmarks.ablation
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from focal.config import NONEMPTY, TEXT, Rule, Section, above, at_least, between, knob
from focal.rewards.aggregators import FocalState, aggregate, aggregator_params, get_aggregator, update_state
from focal.rewards.metrics import constant_by_key, pass_rates, rubric_summary, step_metrics

SATURATION_KEYS = ("id", "category")  # Focal's saturation key: the criterion's id, or its category
SAMPLERS = ("uniform", "unsaturated")  # how training prompts are drawn
FLOOR = 0.01  # under `unsaturated` sampling a prompt keeps at least this share of the mean unsaturated weight

PER_PROMPT = Rule("[min, max] with 1 <= min <= max (integers)",
                  lambda v: len(v) == 2 and all(type(x) is int for x in v) and 1 <= v[0] <= v[1])
POSITIVE_WEIGHTS = Rule("a mapping {category: weight > 0}",
                        lambda v: bool(v) and all(type(x) in (int, float) and x > 0 for x in v.values()))


# ---- the world: what a YAML file says ---------------------------------------------

@dataclass
class Criterion(Section):
    """One entry of a world's `criteria:` (name, category and bias are required)."""

    name: str = knob("c", "its id: the saturation key under saturation_key=id, and its name in the metrics", NONEMPTY)
    category: str = knob("essential", "its category (weight from category_weights); `pitfall` marks a pitfall",
                         NONEMPTY)
    bias: float = knob(0.0, "difficulty b_c: +2.5 is met almost always at the start, -2.5 almost never "
                            "(a pitfall: present)")
    like: str = knob("", "an earlier criterion whose direction this one mostly shares (correlated)", TEXT)
    against: str = knob("", "an earlier criterion whose direction this one mostly opposes (conflicting)", TEXT)
    always: bool = knob(False, "applies to every prompt (otherwise only to the prompts that draw it)")


REQUIRED = ("name", "category", "bias")


@dataclass
class World(Section):
    """A simulated world: one YAML file in benchmarks/worlds/ (a seed draws its random parts)."""

    criteria: list = knob([], "the criteria, in order; each {name, category, bias, like?, against?, always?}")
    dim: int = knob(6, "latent behaviour dimensions", at_least(1))
    n_prompts: int = knob(48, "prompts; the first quarter are held out for evaluation", at_least(4))
    criteria_per_prompt: list = knob([4, 8], "min and max criteria a prompt draws (`always` ones are added)",
                                     PER_PROMPT)
    radius: float = knob(3.0, "capacity: the policy mean stays inside this ball", above(0))
    sharpness: float = knob(1.5, "slope of the satisfaction probability", above(0))
    sigma: float = knob(1.0, "exploration noise of a rollout in latent space", above(0))
    prompt_offset: float = knob(0.5, "std of the per-prompt offsets d_pc", at_least(0))
    relation: float = knob(0.8, "share of the other's direction a `like` / `against` criterion takes", between(0, 1))
    shuffle_bias: bool = knob(False, "deal the listed biases to the criteria in a random order for each seed")
    category_weights: dict = knob({"essential": 4.0, "important": 2.0, "optional": 1.0, "pitfall": 3.0},
                                  "weight of each category", POSITIVE_WEIGHTS)

    def __post_init__(self):
        super().__post_init__()
        if not self.criteria or not all(isinstance(c, Criterion) for c in self.criteria):
            raise ValueError("world.criteria must be a non-empty list of criteria")
        seen = []
        for i, c in enumerate(self.criteria):
            where = f"criteria[{i}] ({c.name})"
            if c.name in seen:
                raise ValueError(f"{where}: name {c.name!r} is used twice; names must be unique")
            if c.category not in self.category_weights:
                raise ValueError(f"{where}: category {c.category!r} has no weight; "
                                 f"category_weights has {', '.join(self.category_weights)}")
            if c.like and c.against:
                raise ValueError(f"{where}: give `like` or `against`, not both")
            other = c.like or c.against
            if other and other not in seen:
                raise ValueError(f"{where}: {'like' if c.like else 'against'} {other!r} must name an earlier "
                                 f"criterion; earlier: {', '.join(seen) or 'none'}")
            seen.append(c.name)
        if self.criteria_per_prompt[1] > len(self.criteria):
            raise ValueError(f"world.criteria_per_prompt max ({self.criteria_per_prompt[1]}) exceeds the "
                             f"number of criteria ({len(self.criteria)})")


def world_from_dict(raw) -> World:
    """A World from a YAML mapping; ValueError naming the field and the fix."""
    if not isinstance(raw, dict):
        raise ValueError(f"a world file must be a mapping of World's fields, got {type(raw).__name__}")
    known = list(World.__dataclass_fields__)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"`{unknown[0]}` is not a world field; fields: {', '.join(known)} (see focal/rewards/simulate.py)")
    entries = raw.get("criteria")
    if not isinstance(entries, list) or not entries:
        raise ValueError("`criteria` must be a non-empty list of {name, category, bias, ...}")
    fields = list(Criterion.__dataclass_fields__)
    criteria = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"criteria[{i}] must be a mapping {{name, category, bias, ...}}, got {entry!r}")
        where = f"criteria[{i}] ({entry.get('name', '?')})"
        bad = sorted(set(entry) - set(fields))
        if bad:
            raise ValueError(f"{where}: `{bad[0]}` is not a criterion field; fields: {', '.join(fields)}")
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{where}: `{missing[0]}` is required ({', '.join(REQUIRED)} are)")
        try:
            criteria.append(Criterion(**entry))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return World(**{**raw, "criteria": criteria})


def world_names(folder) -> list[str]:
    """Names of the worlds in `folder` (its *.yaml files)."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_world(name_or_path, folder) -> World:
    """The world `name` (folder/name.yaml) or a path to a .yaml file; errors name the file and the field."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"{path}: world file not found")
    else:
        path = Path(folder) / f"{text}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown world {text!r}; valid worlds: {', '.join(world_names(folder))} "
                             f"(files in {folder}), or give a path to a .yaml file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    try:
        return world_from_dict(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# ---- one draw of a world ----------------------------------------------------------

@dataclass(frozen=True)
class Bandit:
    """One draw of a world: what a seed fixes."""

    world: World
    directions: np.ndarray  # [C, D] unit vectors a_c
    bias: np.ndarray  # [C] b_c
    offsets: np.ndarray  # [P, C] d_pc
    applies: np.ndarray  # [P, C] bool
    names: list  # [C] criterion ids
    categories: list  # [C]
    weights: np.ndarray  # [C]
    pitfall: np.ndarray  # [C] bool: met means the bad behaviour is present

    def keys(self, saturation_key: str) -> list:
        """Saturation key of each criterion: its id or its category."""
        return list(self.names if saturation_key == "id" else self.categories)


def make_bandit(world: World, seed: int) -> Bandit:
    """Draw directions (with the world's correlated and conflicting relations), biases, prompts."""
    rng = np.random.default_rng(seed)
    crit = world.criteria
    C, D = len(crit), world.dim
    index = {c.name: i for i, c in enumerate(crit)}
    directions = rng.normal(size=(C, D))
    for i, c in enumerate(crit):
        if c.like or c.against:
            sign = 1.0 if c.like else -1.0
            directions[i] = sign * world.relation * directions[index[c.like or c.against]] \
                + (1 - world.relation) * directions[i]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    bias = np.array([c.bias for c in crit], dtype=float)
    if world.shuffle_bias:
        bias = bias[rng.permutation(C)]
    categories = [c.category for c in crit]
    pitfall = np.array([k == "pitfall" for k in categories])
    always = np.array([c.always for c in crit])
    applies = np.zeros((world.n_prompts, C), dtype=bool)
    lo, hi = world.criteria_per_prompt
    for p in range(world.n_prompts):
        applies[p, rng.choice(C, size=rng.integers(lo, hi + 1), replace=False)] = True
        applies[p] |= always
        if pitfall.any() and not applies[p, pitfall].any():  # every prompt has a pitfall
            applies[p, rng.choice(np.flatnonzero(pitfall))] = True
    offsets = rng.normal(scale=world.prompt_offset, size=(world.n_prompts, C))
    weights = np.array([float(world.category_weights[k]) for k in categories])
    return Bandit(world, directions, bias, offsets, applies, [c.name for c in crit], categories, weights, pitfall)


# ---- what is compared and how it trains ---------------------------------------------

@dataclass
class SimConfig(Section):
    """How every variant trains in a simulated world."""

    batch_prompts: int = knob(8, "P: prompts per training step", at_least(1))
    group_size: int = knob(8, "G: rollouts per prompt", at_least(2))
    steps: int = knob(150, "training steps", at_least(1))
    lr: float = knob(0.05, "REINFORCE step size", above(0))
    eval_every: int = knob(10, "evaluate on the held-out prompts every this many steps", at_least(1))
    eval_samples: int = knob(32, "rollouts per held-out prompt at each evaluation", at_least(1))
    sampling_beta: float = knob(0.9, "EMA decay of the pass rates that `unsaturated` prompt sampling reads "
                                     "(as Focal's beta)", between(0, 1, open_hi=True))


@dataclass(frozen=True)
class Variant:
    """One thing the benchmarks compare: an aggregator, its parameters, the saturation key, the prompt sampler."""

    aggregator: str
    params: dict = field(default_factory=dict)  # the aggregator's parameters, e.g. {"gamma": 1.0} for focal
    saturation_key: str = "id"  # what Focal's (and the sampler's) pass-rate EMA is kept per: "id" or "category"
    sampling: str = "uniform"  # "uniform", or "unsaturated": prompts in proportion to their unsaturated weight

    def __post_init__(self):
        get_aggregator(self.aggregator)  # a typo lists the valid names
        allowed = aggregator_params(self.aggregator)
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"aggregator {self.aggregator!r} has no parameter {unknown[0]!r}; "
                             f"its parameters: {sorted(allowed) or 'none'}")
        if self.saturation_key not in SATURATION_KEYS:
            raise ValueError(f"saturation_key must be one of {', '.join(SATURATION_KEYS)}, got {self.saturation_key!r}")
        if self.sampling not in SAMPLERS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLERS)}, got {self.sampling!r}")


def unsaturated_probabilities(applies, w, keys, m: dict) -> np.ndarray:
    """Saturation-aware prompt sampling: P(p) proportional to its unsaturated weight
    u_p = sum_{c applies to p} w_c (1 - m_key(c)), m the EMA of past pass rates per key (a key never
    seen has m = 0: all its room left). Every prompt keeps at least FLOOR x the mean u, so that a batch
    can always be drawn without replacement. applies [prompts, C] bool -> [prompts] probabilities."""
    room = np.array([1.0 - m.get(k, 0.0) for k in keys])
    u = np.where(np.asarray(applies, bool), np.asarray(w, float) * room, 0.0).sum(1)
    u = np.maximum(u, FLOOR * u.mean())
    return u / u.sum() if u.sum() > 0 else np.full(len(u), 1.0 / len(u))


def sample(bandit: Bandit, mu: np.ndarray, prompts: np.ndarray, G: int, rng):
    """G rollouts per prompt: latent points u [N, D], satisfaction r [N, C] (NaN where n/a), groups [N]."""
    world = bandit.world
    prompts = np.repeat(prompts, G)
    u = mu + world.sigma * rng.normal(size=(len(prompts), world.dim))
    logits = world.sharpness * (u @ bandit.directions.T + bandit.bias + bandit.offsets[prompts])
    met = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
    r = np.where(bandit.pitfall, ~met, met).astype(float)  # pitfall: satisfaction = 1 - present
    r[~bandit.applies[prompts]] = np.nan
    return u, r, prompts


def evaluate(bandit: Bandit, cfg: SimConfig, mu: np.ndarray, rng) -> dict:
    """On the held-out prompts: rubric/score, rubric/strict_completion, rubric/min_category, category/<k>/pass_rate,
    rubric/min_key (lowest pass rate over criterion ids), criteria/<id>/pass_rate, and policy/norm = |mu|
    (at the world's radius once capacity binds)."""
    held_out = np.arange(bandit.world.n_prompts // 4)
    _, r, groups = sample(bandit, mu, held_out, cfg.eval_samples, rng)
    out = rubric_summary(r, bandit.weights, bandit.pitfall, bandit.categories, groups, bandit.names)
    per_key = pass_rates(r, bandit.names)
    out.update({f"criteria/{k}/pass_rate": v for k, v in per_key.items()})
    out["policy/norm"] = float(np.linalg.norm(mu))
    return out


def grpo_advantages(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(R_i - mean_g R) / (std_g R + 1e-4); rollouts with no reward get 0."""
    adv = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = (groups == g) & ~np.isnan(rewards)
        if idx.sum() > 1:
            x = rewards[idx]
            adv[idx] = (x - x.mean()) / (x.std() + 1e-4)
    return adv


def train(bandit: Bandit, variant: Variant, cfg: SimConfig, seed: int) -> list[dict]:
    """Train mu with `variant`; returns held-out evaluations [{step, rubric/score, ...}] every eval_every
    steps, each with the last training batch's criteria/<key>/{pass_rate, weight, saturation, constant} under
    batch/ (constant: share of the key's groups in which every rollout got the same verdict).
    The same seed gives every variant the same noise streams (paired); with uniform sampling also the
    same prompts."""
    world = bandit.world
    train_prompts = np.arange(world.n_prompts // 4, world.n_prompts)
    if len(train_prompts) < cfg.batch_prompts:
        raise ValueError(f"simconfig.batch_prompts ({cfg.batch_prompts}) exceeds the world's "
                         f"{len(train_prompts)} training prompts (three quarters of n_prompts)")
    rng = np.random.default_rng(10_000 + seed)
    eval_rng = np.random.default_rng(20_000 + seed)
    mu = np.zeros(world.dim)
    state, seen = FocalState(), FocalState()  # Focal's EMA; the sampler's own EMA of pass rates
    keys = bandit.keys(variant.saturation_key)
    history = [{"step": 0, **evaluate(bandit, cfg, mu, eval_rng)}]
    for step in range(1, cfg.steps + 1):
        p = None
        if variant.sampling == "unsaturated":
            p = unsaturated_probabilities(bandit.applies[train_prompts], bandit.weights, keys, seen.m)
        prompts = rng.choice(train_prompts, size=cfg.batch_prompts, replace=False, p=p)
        u, r, groups = sample(bandit, mu, prompts, cfg.group_size, rng)
        out = aggregate(variant.aggregator, r, bandit.weights, groups, bandit.categories, keys, state,
                        **variant.params)
        state = out.state
        if p is not None:
            seen = update_state(seen, r, groups, keys, cfg.sampling_beta)
        adv = grpo_advantages(out.rewards, groups)
        mu = mu + cfg.lr * (adv[:, None] * (u - mu)).mean(0) / world.sigma
        norm = np.linalg.norm(mu)
        if norm > world.radius:
            mu *= world.radius / norm
        if step % cfg.eval_every == 0:
            batch = step_metrics(r, bandit.weights, groups, bandit.categories, keys, out, bandit.pitfall)
            batch.update({f"criteria/{k}/constant": v for k, v in constant_by_key(r, groups, keys).items()})
            history.append({"step": step, **evaluate(bandit, cfg, mu, eval_rng),
                            **{f"batch/{k}": v for k, v in batch.items() if k.startswith("criteria/")}})
    return history


# ---- paired runs and their summary --------------------------------------------------

def run_paired(world: World, variants: dict, cfg: SimConfig, seeds: int) -> dict:
    """{variant name: [history per seed]}: seed s draws bandit s, and every variant trains on it with seed s."""
    results = {name: [] for name in variants}
    for seed in range(seeds):
        bandit = make_bandit(world, seed)
        for name, variant in variants.items():
            results[name].append(train(bandit, variant, cfg, seed))
    return results


def final(history: list[dict], metric: str, last: int = 3) -> float:
    """Mean of `metric` over the last `last` evaluations (held-out noise averaged)."""
    return float(np.mean([h[metric] for h in history[-last:]]))


def paired(values, reference) -> dict:
    """Per-seed values against the reference's on the same seeds: mean, std over seeds, mean difference,
    its standard error (std of the differences / sqrt(n)), wins (strictly higher) and n."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    d = values - reference
    n = len(d)
    return {"mean": float(values.mean()), "std": float(values.std()), "diff": float(d.mean()),
            "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "wins": int((d > 0).sum()), "n": n}
