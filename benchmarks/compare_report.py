"""Tables, tests over seeds and a picture from the evidence records, no training.

    python -m benchmarks.compare_training --report        # prints markdown, draws <results>.png

For the latest protocol in compare.results:
- checks first: every per-prompt score in [0, 1]; which criteria (instruction ids) can move at all
  (met by some responses and not by all, over every policy, and not at one rate in every run); how many
  prompts score 0 (or 1) on the first figure for every policy, so cannot tell the arms apart;
- one row per arm: mean ± sample std (ddof = 1) over seeds of each figure, and the base policy's;
- per seed, each arm's primary figure (then each pre-registered secondary) and the paired differences;
- for each pair of arms and each figure (the pre-registered primary first): the per-seed mean
  difference, its sample std, the paired t-test and exact sign-flip permutation test over seeds,
  the 95% t interval, and a 95% bootstrap interval resampling seeds and prompts; "no difference
  detected" whenever an interval holds zero;
- the power analysis: seeds needed to detect +compare.target on the primary at 80% power from the observed
  seed-level std of the difference, and what the seeds at hand can detect;
- exploratory, not pre-registered: where the gains land, per criterion (held-out strict pass rate of the
  base policy, each arm's mean over seeds, each arm's mean paired difference from the first arm);
- the picture: the primary figure per seed and arm, and per-group pass rates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from focal.evaluation.stats import detectable, interval_seeds_prompts, over_seeds, sample_std, seeds_needed

MIN_SEEDS = 3  # fewer paired seeds: no test, no power line ("too few seeds to test")
IFEVAL_FIGURES = ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose", "min_group")
RUBRIC_FIGURES = ("rubric_score", "strict_completion", "min_category", "min_key")


def latest_protocol(records: list[dict]) -> list[dict]:
    """The records of the most recent protocol (a changed setting starts a new set)."""
    if not records:
        return []
    key = records[-1]["protocol"]
    return [r for r in records if r["protocol"] == key]


def by_aggregator(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["seed"] is not None, r["seed"] or 0)):
        out.setdefault(r["aggregator"], []).append(r)
    return out


def figure(rec: dict, name: str) -> float:
    """A record's figure: IFEval's (rec['ifeval']) when the record has them, else the rubric figures."""
    src = rec.get("ifeval", rec)
    return float(src.get(name, rec.get(name, float("nan"))))


def prompt_scores(rec: dict, name: str) -> dict:
    """Per-prompt scores of a figure, for paired intervals (min_group has none: seed-level only)."""
    if "ifeval" in rec:
        return rec["ifeval"].get("prompt_scores", {}).get(name, {})
    return rec.get("prompt_scores", {}) if name == "rubric_score" else {}


def prompt_weights(rec: dict, name: str, prompts: list[str]):
    """Instruction-level figures pool instructions: each prompt weighs its number of instructions
    (`prompt_instructions`); every other figure weighs prompts equally (None)."""
    counts = rec.get("ifeval", {}).get("prompt_instructions")
    if not name.startswith("instruction_"):
        return None
    if not counts:
        raise ValueError(f"a record of {rec['aggregator']} seed {rec['seed']} has no ifeval.prompt_instructions, "
                         f"needed to pool {name} over instructions; rerun it (or add the counts from its rubric set)")
    return [counts[p] for p in prompts]


def compare(a: list[dict], b: list[dict], name: str) -> dict:
    """b - a on the seeds both have: per-seed differences and the tests over seeds (focal.evaluation.stats), and the
    bootstrap interval over seeds and prompts on the prompts both have."""
    A, B = {r["seed"]: r for r in a}, {r["seed"]: r for r in b}
    seeds = sorted(set(A) & set(B))
    d = [figure(B[s], name) - figure(A[s], name) for s in seeds]
    out = {"seeds_list": seeds, "per_seed": d, **over_seeds(d)}
    prompts = sorted(set.intersection(*(set(prompt_scores(A[s], name)) & set(prompt_scores(B[s], name)) for s in seeds))) \
        if seeds else []
    if prompts:
        m = [[prompt_scores(B[s], name)[p] - prompt_scores(A[s], name)[p] for p in prompts] for s in seeds]
        out["sp_low"], out["sp_high"] = interval_seeds_prompts(m, weights=prompt_weights(A[seeds[0]], name, prompts))
    else:
        out["sp_low"] = out["sp_high"] = float("nan")
    return out


def verdict(c: dict) -> str:
    """'no difference detected' unless both intervals exclude zero on the same side."""
    lows, highs = [c["t_low"], c["sp_low"]], [c["t_high"], c["sp_high"]]
    lows = [x for x in lows if not np.isnan(x)]
    highs = [x for x in highs if not np.isnan(x)]
    if c["seeds"] < MIN_SEEDS or not lows:
        return "too few seeds to test"
    if all(x > 0 for x in lows):
        return "higher (intervals exclude zero)"
    if all(x < 0 for x in highs):
        return "lower (intervals exclude zero)"
    return "no difference detected"


def _ms(values) -> str:
    v = [x for x in values if not np.isnan(x)]
    if not v:
        return "-"
    return f"{np.mean(v):.3f} ± {sample_std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def pass_rates(rec: dict) -> dict:
    """A record's held-out pass rate per criterion: IFEval's per instruction, else the rubric's per key."""
    return rec.get("ifeval", {}).get("instruction_pass_rates") or rec.get("key_pass_rates", {})


def range_checks(records: list[dict], figures) -> list[str]:
    """Lines saying whether every per-prompt score lies in [0, 1] and which criteria cannot move."""
    lines = []
    bad = [(r["aggregator"], r["seed"], f, p, v) for r in records for f in figures
           for p, v in prompt_scores(r, f).items() if not 0 <= v <= 1]
    lines.append("- every per-prompt score is in [0, 1]" if not bad else
                 f"- **{len(bad)} per-prompt scores leave [0, 1]**, e.g. {bad[0]}")
    rates: dict[str, list[float]] = {}
    for r in records:
        for k, v in pass_rates(r).items():
            rates.setdefault(k, []).append(v)
    never = sorted(k for k, v in rates.items() if max(v) == 0)
    always = sorted(k for k, v in rates.items() if min(v) == 1)
    same = sorted(k for k, v in rates.items() if 0 < v[0] < 1 and len(v) > 1 and max(v) == min(v))
    lines.append(f"- criteria met by no policy in any run: {', '.join(never) or 'none'}")
    lines.append(f"- criteria met by every response of every policy: {', '.join(always) or 'none'}")
    lines.append(f"- criteria with the same pass rate in every run (no policy moved them): {', '.join(same) or 'none'}")
    first = figures[0]
    scores: dict[str, list[float]] = {}
    for r in records:
        for p, v in prompt_scores(r, first).items():
            scores.setdefault(p, []).append(v)
    if scores:
        low = sum(max(v) == 0 for v in scores.values())
        top = sum(min(v) == 1 for v in scores.values())
        lines.append(f"- prompts whose {first} is 0 for every policy in every run: {low} of {len(scores)}; "
                     f"1 for every policy in every run: {top} (neither kind can tell the arms apart)")
    return lines


def tables(records: list[dict], primary: str = "prompt_strict", secondary=(), primary_label: str = "primary",
           target: float = 0.03) -> str:
    """The record tables: per policy, per seed on the primary, the paired tests over seeds for every pair of arms
    and figure (the primary labelled `primary_label`, pre-registered secondaries `secondary`), and the power."""
    groups = by_aggregator(records)
    base = groups.get("base", [{}])[0]
    runs = {k: v for k, v in groups.items() if k != "base"}
    ifeval = any("ifeval" in r for r in records)
    figures = IFEVAL_FIGURES if ifeval else RUBRIC_FIGURES
    if primary not in figures:
        primary = figures[0]
    others = [f for f in figures if f != primary]
    first = next(iter(runs.values()))[0] if runs else base
    trained = first.get("steps") != "-"  # evaluate_on_report: the policies of a protocol on another file
    lines = [f"Protocol {first.get('protocol', '?')}: {first.get('eval_prompts', '?')} "
             f"{'held-out ' if trained else ''}prompts x {first.get('samples_per_prompt', '?')} samples"
             + (f", {first.get('steps', '?')} GRPO steps per run" if trained else "") +
             (f". {primary_label.capitalize()} (pre-registered): {primary}." if primary_label else
              f". Nothing pre-registered for this file; first: {primary}."), "", "Checks:",
             *range_checks(records, figures), "",
             "| policy | seeds | " + " | ".join(figures) + " | train min/run |",
             "|---|---|" + "---|" * len(figures) + "---|"]
    if base:
        lines.append("| base | - | " + " | ".join(f"{figure(base, f):.3f}" for f in figures) + " | - |")
    for agg, rs in runs.items():
        lines.append(f"| {agg} | {len(rs)} | " + " | ".join(_ms([figure(r, f) for r in rs]) for f in figures) +
                     (f" | {np.mean([r['train_seconds'] for r in rs]) / 60:.1f} |" if trained else " | - |"))
    lines.append("\nmean ± sample std (ddof = 1) over seeds.")
    if not runs:
        return "\n".join(lines)
    arms = list(runs)
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    by = {agg: {r["seed"]: r for r in rs} for agg, rs in runs.items()}
    for f in (primary, *[f for f in others if f in secondary]):
        lines += ["", f"Per seed, {f}:", "",
                  "| seed | " + " | ".join(arms) + " | " + " | ".join(f"{b} - {a}" for a, b in pairs) + " |",
                  "|---|" + "---|" * (len(arms) + len(pairs))]
        for s in seeds:
            vals = [figure(by[a][s], f) if s in by[a] else np.nan for a in arms]
            diffs = [figure(by[b][s], f) - figure(by[a][s], f) if s in by[a] and s in by[b] else np.nan
                     for a, b in pairs]
            lines.append(f"| {s} | " + " | ".join("-" if np.isnan(v) else f"{v:.3f}" for v in vals) + " | "
                         + " | ".join("-" if np.isnan(v) else f"{v:+.3f}" for v in diffs) + " |")
    lines += ["", "Paired tests over seeds (b - a): mean and sample std of the per-seed difference, paired t-test "
              "and exact sign-flip permutation test (two-sided), 95% t interval, 95% bootstrap interval resampling "
              "seeds and prompts:", "",
              "| b - a | figure | seeds | b higher | mean diff | std | t p | sign-flip p | 95% t interval | "
              "95% seeds x prompts | reading |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, b in pairs:
        for f in (primary, *others):
            c = compare(runs[a], runs[b], f)
            if not c["seeds"]:
                continue
            sp = "-" if np.isnan(c["sp_low"]) else f"[{c['sp_low']:+.3f}, {c['sp_high']:+.3f}]"
            ti = "-" if np.isnan(c["t_low"]) else f"[{c['t_low']:+.3f}, {c['t_high']:+.3f}]"
            label = f" ({primary_label})" if f == primary and primary_label else " (secondary)" if f in secondary else ""
            lines.append(f"| {b} - {a} | {f}{label} | {c['seeds']} | {c['higher']}/"
                         f"{c['seeds']} | {c['mean']:+.3f} | {c['std']:.3f} | {c['t_p']:.3f} | {c['sign_flip_p']:.3f} | "
                         f"{ti} | {sp} | {verdict(c)} |")
    lines += ["", power_lines(runs, primary, target)]
    return "\n".join(lines)


def criterion_lines(records: list[dict]) -> str:
    """Exploratory (not pre-registered): per criterion, hardest for the base policy first, the base policy's pass
    rate, each arm's mean over seeds and, for every later arm, its mean paired difference from the first arm with
    the seeds on which it is higher. Shows whether reweighting moved the gains toward the hard criteria."""
    groups = by_aggregator(records)
    base = pass_rates(groups.get("base", [{}])[0])
    runs = {k: {r["seed"]: pass_rates(r) for r in v} for k, v in groups.items() if k != "base"}
    if not runs or not base:
        return ""
    arms = list(runs)
    ref, others = arms[0], arms[1:]
    lines = ["Exploratory, not pre-registered: held-out strict pass rate per criterion, hardest for the base policy "
             f"first; each arm's mean over seeds, and b - {ref} as the mean paired difference (seeds where b is "
             "higher / paired seeds):", "",
             "| criterion | base | " + " | ".join(arms) + " | " + " | ".join(f"{b} - {ref}" for b in others) + " |",
             "|---|---|" + "---|" * (len(arms) + len(others))]
    for key in sorted(base, key=lambda k: (base[k], k)):
        means = [np.mean([v[key] for v in runs[a].values() if key in v]) if any(key in v for v in runs[a].values())
                 else np.nan for a in arms]
        diffs = []
        for b in others:
            d = [runs[b][s][key] - runs[ref][s][key] for s in runs[b]
                 if s in runs[ref] and key in runs[b][s] and key in runs[ref][s]]
            diffs.append(f"{np.mean(d):+.3f} ({sum(x > 0 for x in d)}/{len(d)})" if d else "-")
        lines.append(f"| {key} | {base[key]:.3f} | " + " | ".join("-" if np.isnan(m) else f"{m:.3f}" for m in means)
                     + " | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def power_line(a: str, b: str, c: dict, target: float) -> str:
    """One pair's power line: from the observed seed-level std of the difference (c: compare's output), the seeds
    that detect +target at 80% power, the seeds still to run per arm (never negative), and what the seeds at hand
    detect; "too few seeds to test" below MIN_SEEDS paired seeds, "no spread" when every difference is equal."""
    n = c["seeds"]
    if n < MIN_SEEDS:
        return f"- {b} - {a}: {n} paired seed{'s' if n != 1 else ''}: too few seeds to test (at least {MIN_SEEDS})"
    if not c["std"] > 0:
        return f"- {b} - {a}: {n} paired seeds, every difference equal: no spread to compute power from"
    need = seeds_needed(c["std"], target)
    more = max(0, need - n)
    return (f"- {b} - {a}: seed-level std of the difference {c['std']:.3f} over {n} seeds -> "
            f"{need if need <= 1000 else '> 1000'} seeds needed for +{target}"
            f" ({'reached' if more == 0 else f'{more} more per arm' if need <= 1000 else 'out of reach'}); "
            f"{n} seeds detect {detectable(n, c['std']):.3f} at 80% power")


def power_lines(runs: dict, primary: str, target: float = 0.03) -> str:
    """For every pair of arms (power_line): seeds needed for +target (compare.target) on the primary at 80% power,
    and the difference the seeds run so far detect; pairs with fewer than MIN_SEEDS paired seeds say so."""
    arms = list(runs)
    out = [f"Power (paired t, two-sided, alpha 0.05, 80%) for a true difference of +{target} on {primary}:", ""]
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            out.append(power_line(a, b, compare(runs[a], runs[b], primary), target))
    return "\n".join(out) if len(out) > 2 else ""


def evaluate_on_report(records: list[dict], key: str, secondary=()) -> str:
    """IFEval's four metrics per arm (mean ± sample std over seeds) and the paired tests, for --evaluate-on;
    `secondary`: the figures pre-registered for this file (`ifbench:<figure>` of compare.secondary)."""
    records = [r for r in records if r["protocol"] == key]
    if not records:
        return "no policy evaluated"
    first = records[0]
    m = first["ifeval"]
    differ = [f"{r['aggregator']} seed {r['seed']}" for r in records
              if (r["ifeval"]["responses"], r["ifeval"]["unavailable"]) != (m["responses"], m["unavailable"])]
    if differ:
        raise ValueError(f"records of {first['file']} scored on different responses than base's ({', '.join(differ)}): "
                         "run --evaluate-on on it again to score every kept completion with the same checkers")
    head = (f"{first['file']} ({first['registry']} checkers), {first['samples_per_prompt']} sample(s) per prompt; "
            f"{m['responses']} responses scored, {m['unavailable_prompts']} left out (an instruction whose checker "
            f"cannot run here: {', '.join(m['unavailable']) or 'none'})\n\n")
    primary = "prompt_strict" if "prompt_strict" in secondary or not secondary else secondary[0]
    return head + tables([dict(r, train_seconds=0.0, steps="-",
                               eval_prompts=len(r["ifeval"]["prompt_scores"]["prompt_strict"])) for r in records],
                         primary, secondary, "secondary" if secondary else "")


def picture(records: list[dict], path, primary: str = "prompt_strict") -> Path | None:
    """The primary figure per seed and arm (lines join a seed's arms), the paired differences that are tested
    (per seed, with the 95% t interval), and per-group pass rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from focal.core.atomic import atomic_path

    groups = by_aggregator(records)
    runs = {k: v for k, v in groups.items() if k != "base"}
    if not runs or not any("ifeval" in r for r in records):
        return None
    arms = list(runs)
    base = groups.get("base", [None])[0]
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(17, 4.2))
    by = {a: {r["seed"]: r for r in rs} for a, rs in runs.items()}
    for s in sorted({r["seed"] for rs in runs.values() for r in rs}):
        xs = [i for i, a in enumerate(arms) if s in by[a]]
        ax1.plot(xs, [figure(by[arms[i]][s], primary) for i in xs], "o-", color="0.6", alpha=0.6, lw=0.8)
    for i, a in enumerate(arms):
        v = [figure(r, primary) for r in runs[a]]
        ax1.errorbar(i + 0.08, np.mean(v), yerr=sample_std(v) if len(v) > 1 else 0, fmt="s", color="C3", capsize=4)
    if base is not None:
        ax1.axhline(figure(base, primary), ls="--", color="k", lw=0.8, label="base policy")
        ax1.legend(fontsize=8)
    ax1.set_xticks(range(len(arms)), arms)
    ax1.set_ylabel(f"{primary} (held-out)")
    ax1.set_title("Per seed (grey, a seed's arms joined) and mean ± sample std (red)")
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    for k, (a, b) in enumerate(pairs):
        d = [figure(by[b][s], primary) - figure(by[a][s], primary) for s in by[a] if s in by[b]]
        ax3.plot([k] * len(d), d, "o", color="0.6", alpha=0.6)
        c = compare(runs[a], runs[b], primary)
        if c["seeds"] > 1:
            ax3.errorbar(k + 0.12, c["mean"], yerr=[[c["mean"] - c["t_low"]], [c["t_high"] - c["mean"]]], fmt="s",
                         color="C3", capsize=4)
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set_xticks(range(len(pairs)), [f"{b} -\n{a}" for a, b in pairs], fontsize=8)
    ax3.set_ylabel(f"paired difference in {primary}")
    ax3.set_title("Per seed (grey) and mean with 95% t interval (red)")
    names = sorted({g for r in records for g in r.get("ifeval", {}).get("group_pass_rates", {})})
    width = 0.8 / (len(arms) + 1)
    x = np.arange(len(names))
    if base is not None:
        ax2.bar(x, [base["ifeval"]["group_pass_rates"].get(g, np.nan) for g in names], width, color="0.6", label="base")
    for j, a in enumerate(arms, start=1):
        ax2.bar(x + j * width, [np.mean([r["ifeval"]["group_pass_rates"].get(g, np.nan) for r in runs[a]])
                                for g in names], width, label=f"{a} ({len(runs[a])} seeds)")
    ax2.set_xticks(x + 0.4 - width / 2, names, rotation=25, ha="right", fontsize=8)
    ax2.set_ylabel("strict pass rate (held-out)")
    ax2.set_title("Pass rate per instruction group")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def report(results_path, primary: str = "prompt_strict", secondary=(), target: float = 0.03, settings=None) -> str:
    """The tables of the latest protocol's records, then those of every --evaluate-on file evaluated for it
    (IFBench's with the `ifbench:` secondaries labelled), the picture, and, given `settings` (the compare section:
    recheck_results, confirm_arms, seeds, confirm_seeds, hard_instructions, preregistration), round two's report
    from the recheck records of the same protocol."""
    path = Path(results_path)
    if not path.exists():
        return f"{path}: no records yet; run `python -m benchmarks.compare_training`"
    everything = latest_protocol(json.loads(path.read_text())["records"])
    # round one's tables: the protocol's seeds (compare.seeds); round two's seeds are read in its own report
    records = [r for r in everything if settings is None or r["seed"] is None or r["seed"] in settings.seeds]
    png = picture(records, path.with_suffix(".png"), primary)
    held_out = [f for f in secondary if ":" not in f]
    text = tables(records, primary, held_out, target=target)
    where = criterion_lines(records)
    text += f"\n\n{where}" if where else ""
    text += f"\n\nPicture: {png}" if png else ""
    key = records[-1]["protocol"] if records else None
    for store in sorted(path.parent.glob("evaluate_on-*.json")):
        evaluated = [r for r in json.loads(store.read_text())["records"] if r["protocol"] == key]
        if not evaluated:
            continue
        registry = evaluated[0].get("registry", "")
        mine = tuple(f.split(":", 1)[1] for f in secondary if f.startswith(f"{registry}:"))
        text += f"\n\n## {store.name}\n\n" + evaluate_on_report(evaluated, key, mine)
    recheck_path = Path(settings.recheck_results) if settings is not None else None
    if recheck_path is not None and recheck_path.exists():
        rechecked = [r for r in json.loads(recheck_path.read_text())["records"] if r["protocol"] == key]
        if rechecked:
            text += f"\n\n## {recheck_path.name}\n\n" + round_two(
                rechecked, everything, settings.confirm_arms, settings.seeds, settings.confirm_seeds,
                settings.hard_instructions, settings.preregistration, target)
    return text


# ---- round two (docs/evidence.md): the recheck evaluation, H2 and H1' with Holm's correction -------------------

def hard_pass_rate(rec: dict, hard) -> float:
    """H2's figure: the unweighted mean over the `hard` instructions of each one's strict pass rate (NaN when a record
    lacks one of them)."""
    rates = rec.get("ifeval", {}).get("instruction_pass_rates", {})
    return float(np.mean([rates[h] for h in hard])) if all(h in rates for h in hard) else float("nan")


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjusted p-values: sorted ascending, the i-th (from 0) times (m - i), running maximum,
    capped at 1. {name: p} -> {name: adjusted p}."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    out, running = {}, 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[k]))
        out[k] = running
    return out


def provenance_lines(records: list[dict], seeds, prereg: str, git=None) -> list[str]:
    """Whether every training record of the confirmatory `seeds` finished after the pre-registration commit and came
    from code that descends from it. `git(*args)` runs git in the repository and returns (exit code, stdout)."""
    import subprocess

    def run_git(*args):
        try:
            p = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                               text=True, timeout=30)
            return p.returncode, p.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return 1, ""

    git = git or run_git
    code, when = git("show", "-s", "--format=%cI", prereg)
    if code != 0 or not when:
        return [f"- pre-registration {prereg[:12]}: not in this repository's history, so the order cannot be checked"]
    import datetime

    t0 = datetime.datetime.fromisoformat(when)
    new = [r for r in records if r.get("seed") in seeds and r["aggregator"] != "base"]
    late, foreign = [], []
    for r in new:
        name = f"{r['aggregator']} seed {r['seed']}"
        done = r.get("finished_at")
        if not done or datetime.datetime.fromisoformat(done) <= t0:
            late.append(name)
        commit = (r.get("code") or {}).get("commit")
        if not commit or git("merge-base", "--is-ancestor", prereg, commit)[0] != 0 or (r.get("code") or {}).get("dirty"):
            foreign.append(name)
    lines = [f"- pre-registration {prereg[:12]} committed {when}; {len(new)} training records of the confirmatory "
             f"seeds: {len(new) - len(late)} finished after it, {len(new) - len(foreign)} from a clean commit that "
             "descends from it"]
    if late:
        lines.append(f"- **finished before the pre-registration, or undated**: {', '.join(late)}")
    if foreign:
        lines.append(f"- **not from a clean descendant of the pre-registration**: {', '.join(foreign)}")
    return lines


def hypothesis_row(name: str, figure_name: str, c: dict, wanted, adjusted: float | None) -> str:
    have = c["seeds"]
    if have < len(wanted):
        return (f"| {name} | {figure_name} | {have} of {len(wanted)} | - | - | - | - | - | - | incomplete: not read |")
    if have < MIN_SEEDS:
        return (f"| {name} | {figure_name} | {have} | {c['higher']}/{have} | {c['mean']:+.4f} | - | - | - | - | - | "
                "too few seeds to test |")
    ti = f"[{c['t_low']:+.3f}, {c['t_high']:+.3f}]" if not np.isnan(c["t_low"]) else "-"
    holds = adjusted is not None and adjusted < 0.05
    reading = ("holds" if holds else "does not hold") + (
        "; the sign-flip test disagrees" if holds != (c["sign_flip_p"] < 0.05) else "")
    adj = f"{adjusted:.4f}" if adjusted is not None else "-"
    return (f"| {name} | {figure_name} | {have} | {c['higher']}/{have} | {c['mean']:+.4f} | {c['std']:.4f} | "
            f"{c['t_p']:.4f} | {adj} | {c['sign_flip_p']:.4f} | {ti} | {reading} |")


def round_two(recheck: list[dict], training: list[dict], arms, old_seeds, confirm_seeds, hard, prereg: str,
              target: float = 0.03, git=None) -> str:
    """Round two's report from the recheck records of one protocol: the checks, the per-arm and per-seed tables and
    tests of the recheck evaluation (tables), then H2 (hard_pass_rate, confirmatory seeds) and H1' (prompt_strict,
    every seed) with Holm's correction across the two, and the pre-registration's order (provenance_lines)."""
    a, b = arms
    recs = [dict(r, steps="-", train_seconds=0.0, ifeval={**r["ifeval"], "hard_pass_rate": hard_pass_rate(r, hard)})
            for r in recheck]
    samples = sorted({r["samples_per_prompt"] for r in recs})
    seconds = [r["eval_seconds"] for r in recs if r.get("eval_seconds")]
    took = f"; one evaluation took {np.mean(seconds) / 60:.1f} min on average ({min(seconds) / 60:.1f}-" \
           f"{max(seconds) / 60:.1f}, eval_seconds)" if seconds else ""
    head = [f"Round two: the recheck evaluation ({', '.join(map(str, samples))} samples per held-out prompt), "
            f"{len(recs)} policies{took}.", "", "Pre-registration:", *provenance_lines(training, confirm_seeds, prereg, git), ""]
    text = "\n".join(head) + tables(recs, "prompt_strict", ("hard_pass_rate",), primary_label="H1' figure", target=target)
    by = by_aggregator(recs)
    ra, rb = by.get(a, []), by.get(b, [])
    all_seeds = sorted(set(old_seeds) | set(confirm_seeds))
    c2 = compare([r for r in ra if r["seed"] in confirm_seeds], [r for r in rb if r["seed"] in confirm_seeds],
                 "hard_pass_rate")
    c1 = compare([r for r in ra if r["seed"] in all_seeds], [r for r in rb if r["seed"] in all_seeds], "prompt_strict")
    complete = c2["seeds"] == len(confirm_seeds) and c1["seeds"] == len(all_seeds)
    testable = complete and min(c2["seeds"], c1["seeds"]) >= MIN_SEEDS
    adjusted = holm({"H2": c2["t_p"], "H1'": c1["t_p"]}) if testable else {}
    lines = ["", f"The pre-registered tests, {b} - {a}, paired by seed (two-sided; Holm's correction across H2 and H1' on "
             "the t-test's p; a hypothesis holds when its Holm-adjusted p is below 0.05; the sign-flip test beside):", "",
             "| hypothesis | figure | seeds | b higher | mean diff | std | t p | Holm p | sign-flip p | 95% t interval | "
             "reading |", "|---|---|---|---|---|---|---|---|---|---|---|",
             hypothesis_row(f"H2 (seeds {confirm_seeds[0]}-{confirm_seeds[-1]})", "hard_pass_rate", c2, confirm_seeds,
                            adjusted.get("H2")),
             hypothesis_row(f"H1' (seeds {all_seeds[0]}-{all_seeds[-1]})", "prompt_strict", c1, all_seeds,
                            adjusted.get("H1'"))]
    if not complete:
        lines += ["", f"Incomplete: H2 has {c2['seeds']} of {len(confirm_seeds)} paired seeds, H1' {c1['seeds']} of "
                  f"{len(all_seeds)}; neither is read, and Holm's correction applies once both are complete."]
    lines += ["", "Power for H2 from the seeds at hand:", power_line(a, b, c2, target)]
    return text + "\n".join(lines)


# ---- docs/evidence.md's "What was found", round one: every figure printed here, none typed by hand ---------------

def summary(records: list[dict], seeds, primary: str = "prompt_strict", target: float = 0.03) -> str:
    """The round-one bullets of docs/evidence.md's "What was found", from the training records of `seeds` (the
    protocol's compare.seeds): training against the base policy (counts, no test), each pair of arms tested on the
    primary, and what the seeds can detect (power_line's figures, and the power at +target), per pair; arms with
    fewer than MIN_SEEDS seeds are named as too few to test. `python -m benchmarks.compare_training --summary`."""
    from focal.evaluation.stats import power

    records = [r for r in records if r["seed"] is None or r["seed"] in seeds]
    groups = by_aggregator(records)
    base = groups.get("base", [None])[0]
    runs = {k: v for k, v in groups.items() if k != "base"}
    main = {k: v for k, v in runs.items() if len(v) >= MIN_SEEDS}
    few = {k: len(v) for k, v in runs.items() if len(v) < MIN_SEEDS}
    out = []
    if base is not None and main:
        means = ", ".join(f"{np.mean([figure(r, primary) for r in rs]):.3f} ({a})" for a, rs in main.items())
        above = ", ".join(f"{sum(figure(r, primary) > figure(base, primary) for r in rs)} of {len(rs)} seeds ({a})"
                          for a, rs in main.items())
        out.append(f"- **Training against the base policy.** Held-out {primary} goes from the base policy's "
                   f"{figure(base, primary):.3f} to {means} (mean over seeds); a run is above the base policy on "
                   f"{above}. The base policy is one evaluation, so these are counts, not a paired test.")
    arms = list(main)
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    tested = [(a, b, compare(main[a], main[b], primary)) for a, b in pairs]
    if tested:
        out.append(f"- **Between the arms**, on {primary}: " + "; ".join(
            f"{b} - {a} {c['mean']:+.3f} (95% t interval [{c['t_low']:+.3f}, {c['t_high']:+.3f}], {c['higher']}/"
            f"{c['seeds']} seeds higher, {verdict(c)})" for a, b, c in tested) + ".")
        out.append(f"- **What these seeds can see**, at 80% power (paired t, alpha 0.05): " + "; ".join(
            f"{b} - {a}: {c['seeds']} seeds detect {detectable(c['seeds'], c['std']):.3f}, and a true +{target} "
            f"would be detected {power(c['seeds'], c['std'], target):.0%} of the time ({seeds_needed(c['std'], target)}"
            f" seeds for 80%)" for a, b, c in tested if c["std"] > 0) + ".")
    if few:
        out.append("- Too few seeds to test (fewer than " + f"{MIN_SEEDS}): " +
                   ", ".join(f"{a} {n} seed{'s' if n != 1 else ''}" for a, n in few.items()) +
                   "; their rows are in the tables, nothing is read from them.")
    return "\n".join(out)
