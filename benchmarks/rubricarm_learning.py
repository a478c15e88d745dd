"""Does Rubric-ARM learn? Held-out preference accuracy of the untrained judge, after SFT, and after SFT and the
alternating GRPO, over seeds.

    python -m benchmarks.rubricarm_learning [--params params.yaml] [--seeds 0 1 2]   # run what is missing
    python -m benchmarks.rubricarm_learning --report                               # the tables, from the records

For each seed (default `rubricarm.seeds`), focal/training/rubricarm.py draws the seed's pairs (`prepare_run`: fresh
rollouts of `rubricarm.rubric_set`'s prompts, labelled by their checkers) and runs the three phases (`learn`):
`untrained`, `sft`, `arm`, each measured on the held-out pairs. Each (seed, phase) becomes one record in
`rubricarm.results` (atomic write), with the settings' hash (`protocol`), when it finished and from which commit.
A (seed, phase) recorded under the same protocol is skipped; phases finished but not recorded are read back from
`paths.rubricarm_work` (a killed run resumes after its last finished phase). Everything else is `rubricarm.*` in
params.yaml; `rubricarm.enabled` is the stage's switch and is not read here.

`--report` prints, per phase, mean ± sample std over seeds of each figure, and each trained phase against the
untrained judge, paired by seed (t interval over seeds, focal/evaluation/stats.py). docs/rubricarm.md explains the
figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from focal.config import Params, load_params
from focal.core.atomic import write_json
from focal.core.cache import content_key

TABLES = {  # the report's tables: title, columns in order
    "The judge with the oracle rubrics": ("heldout_accuracy", "well_formed", "accuracy_ab", "accuracy_ba",
                                          "accuracy_both", "forced_accuracy", "forced_prefers_a", "criteria_agreement",
                                          "heldout_pairs", "train_pairs", "minutes"),
    "The generator: the same phase's judge with its rubrics, the oracle rubrics and no rubric, on the same pairs": (
        "rubric_valid", "generated_accuracy", "oracle_subset_accuracy", "norubric_accuracy", "generator_pairs")}
PAIRED = ("heldout_accuracy", "accuracy_both", "forced_accuracy", "generated_accuracy")  # tested against untrained


def starts(params: Params) -> dict:
    """The folders every phase starts from (generator, judge) and the one whose rollouts make the pairs."""
    a, base = params.rubricarm, params.paths.base_model
    return {"generator": a.generator or base, "judge": a.judge or base, "policy": a.policy or base}


def protocol(params: Params) -> str:
    """The measurement's identity: the settings, the starting models' weights and the rubric set (not the seed)."""
    from focal.rubrics.sets import load_rubric_set
    from focal.serving.weights import fingerprint
    from focal.training.rubricarm import settings

    items = load_rubric_set(Path(params.paths.rubrics) / params.rubricarm.rubric_set).items
    return content_key("rubricarm-learning", settings(params.rubricarm),
                       {k: fingerprint(v) for k, v in starts(params).items()}, [repr(it) for it in items])[:16]


def recorded(records: list[dict], seed: int, phase: str, key: str) -> bool:
    return any((r["seed"], r["phase"], r["protocol"]) == (seed, phase, key) for r in records)


def save_record(path, record: dict) -> None:
    from benchmarks.compare_training import load_records

    keep = [r for r in load_records(path) if (r["seed"], r["phase"], r["protocol"]) !=
            (record["seed"], record["phase"], record["protocol"])]
    write_json(path, {"about": __doc__.split("\n\n")[0], "records": keep + [record]})


def run(params: Params, seeds=None) -> list[dict]:
    """Every missing (seed, phase) of the protocol, recorded as it finishes; returns the records."""
    from benchmarks.compare_training import load_records, provenance
    from focal.training.rubricarm import PHASES, learn, prepare_run, run_key

    a, key, begin = params.rubricarm, protocol(params), starts(params)
    for seed in seeds if seeds is not None else a.seeds:
        if all(recorded(load_records(a.results), seed, phase, key) for phase in PHASES):
            print(f"rubricarm_learning: seed {seed}: recorded, skipped")
            continue
        arm = prepare_run(a, params.paths, params.rollouts, params.serve, seed)
        work = Path(params.paths.rubricarm_work) / run_key(arm, begin["generator"], begin["judge"])
        print(f"rubricarm_learning: seed {seed}: {(arm.pairs.split == 'train').sum()} train pairs, "
              f"{(arm.pairs.split == 'heldout').sum()} held out; work folder {work}")
        for phase, figures in learn(arm, begin["generator"], begin["judge"], work):
            if not recorded(load_records(a.results), seed, phase, key):
                save_record(a.results, {"seed": seed, "phase": phase, "protocol": key, "work": str(work), **figures,
                                        **provenance()})
    return load_records(a.results)


def report(records: list[dict]) -> str:
    """Per phase, mean ± sample std over seeds; each trained phase minus the untrained judge, paired by seed. Only
    the protocol of the newest record."""
    import math

    from benchmarks.compare_report import _ms
    from focal.evaluation.stats import over_seeds
    from focal.training.rubricarm import PHASES

    if not records:
        return "rubricarm_learning: no records yet: run `python -m benchmarks.rubricarm_learning`"
    key = max(records, key=lambda r: r.get("finished_at", "")).get("protocol")
    mine = [r for r in records if r.get("protocol") == key]
    value = {(r["seed"], r["phase"]): r for r in mine}
    seeds = sorted({r["seed"] for r in mine})

    def column(phase, name) -> list[float]:
        return [math.nan if value[s, phase].get(name) is None else float(value[s, phase][name])
                for s in seeds if (s, phase) in value]

    lines = [f"Rubric-ARM on held-out pairs, protocol {key}: {len(mine)} records, seeds {seeds} "
             f"({len(records) - len(mine)} records of other protocols not shown). Mean ± sample std over seeds; "
             "chance is 0.5 (accuracy_both: 0.25)."]
    for title, names in TABLES.items():
        lines += ["", f"{title}:", "", "| phase | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for phase in PHASES:
            n = sum((s, phase) in value for s in seeds)
            if n:
                lines.append(f"| {phase} | {n} | " + " | ".join(_ms(column(phase, f)) for f in names) + " |")
    lines += ["", "Each trained phase minus the untrained judge, paired by seed (95% t interval over seeds):", "",
              "| phase | figure | seeds | mean difference | 95% t interval | t p |", "|---|---|---|---|---|---|"]
    for phase in PHASES[1:]:
        both = [s for s in seeds if (s, phase) in value and (s, PHASES[0]) in value]
        for name in PAIRED:
            d = [value[s, phase][name] - value[s, PHASES[0]][name] for s in both
                 if value[s, phase].get(name) is not None and value[s, PHASES[0]].get(name) is not None]
            if not d:
                continue
            t = over_seeds(d)
            interval = "-" if math.isnan(t["t_low"]) else f"[{t['t_low']:+.3f}, {t['t_high']:+.3f}]"
            p = "-" if math.isnan(t["t_p"]) else f"{t['t_p']:.3f}"
            lines.append(f"| {phase} | {name} | {t['seeds']} | {t['mean']:+.3f} | {interval} | {p} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="only these (default: rubricarm.seeds)")
    ap.add_argument("--report", action="store_true", help="print the tables from rubricarm.results and stop")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        if not args.report:
            run(params, args.seeds)
        from benchmarks.compare_training import load_records

        print(report(load_records(params.rubricarm.results)))
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
