"""Evaluation of one policy's judged rollouts, and paired comparisons (docs/method.md, "Evaluation metrics").

    per_prompt = prompt_scores(judgments)              # HealthBench score of each rollout, mean per prompt
    summary = evaluate_judgments(judgments, seed=0)    # rubric score, strict completion, balance, failures
    diff = paired_difference(a_scores, b_scores)       # same prompts: mean difference, bootstrap interval

Every figure is defined once, in focal/rewards/metrics.py (the training logs use the same
functions); this module adds what only evaluation needs: the bootstrap std of the
clipped mean over prompts (as simple-evals does), spreads, failed-judgment counts
and paired differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from focal.rewards.metrics import pass_rates, prompt_means, response_scores, rubric_summary, satisfaction_matrix


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
    """Failed judgments: total, and per criterion key and per failure kind (the `failure` column)."""
    bad = judgments[judgments.score.isna()]
    kinds = bad.failure.fillna("") if "failure" in bad else pd.Series(dtype=str)
    return {"failed_judgments": int(len(bad)),
            "failed_by_key": {str(k): int(v) for k, v in bad.key.value_counts().sort_index().items()},
            "failed_by_kind": {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}}


def evaluate_judgments(judgments: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every evaluation metric of one policy on one benchmark."""
    m = satisfaction_matrix(judgments)
    scores = prompt_scores(judgments)
    mean, std = clipped_mean_and_std(scores.to_numpy(), n_bootstrap, seed)
    summary = rubric_summary(m.r, m.w, m.pitfall, m.categories, m.groups, m.keys)
    cats, keys = pass_rates(m.r, m.categories), pass_rates(m.r, m.keys)
    cats = {k: v for k, v in cats.items() if not np.isnan(v)}
    keys = {k: v for k, v in keys.items() if not np.isnan(v)}
    return {
        "rubric_score": mean, "rubric_score_std": std, "prompts": int(len(scores)),
        "strict_completion": summary["rubric/strict_completion"],
        "min_category": summary["rubric/min_category"],
        "category_spread": (max(cats.values()) - min(cats.values())) if cats else float("nan"),
        "min_key": summary["rubric/min_key"],
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


# ---- running an evaluation: every policy on every benchmark ------------------------------

def policy_names(params) -> dict[str, tuple[str, str | None]]:
    """{policy: (folder, name to ask a remote endpoint for)}; with serve.base_url every policy needs its own name.

    'base' is asked for as serve.served_model_name (as the rollouts stage does), every other policy by its name."""
    e, s = params.evaluate, params.serve
    out = {p: (folder, s.served_model_name if p == "base" else p) for p, folder in e.policy_dirs(params.paths).items()}
    if s.base_url:
        names = [n for _, n in out.values()]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"evaluate.policies: two policies would be asked for as {dup!r} at serve.base_url; serve each "
                             "policy under its own name (vLLM --served-model-name or --lora-modules) and name it so")
    return out


JUDGE_COST = ("judge/calls", "judge/prompt_tokens", "judge/completion_tokens", "judge/tokens", "judge/cost_usd")


def evaluate_policies(params, benchmarks: dict) -> tuple[dict, "pd.DataFrame", "pd.DataFrame"]:
    """benchmarks: {name: (items, judge template or None)}. Returns (metrics, rollouts, judgments).

    Every policy is sampled with the same prompts, seed and sampling; all are judged by
    the same judge (the base model when served locally, never the policy being evaluated);
    every policy after the first is compared with the first on the same prompts."""
    from pathlib import Path

    from focal.judging.prompts import requests_for
    from focal.judging.spec import JudgeSpec
    from focal.judging.tables import judge_measured
    from focal.judging.tables import check_failure_budget
    from focal.serving.rollouts import Sampling, sample_policy

    e = params.evaluate
    sampling = Sampling(e.num_generations, e.temperature, 1.0, e.max_tokens, params.base.seed)
    rollouts, judgments, metrics, identities = [], [], {}, {}
    for policy, (folder, name) in policy_names(params).items():
        if not params.serve.base_url and not Path(folder).exists():
            raise ValueError(f"evaluate.policies: {policy!r} has no model folder {folder!r}; train it first or "
                             "remove it from evaluate.policies")
        for bench, (items, _) in benchmarks.items():
            df = sample_policy(items, folder, sampling, e.backend, e, params.serve, params.paths.rollout_cache, name)
            rollouts.append(df.assign(benchmark=bench, policy_name=policy))
            identities.setdefault(df.policy.iloc[0], policy)
            if identities[df.policy.iloc[0]] != policy:
                raise ValueError(f"evaluate.policies: {policy!r} and {identities[df.policy.iloc[0]]!r} are the same "
                                 f"model ({df.policy.iloc[0]}); a comparison of a model with itself says nothing")
    rollouts = pd.concat(rollouts, ignore_index=True)
    for bench, (items, template) in benchmarks.items():
        part = rollouts[rollouts.benchmark == bench]
        reqs = requests_for(part, {it.id: it for it in items}, f"evaluate ({bench})")
        df, judged = judge_measured(JudgeSpec.from_params(params, template), reqs)  # + the judge measured
        # each policy's rollout ids differ (they carry the policy's identity): its name comes with a join, not a string
        df = df.merge(part[["rollout_id", "policy_name"]], on="rollout_id", how="left", validate="many_to_one")
        df["benchmark"] = bench
        judgments.append(df)
        check_failure_budget(df, params.judge.max_failure_share, f"evaluate ({bench})")
        per_policy, scores = {}, {}
        for policy, g in df.groupby("policy_name", sort=False):
            per_policy[policy] = evaluate_judgments(g, e.n_bootstrap, params.base.seed)
            scores[policy] = prompt_scores(g)
        names = list(per_policy)
        metrics[bench] = {"policies": per_policy, "paired": {
            f"{b}_vs_{names[0]}": paired_difference(scores[names[0]], scores[b], e.n_bootstrap, params.base.seed)
            for b in names[1:]}, "judge": {k: v for k, v in judged.items()
                                          if k.split("/")[0] in ("agreement", "consistency") or k in JUDGE_COST}}
    return metrics, rollouts, pd.concat(judgments, ignore_index=True)


def report(metrics: dict, notes: list[str], params) -> str:
    """The evaluation report (markdown): per benchmark, the policies, paired differences, categories, failures."""
    e = params.evaluate
    lines = ["# Evaluation", "",
             f"Policies: {', '.join(e.policies)}; {e.num_generations} completions per prompt, temperature "
             f"{e.temperature}, seed {params.base.seed}; same prompts and judge for all.", ""]
    lines += [f"- {n}" for n in notes]
    for bench, m in metrics.items():
        lines += ["", f"## {bench}", "", "| policy | rubric score | strict completion | min category | category spread "
                  "| min key | failed judgments |", "|---|---|---|---|---|---|---|"]
        for p, v in m["policies"].items():
            lines.append(f"| {p} | {v['rubric_score']:.3f} ± {v['rubric_score_std']:.3f} | {v['strict_completion']:.3f} | "
                         f"{v['min_category']:.3f} | {v['category_spread']:.3f} | {v['min_key']:.3f} | "
                         f"{v['failed_judgments']} of {v['judgments']} |")
        for name, d in m["paired"].items():
            missing = f"; {d['missing']} prompts scored for only one policy are left out" if d.get("missing") else ""
            lines.append(f"\nPaired rubric score, {name.replace('_vs_', ' - ')}: {d['diff']:+.3f} "
                         f"(95% bootstrap interval {d['ci_low']:+.3f} to {d['ci_high']:+.3f}, {d['prompts']} prompts{missing})")
        cats = sorted({k for v in m["policies"].values() for k in v["category"]})
        lines += ["", "| category | " + " | ".join(m["policies"]) + " |", "|---|" + "---|" * len(m["policies"])]
        lines += [f"| {c} | " + " | ".join(f"{v['category'].get(c, float('nan')):.3f}" for v in m["policies"].values())
                  + " |" for c in cats]
        from focal.judging.agreement import MEASURES, markdown

        for prefix, what in MEASURES.items():  # agreement_share / consistency_share of the pairs, see focal/judging/agreement.py
            table = markdown(m.get("judge", {}), prefix)
            if table:
                lines += ["", f"{what[0].upper()}{what[1:]} ({prefix}/*):", "", table]
        failed = {p: v["failed_by_key"] for p, v in m["policies"].items() if v["failed_judgments"]}
        if failed:
            lines += ["", "Failed judgments (left out of every figure above), per policy and criterion key:", ""]
            lines += [f"- {p}: " + ", ".join(f"{k} {n}" for k, n in keys.items()) for p, keys in failed.items()]
    return "\n".join(lines) + "\n"
