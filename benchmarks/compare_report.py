"""Tables and a picture from the evidence records (benchmarks/results/compare_training.json), no training.

    python -m benchmarks.compare_training --report        # prints markdown, draws compare_training.png

- one row per aggregator: mean and spread (std over seeds) of rubric score, strict
  completion, min category and min key on the held-out eval prompts, and the base
  policy's figures;
- paired differences focal minus each baseline: per prompt, the difference of the
  two policies' scores on the same seed, averaged over the seeds both have; mean
  and a 95% bootstrap interval over prompts;
- on how many paired seeds focal beats each baseline, figure by figure;
- the picture: per-criterion pass rate of base and of each aggregator (mean over
  seeds), and the training curves of the hardest criteria (lowest base pass rate):
  pass rate for every aggregator, saturation and weight for focal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIGURES = ("rubric_score", "strict_completion", "min_category", "min_key")


def latest_protocol(records: list[dict]) -> list[dict]:
    """The records of the most recent protocol (a changed setting starts a new set)."""
    if not records:
        return []
    key = records[-1]["protocol"]
    return [r for r in records if r["protocol"] == key]


def by_aggregator(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["aggregator"], []).append(r)
    return out


def paired(a: list[dict], b: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """b - a on the prompts and seeds both have: the mean over seeds and prompts of the per-prompt difference.

    Two 95% bootstrap intervals: ci_* resamples prompts (each prompt's difference averaged over the seeds), so
    it ignores how much seeds disagree; ci2_* resamples seeds and prompts both (a seed x prompt matrix, rows and
    columns drawn with replacement), so seed-to-seed spread widens it. With few seeds, ci2 is the honest one."""
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if not seeds:
        return {"seeds": 0}
    A, B = {r["seed"]: r for r in a}, {r["seed"]: r for r in b}
    prompts = sorted(set.intersection(*(set(A[s]["prompt_scores"]) & set(B[s]["prompt_scores"]) for s in seeds)))
    m = np.array([[B[s]["prompt_scores"][p] - A[s]["prompt_scores"][p] for p in prompts] for s in seeds])
    d = m.mean(axis=0) if prompts else np.array([])
    rng = np.random.default_rng(seed)
    boots, boots2 = [np.nan], [np.nan]
    if d.size:
        boots = [rng.choice(d, d.size).mean() for _ in range(n_boot)]
        boots2 = [m[np.ix_(rng.integers(0, len(seeds), len(seeds)), rng.integers(0, d.size, d.size))].mean()
                  for _ in range(n_boot)]
    wins = {f: sum(B[s][f] > A[s][f] for s in seeds) for f in FIGURES}
    return {"seeds": len(seeds), "prompts": int(d.size), "diff": float(d.mean()) if d.size else float("nan"),
            "ci_low": float(np.percentile(boots, 2.5)), "ci_high": float(np.percentile(boots, 97.5)),
            "ci2_low": float(np.percentile(boots2, 2.5)), "ci2_high": float(np.percentile(boots2, 97.5)), "wins": wins}


def _fmt(values) -> str:
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def tables(records: list[dict]) -> str:
    groups = by_aggregator(records)
    base = groups.get("base", [{}])[0]
    runs = {k: v for k, v in groups.items() if k != "base"}
    first = next(iter(runs.values()))[0] if runs else base
    lines = [f"{first.get('eval_prompts', '?')} eval prompts x {first.get('samples_per_prompt', '?')} samples, "
             f"{first.get('steps', '?')} GRPO steps per run; mean ± std over seeds.", "",
             "| policy | seeds | rubric score | strict completion | min category | min key | train min/run |",
             "|---|---|---|---|---|---|---|"]
    if base:
        lines.append(f"| base | - | {base['rubric_score']:.3f} | {base['strict_completion']:.3f} | "
                     f"{base['min_category']:.3f} | {base['min_key']:.3f} | - |")
    for agg, rs in runs.items():
        lines.append(f"| {agg} | {len(rs)} | " + " | ".join(_fmt([r[f] for r in rs]) for f in FIGURES) +
                     f" | {np.mean([r['train_seconds'] for r in rs]) / 60:.1f} |")
    if "focal" in runs:
        lines += ["", "Paired, focal minus baseline (rubric score per prompt and seed; 95% bootstrap intervals "
                  "resampling prompts only, and seeds and prompts both), and the seeds on which focal is higher:", "",
                  "| baseline | seeds | prompts | rubric score diff | 95% interval, prompts | 95% interval, seeds and "
                  "prompts | focal higher: score / strict / min category / min key |", "|---|---|---|---|---|---|---|"]
        for agg in [a for a in ["base", *runs] if a != "focal"]:
            other = [base] if agg == "base" else runs[agg]
            if agg == "base":  # the base policy has one evaluation: pair it with every focal seed
                other = [dict(base, seed=r["seed"]) for r in runs["focal"]]
            p = paired(other, runs["focal"])
            if p["seeds"]:
                w = p["wins"]
                lines.append(f"| {agg} | {p['seeds']} | {p['prompts']} | {p['diff']:+.3f} | "
                             f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | [{p['ci2_low']:+.3f}, {p['ci2_high']:+.3f}] | "
                             + " / ".join(f"{w[f]}/{p['seeds']}" for f in FIGURES) + " |")
    return "\n".join(lines)


def hardest_keys(base: dict, n: int = 4) -> list[str]:
    rates = base.get("key_pass_rates", {})
    return sorted(rates, key=lambda k: (rates[k], k))[:n]


def picture(records: list[dict], path) -> Path | None:
    """Per-criterion pass rates (base vs each aggregator) and the hardest criteria's training curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from focal.io import atomic_path

    groups = by_aggregator(records)
    if "base" not in groups or len(groups) < 2:
        return None
    base = groups["base"][0]
    runs = {k: v for k, v in groups.items() if k != "base"}
    keys = sorted(base["key_pass_rates"], key=lambda k: base["key_pass_rates"][k])
    hard = hardest_keys(base)
    fig, axes = plt.subplots(1 + len(hard), 1, figsize=(11, 3.2 * (1 + len(hard))))
    ax = axes[0]
    width = 0.8 / (1 + len(runs))
    x = np.arange(len(keys))
    ax.bar(x, [base["key_pass_rates"][k] for k in keys], width, label="base", color="0.6")
    for j, (agg, rs) in enumerate(runs.items(), start=1):
        ax.bar(x + j * width, [np.mean([r["key_pass_rates"].get(k, np.nan) for r in rs]) for k in keys], width,
               label=f"{agg} ({len(rs)} seeds)")
    ax.set_xticks(x + 0.4 - width / 2, keys, rotation=30, ha="right")
    ax.set_ylabel("pass rate (eval)")
    ax.set_title("Per-criterion pass rate on held-out prompts: base vs trained (mean over seeds)")
    ax.legend(fontsize=8, ncol=3)
    for ax, key in zip(axes[1:], hard):
        for agg, rs in runs.items():
            series = [r["curves"].get(f"criteria/{key}/pass_rate", []) for r in rs]
            steps, mean = window_means(series)
            if steps.size:
                ax.plot(steps, mean, label=f"{agg} pass rate")
        focal = runs.get("focal", [])
        for what, style in (("saturation", "--"), ("weight", ":")):
            steps, mean = window_means([r["curves"].get(f"criteria/{key}/{what}", []) for r in focal])
            if steps.size:
                ax.plot(steps, mean, style, color="k", label=f"focal {what}")
        ax.set_title(f"'{key}' during training (base pass rate {base['key_pass_rates'][key]:.2f}); "
                     "batch figures, mean per 10-step window over seeds")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def window_means(series: list[list], width: int = 10):
    """Mean over runs of [step, value] lists, in windows of `width` steps: a key is in a batch only when one of its
    prompts is (a few steps in ten at P=2), so runs rarely share a step; each run's window mean, then the mean over
    the runs that have one. Returns (window centres, means)."""
    series = [c for c in series if c]
    if not series:
        return np.array([]), np.array([])
    windows: dict[int, list[float]] = {}
    for c in series:
        per_run: dict[int, list[float]] = {}
        for s, v in c:
            per_run.setdefault(int(s) // width, []).append(v)
        for b, vs in per_run.items():
            windows.setdefault(b, []).append(float(np.mean(vs)))
    bins = sorted(windows)
    return np.array([b * width + width / 2 for b in bins]), np.array([np.mean(windows[b]) for b in bins])


def report(results_path) -> str:
    path = Path(results_path)
    if not path.exists():
        return f"{path}: no records yet; run `python -m benchmarks.compare_training`"
    records = latest_protocol(json.loads(path.read_text())["records"])
    png = picture(records, path.with_suffix(".png"))
    return tables(records) + (f"\n\nPicture: {png}" if png else "")
