"""PNG plots of evaluation and training (matplotlib, no display needed).

    pass_rates_plot(metrics["eval"], "reports/plots/pass_rates.png")        # per criterion key, each policy
    policies_plot(metrics["eval"], "reports/plots/policies.png")            # policies / aggregators side by side
    trajectories_plot("dvclive/train", "reports/plots/focal_trajectories.png")  # Focal's saturation and weight
    plot_trajectories(saturation, weight, "docs/img/focal_weights.png")         # the same from {key: series}
    audit_gap_plot("dvclive/train", "reports/train/audit_gap.png")           # the reward-hacking audit's gap
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from focal.core.atomic import atomic_path  # noqa: E402


def _save(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def pass_rates_plot(bench: dict, path, title: str = "") -> Path:
    """Horizontal bars: pass rate per criterion key, one bar per policy (e.g. before/after training)."""
    policies = list(bench["policies"])
    keys = sorted({k for p in policies for k in bench["policies"][p]["key"]})
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(keys) * max(1, len(policies)) / 1.5 + 1.5))
    height = 0.8 / len(policies)
    y = np.arange(len(keys))
    for i, p in enumerate(policies):
        rates = [bench["policies"][p]["key"].get(k, np.nan) for k in keys]
        ax.barh(y + i * height, rates, height=height, label=p)
    ax.set_yticks(y + height * (len(policies) - 1) / 2, keys)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("pass rate (share of rollouts meeting the criterion; pitfalls: not present)")
    ax.set_ylabel("criterion key")
    ax.set_title(title or "Per-criterion pass rate by policy")
    ax.legend(loc="lower right")
    return _save(fig, path)


def policies_plot(bench: dict, path, title: str = "") -> Path:
    """Grouped bars: rubric score, strict completion and the weakest category per policy (or aggregator)."""
    policies = list(bench["policies"])
    metrics = [("rubric_score", "rubric score"), ("strict_completion", "strict completion"),
               ("min_category", "min category pass rate")]
    fig, ax = plt.subplots(figsize=(1.6 * len(policies) + 3, 4))
    width = 0.8 / len(metrics)
    x = np.arange(len(policies))
    for i, (m, label) in enumerate(metrics):
        vals = [bench["policies"][p][m] for p in policies]
        err = [bench["policies"][p]["rubric_score_std"] for p in policies] if m == "rubric_score" else None
        ax.bar(x + i * width, vals, width=width, yerr=err, capsize=3, label=label)
    ax.set_xticks(x + width, policies)
    ax.set_ylim(0, 1)
    ax.set_xlabel("policy")
    ax.set_ylabel("value (higher is better)")
    ax.set_title(title or "Policies side by side on the same prompts, judge and seeds")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def read_series(folder, kind: str) -> dict[str, pd.Series]:
    """{criterion key: values by step} of a dvclive folder's criteria/<key>/<kind> (e.g. audit_gap)."""
    return _read_series(Path(folder), kind)


def _read_series(folder: Path, kind: str) -> dict[str, pd.Series]:
    out = {}
    for f in sorted((folder / "plots" / "metrics" / "criteria").glob(f"*/{kind}.tsv")):
        df = pd.read_csv(f, sep="\t")
        out[f.parent.name] = df.set_index("step")[df.columns[-1]]
    return out


def trajectories_plot(train_log, path, title: str = "") -> Path | None:
    """Two panels over training steps: Focal's saturation s and weight w'/w per criterion key, from a dvclive
    folder; None when it logged no weight (not Focal)."""
    folder = Path(train_log)
    return plot_trajectories(_read_series(folder, "saturation"), _read_series(folder, "weight"), path, title)


def plot_trajectories(sat: dict[str, pd.Series], weight: dict[str, pd.Series], path, title: str = "") -> Path | None:
    """The same two panels from {criterion key: values by step} series (e.g. the simulator's); None when empty."""
    if not weight:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, series, label in ((axes[0], sat, "saturation s (estimated)"), (axes[1], weight, "weight w'/w (1 = static)")):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 20 keys with distinct colours
        for key, s in series.items():
            ax.plot(s.index, s.values, marker="o", ms=3, label=key)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1.02)
    axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].set_title("Saturation per criterion key")
    axes[1].set_title("Reweighting per criterion key")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="criterion key")
    fig.suptitle(title or "Focal Reward during training")
    fig.tight_layout()
    return _save(fig, path)


def audit_gap_plot(train_log, path, title: str = "") -> Path | None:
    """The audit gap over training steps: criteria/<key>/audit_gap per key and audit/gap overall (focal/rewards/audit.py);
    None when nothing was audited."""
    folder = Path(train_log)
    series = read_series(folder, "audit_gap")
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for key, s in series.items():
        ax.plot(s.index, s.values, marker="o", ms=3, label=key)
    overall = folder / "plots" / "metrics" / "audit" / "gap.tsv"
    if overall.exists():
        df = pd.read_csv(overall, sep="\t")
        ax.plot(df.step, df[df.columns[-1]], color="black", lw=2, ls="--", label="all criteria")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training judge's pass rate - audit's")
    ax.set_title(title or "Audit gap per criterion key (above 0: the training judge passes what the audit fails)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="criterion key")
    return _save(fig, path)
