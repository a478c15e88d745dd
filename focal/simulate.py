"""A cheap rubric bandit for comparing aggregators without an LLM.

The world: C criteria over a latent "behaviour" space R^D. A rollout is a point
u = mu + sigma * eps (mu is the policy); criterion c is met with probability
sigmoid(sharpness * (a_c . u + b_c + d_pc)), where
- b_c sets its difficulty (easy criteria start near saturation, hard ones near 0),
- a_c is its direction: criteria sharing a direction are correlated, criteria
  with opposite components conflict (e.g. "short" against "complete"),
- d_pc is a per-prompt offset, and each prompt uses a subset of the criteria.
The policy's capacity is bounded (|mu| <= radius), so gains on one criterion can
cost another. A training step samples P prompts x G rollouts, aggregates the
satisfaction matrix with the chosen aggregator, turns rewards into GRPO advantages
(group-normalised) and takes a REINFORCE step on mu.

    from focal.simulate import SimConfig, make_world, train
    world = make_world(SimConfig(), seed=0)
    curve = train(world, "focal", SimConfig(), seed=0)

The benchmark that runs every aggregator on the same seeds: python -m benchmarks.aggregators
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from focal.aggregate import FocalState, aggregate
from focal.metrics import rubric_summary

CATEGORY_WEIGHTS = {"essential": 4.0, "important": 2.0, "optional": 1.0, "pitfall": 3.0}


@dataclass(frozen=True)
class SimConfig:
    """Settings of the simulated world and of training in it."""

    dim: int = 6
    """latent behaviour dimensions"""
    n_criteria: int = 12
    """criteria in the world (a prompt uses a subset)"""
    n_prompts: int = 48
    """prompts in the world (the first quarter are held out for evaluation)"""
    criteria_per_prompt: tuple = (4, 8)
    """min and max criteria a prompt uses"""
    radius: float = 3.0
    """capacity: the policy mean stays inside this ball"""
    sharpness: float = 1.5
    """slope of the satisfaction probability"""
    sigma: float = 1.0
    """exploration noise of a rollout in latent space"""
    batch_prompts: int = 8
    """P: prompts per training step"""
    group_size: int = 8
    """G: rollouts per prompt"""
    steps: int = 150
    """training steps"""
    lr: float = 0.05
    """REINFORCE step size"""
    eval_every: int = 10
    """evaluate every this many steps"""
    eval_samples: int = 32
    """rollouts per held-out prompt at each evaluation"""
    aggregator_params: dict = field(default_factory=dict)
    """extra parameters per aggregator name, e.g. {"focal": {"gamma": 2.0}}"""


@dataclass(frozen=True)
class World:
    directions: np.ndarray  # [C, D]
    bias: np.ndarray  # [C]
    offsets: np.ndarray  # [P, C]
    applies: np.ndarray  # [P, C] bool
    categories: list  # [C]
    weights: np.ndarray  # [C]
    keys: list  # [C]
    pitfall: np.ndarray  # [C] bool: met means the bad behaviour is present


def make_world(cfg: SimConfig, seed: int) -> World:
    """Criteria of mixed difficulty, with correlated and conflicting pairs."""
    rng = np.random.default_rng(seed)
    C, D = cfg.n_criteria, cfg.dim
    directions = rng.normal(size=(C, D))
    # correlated pairs: criterion c+1 mostly shares c's direction
    for c in range(0, C - 1, 4):
        directions[c + 1] = 0.8 * directions[c] + 0.2 * directions[c + 1]
    # conflicting pairs: criterion c+3 mostly opposes c+2
    for c in range(2, C - 1, 4):
        directions[c + 1] = -0.8 * directions[c] + 0.2 * directions[c + 1]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    bias = np.linspace(2.5, -2.5, C)[rng.permutation(C)]  # easy ... hard
    cats = ["essential", "important", "optional", "pitfall"]
    categories = [cats[c % 4] for c in range(C)]
    pitfall = np.array([k == "pitfall" for k in categories])
    applies = np.zeros((cfg.n_prompts, C), dtype=bool)
    lo, hi = cfg.criteria_per_prompt
    for p in range(cfg.n_prompts):
        chosen = rng.choice(C, size=rng.integers(lo, hi + 1), replace=False)
        applies[p, chosen] = True
        if not applies[p, pitfall].any():  # every prompt has a pitfall
            applies[p, rng.choice(np.flatnonzero(pitfall))] = True
    return World(directions, bias, rng.normal(scale=0.5, size=(cfg.n_prompts, C)), applies, categories,
                 np.array([CATEGORY_WEIGHTS[k] for k in categories]), [f"k{c}" for c in range(C)], pitfall)


def sample(world: World, cfg: SimConfig, mu: np.ndarray, prompts: np.ndarray, G: int, rng):
    """G rollouts per prompt: latent points u [N, D], satisfaction r [N, C] (NaN where n/a), groups [N]."""
    prompts = np.repeat(prompts, G)
    u = mu + cfg.sigma * rng.normal(size=(len(prompts), cfg.dim))
    logits = cfg.sharpness * (u @ world.directions.T + world.bias + world.offsets[prompts])
    met = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
    r = np.where(world.pitfall, ~met, met).astype(float)  # pitfall: satisfaction = 1 - present
    r[~world.applies[prompts]] = np.nan
    return u, r, prompts


def evaluate(world: World, cfg: SimConfig, mu: np.ndarray, rng) -> dict:
    """Rubric score, strict completion and category balance on the held-out prompts."""
    held_out = np.arange(cfg.n_prompts // 4)
    _, r, groups = sample(world, cfg, mu, held_out, cfg.eval_samples, rng)
    return rubric_summary(r, world.weights, world.pitfall, world.categories, groups)


def grpo_advantages(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(R_i - mean_g R) / (std_g R + 1e-4); rollouts with no reward get 0."""
    adv = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = (groups == g) & ~np.isnan(rewards)
        if idx.sum() > 1:
            x = rewards[idx]
            adv[idx] = (x - x.mean()) / (x.std() + 1e-4)
    return adv


def train(world: World, aggregator: str, cfg: SimConfig, seed: int) -> list[dict]:
    """Train mu with `aggregator`; returns evaluations [{step, rubric/score, ...}] every eval_every steps.
    The same seed gives the same prompts and noise streams to every aggregator (paired)."""
    rng = np.random.default_rng(10_000 + seed)
    eval_rng = np.random.default_rng(20_000 + seed)
    mu = np.zeros(cfg.dim)
    state = FocalState()
    train_prompts = np.arange(cfg.n_prompts // 4, cfg.n_prompts)
    params = cfg.aggregator_params.get(aggregator, {})
    history = [{"step": 0, **evaluate(world, cfg, mu, eval_rng)}]
    for step in range(1, cfg.steps + 1):
        prompts = rng.choice(train_prompts, size=cfg.batch_prompts, replace=False)
        u, r, groups = sample(world, cfg, mu, prompts, cfg.group_size, rng)
        out = aggregate(aggregator, r, world.weights, groups, world.categories, world.keys, state, **params)
        state = out.state
        adv = grpo_advantages(out.rewards, groups)
        mu = mu + cfg.lr * (adv[:, None] * (u - mu)).mean(0) / cfg.sigma
        norm = np.linalg.norm(mu)
        if norm > cfg.radius:
            mu *= cfg.radius / norm
        if step % cfg.eval_every == 0:
            history.append({"step": step, **evaluate(world, cfg, mu, eval_rng)})
    return history
