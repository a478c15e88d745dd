"""Judged tables: the judge stage's work, the failure budget, and what the stages read to judge.

    requests = requests_for(pd.read_parquet(paths.rollouts), load_items(paths), paths.rollouts)
    df, metrics = judge_measured(JudgeSpec.from_params(params, stage_template(paths)), requests)
    check_failure_budget(df, params.judge.max_failure_share, "judge")

- `judge_table`: requests judged by the configured judge (focal.judging.judge.open_judge: a
  server is started only when some request needs a call) as a judgments table
  (focal.judging.prompts.Judgment's columns: failure kind and reason columns of their own).
- `judge_measured`: the judge stage's work: the table, plus the probes that measure
  the judge (focal/judging/agreement.py: against the checks, against itself, an ensemble), in
  one call on one endpoint and cache; the probes never enter the table.
- `judge_labelled`: the judge against labels people already have (HealthBench
  meta-evaluation rows).
- The failure budget (`check_failure_budget`): the judge and evaluate stages fail when
  more than judge.max_failure_share of the judge's rows failed (the `failure` column
  counts by kind; checks cannot fail and are not counted).
- `stage_template`: the judge template the prepare stage wrote (paths.judge_template);
  `load_items`: prompt_id -> Item from the prompt tables.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from focal.judging.agreement import (Labelled, check_probes, repeated_probes, restated_probes, with_checks, with_ensemble,
                             with_labels, with_repeated, with_restated)
from focal.judging.judge import open_judge
from focal.judging.prompts import Judgment, Request
from focal.judging.spec import JudgeSpec
from focal.serving.client import CallsFailed, transient_kind


def judge_table(spec: JudgeSpec, requests: list[Request]):
    """Judge requests with the judge of `spec` (judge.base_url, else the local vLLM server with the base model,
    started only if some request is neither a check nor cached) and its cache: (judgments DataFrame, JudgeStats)."""
    import pandas as pd

    with open_judge(spec, requests) as judge:
        judgments = judge.run(requests, progress=True)
    columns = [f.name for f in dataclasses.fields(Judgment)]
    return pd.DataFrame([j.__dict__ for j in judgments], columns=columns), judge.stats


def stage_template(paths) -> str:
    """The judge template the prepare stage wrote for base.rubric_set (paths.judge_template)."""
    path = Path(paths.judge_template)
    if not path.exists():
        raise ValueError(f"{path} does not exist; run the prepare stage (`dvc repro prepare`), which writes the "
                         "rubric set's judge template there")
    return path.read_text(encoding="utf-8")


def load_items(paths) -> dict:
    """prompt_id -> Item, from both prompt tables (paths.train_prompts, paths.eval_prompts)."""
    import pandas as pd

    from focal.rubrics.sets import item_from_row

    tables = (paths.train_prompts, paths.eval_prompts)
    for path in tables:
        if not Path(path).exists():
            raise ValueError(f"{path}: prompt table not found (paths.train_prompts, paths.eval_prompts); build them "
                             "with `focal run --stages prepare`")
    frames = [pd.read_parquet(p) for p in tables]
    return {row["prompt_id"]: item_from_row(row) for df in frames for _, row in df.iterrows()}


def judge_measured(spec: JudgeSpec, requests: list[Request], ensemble=None):
    """Judge requests like judge_table (the judge of `spec`), plus the check probes (judge.agreement_share) and the
    restated and repeated probes (judge.consistency_share), in one call (one endpoint, one cache): (the judgments
    of `requests` only, judge/*, agreement/*, consistency/* and consistency/repeat/* metrics). judge/* count the
    probes' calls too; the probes never enter the returned table.

    With `ensemble` (a focal.judging.ensemble.Ensemble of other judges), its members also answer the check probes and
    vote with the configured judge (member "judge"); ensemble/* metrics (with_ensemble) are added and the
    votes table is left in `ensemble.votes`."""
    cfg = spec.cfg
    probes = {"checks": check_probes(requests, cfg.agreement_share),
              "restated": restated_probes(requests, cfg.consistency_share),
              "repeated": repeated_probes(requests, cfg.consistency_share)}
    everything, stats = judge_table(spec, requests + [r for p in probes.values() for r in p])
    parts, start = {}, len(requests)
    for name, p in probes.items():
        parts[name], start = everything.iloc[start:start + len(p)], start + len(p)
    df = everything.iloc[:len(requests)].reset_index(drop=True)
    out = (stats.metrics() | with_checks(df, parts["checks"], cfg.agreement_share)
           | with_restated(df, parts["restated"], cfg.consistency_share)
           | with_repeated(df, parts["repeated"], cfg.temperature))
    if ensemble is not None:
        ensemble.votes = ensemble.run(probes["checks"], known={"judge": parts["checks"].score.tolist()})
        out |= with_ensemble(df, ensemble.votes) | ensemble.stats()
    return df, out


def judge_labelled(spec: JudgeSpec, labelled: list[Labelled]) -> dict:
    """Judge the labelled requests with the judge of `spec` and its cache (judge_table; HealthBench's rows are asked
    with Focal's default template: a spec with template None) and return labels/* metrics (a failed judgment is
    counted in labels/missing, not compared)."""
    df, _ = judge_table(spec, [x.request for x in labelled])
    return with_labels(labelled, df.score.tolist())


# ---- the failure budget --------------------------------------------------------------

class TooManyFailures(CallsFailed):
    """More judge calls failed than the configured budget allows (`transient` when every failure kind is)."""


def failure_summary(df) -> tuple[int, int, dict]:
    """(failed judge rows, judge rows, {failure kind: count}) of a judgments table; checks cannot fail and are not counted."""
    rows = df[df.source == "judge"] if "source" in df else df
    bad = rows[rows.score.isna()]
    kinds = Counter(bad["failure"].fillna("") if "failure" in bad else [""] * len(bad))
    return int(len(bad)), int(len(rows)), {str(k) or "unknown": int(v) for k, v in sorted(kinds.items())}


def failure_text(df) -> str:
    """What a command prints beside a score: '2 of 40 judge calls failed (timeout 1, server_error 1)'."""
    failed, total, kinds = failure_summary(df)
    return f"{failed} of {total} judge calls failed" + (f" ({_listing(kinds)})" if kinds else "")


def _listing(kinds: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in kinds.items())


def check_failure_budget(df, max_share: float, where: str) -> None:
    """Raise TooManyFailures (one line: share, budget, kinds and counts) when failed judge rows exceed max_share.
    Every command that prints or writes a score calls it first (the judge and evaluate stages, `focal judge`)."""
    failed, total, kinds = failure_summary(df)
    if total and failed / total > max_share:
        raise TooManyFailures(f"{where}: {failed} of {total} judge calls failed ({failed / total:.1%} > "
                              f"judge.max_failure_share {max_share:.0%}): {_listing(kinds)}; fix the judge endpoint "
                              "(judge.base_url) and rerun: what succeeded is cached",
                              transient=all(transient_kind(k) for k in kinds))
