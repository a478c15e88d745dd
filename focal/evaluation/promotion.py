"""The model registry: champion and challengers as GTO versions in git, promoted only on evidence.

    from focal.evaluation.promotion import PromotionRule, decide, champion, record, materialize
    promote, why = decide(json.load(open("metrics/eval.json")), "champion", PromotionRule())
    rec = record(".", {"run": "retrain-...", "commit": sha, ...}, promote, why)  # a new version: champion or rejected
    champion(".")                                    # the current champion's Record, or None (then: the base model)
    materialize(".", champion("."), "models/champions")   # its weights as a folder, from DVC's cache or remote

Every trained candidate is registered with GTO (DVC's model registry: annotated git
tags, `gto show` lists them) as a new version of the artifact `policy`, on the
commit of the DVC experiment that made it. The registration's message is the
record, JSON: run, commit, when, decision, why, the metrics and the rule it was
judged on, the reference it was compared with, the seed and the settings. Then the version is
assigned the stage `champion` (it replaces the current one) or `rejected` (kept,
with the reason). The champion is the version most recently assigned `champion`.
Weights are not copied anywhere: the experiment's commit pins the model output in
dvc.lock, and `materialize` fetches it through DVC (local cache, else the remote).

The rule (`decide`, hand-checked in tests/test_retrain.py): on every benchmark of
the evaluation, the paired rubric-score difference candidate - reference has a 95%
bootstrap interval whose lower bound is above `min_ci_low`, and neither the minimum
category pass rate nor the strict completion drops by more than its tolerance.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ARTIFACT = "policy"  # the GTO artifact name of Focal's trained policy
CHAMPION, REJECTED = "champion", "rejected"  # GTO stages
CANDIDATE = "trained"  # the candidate's name in evaluate.policies and metrics/eval.json


@dataclass
class PromotionRule:
    """When a trained candidate replaces the champion: every benchmark must pass all three checks."""

    min_ci_low: float = field(default=0.0, metadata={"help": "the paired rubric-score difference (candidate - "
                              "reference) must have its 95% interval's lower bound above this"})
    max_min_category_drop: float = field(default=0.02, metadata={"help": "the minimum category pass rate may be at "
                                         "most this much below the reference's"})
    max_strict_drop: float = field(default=0.02, metadata={"help": "the strict completion rate may be at most this "
                                   "much below the reference's"})

    def __post_init__(self):
        for name in ("max_min_category_drop", "max_strict_drop"):
            if getattr(self, name) < 0:
                raise ValueError(f"rule.{name} must be >= 0 (a tolerance), got {getattr(self, name)}")


def _drop_check(name: str, ref: float, cand: float, tolerance: float) -> tuple[bool, str]:
    if math.isnan(ref) or math.isnan(cand):
        return True, f"{name} not measured"
    drop = ref - cand
    ok = drop <= tolerance + 1e-12
    return ok, f"{name} {ref:.3f} -> {cand:.3f} ({'ok' if ok else 'FAIL'}: drop {max(drop, 0):.3f} " \
               f"{'<=' if ok else '>'} {tolerance:g})"


def decide(metrics: dict, reference: str, rule: PromotionRule, candidate: str = CANDIDATE) -> tuple[bool, str]:
    """(promote?, why) from evaluate's metrics ({benchmark: {policies, paired}}), candidate vs reference."""
    if not metrics:
        raise ValueError("the evaluation has no benchmark: nothing to decide on")
    verdicts, lines = [], []
    for bench, m in metrics.items():
        pair = m.get("paired", {}).get(f"{candidate}_vs_{reference}")
        pol = m.get("policies", {})
        if pair is None or candidate not in pol or reference not in pol:
            raise ValueError(f"metrics for {bench!r} do not compare {candidate!r} with {reference!r} (paired: "
                             f"{', '.join(m.get('paired', {})) or 'none'}); evaluate.policies must list "
                             f"{reference!r} first and {candidate!r}")
        low = pair["ci_low"]
        ok = not math.isnan(low) and low > rule.min_ci_low
        checks = [(ok, f"paired rubric score {pair['diff']:+.3f} [{low:+.3f}, {pair['ci_high']:+.3f}] over "
                       f"{pair['prompts']} prompts ({'ok' if ok else 'FAIL'}: lower bound "
                       f"{'>' if ok else '<='} {rule.min_ci_low:g})"),
                  _drop_check("min category", pol[reference]["min_category"], pol[candidate]["min_category"],
                              rule.max_min_category_drop),
                  _drop_check("strict completion", pol[reference]["strict_completion"],
                              pol[candidate]["strict_completion"], rule.max_strict_drop)]
        verdicts += [c[0] for c in checks]
        lines.append(f"{bench}: " + "; ".join(c[1] for c in checks))
    promote = all(verdicts)
    return promote, f"{'promoted' if promote else 'rejected'} against {reference}: " + " | ".join(lines)


def summary(metrics: dict, reference: str, candidate: str = CANDIDATE) -> dict:
    """The numbers a decision rests on, per benchmark: reference and candidate scores and the paired difference."""
    keep = ("rubric_score", "strict_completion", "min_category")
    return {bench: {"reference": {k: m["policies"][reference][k] for k in keep},
                    "candidate": {k: m["policies"][candidate][k] for k in keep},
                    "paired": m["paired"][f"{candidate}_vs_{reference}"]} for bench, m in metrics.items()}


# ---- the registry: GTO versions and stages ---------------------------------------------------------

@dataclass
class Record:
    """One registered candidate: its version and the registration message (what GTO keeps)."""

    version: str
    run: str
    commit: str
    when: str
    decision: str
    why: str
    model: str  # the model folder inside the commit (paths.trained_model)
    reference: str = "base"
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    rule: dict = field(default_factory=dict)  # the promotion rule it was judged by
    metrics: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.version} ({self.run})"


def _gto():
    import gto.api

    return gto.api


def _versions(repo) -> list[dict]:
    from gto.exceptions import ArtifactNotFound

    try:
        return _gto().show(str(repo), ARTIFACT, registered_only=True)
    except ArtifactNotFound:  # nothing registered yet
        return []


def _record_of(version: dict) -> Record:
    body = json.loads(version["registrations"][0]["message"])
    return Record(version=version["version"], **{k: v for k, v in body.items()
                                                  if k in Record.__dataclass_fields__ and k != "version"})


def history(repo: str | Path) -> list[Record]:
    """Every registered candidate, newest first."""
    records = [_record_of(v) for v in _versions(repo) if v.get("registrations")]
    return sorted(records, key=lambda r: r.when, reverse=True)


def champion(repo: str | Path) -> Record | None:
    """The version most recently assigned `champion`, or None (no run has been promoted: the base model)."""
    if not _versions(repo):
        return None
    found = _gto().find_versions_in_stage(str(repo), ARTIFACT, CHAMPION)
    found = found if isinstance(found, list) else [found] if found else []
    if not found:
        return None
    return next(r for r in history(repo) if r.version == found[0].version)


def record(repo: str | Path, body: dict, promote: bool, why: str) -> Record:
    """Register the candidate (body: run, commit, when, model, ...) as a new version and assign it `champion`
    or `rejected` with `why`. Returns its Record."""
    body = {**body, "decision": "promoted" if promote else "rejected", "why": why}
    api = _gto()
    reg = api.register(str(repo), ARTIFACT, body["commit"], message=json.dumps(body, sort_keys=True))
    api.assign(str(repo), ARTIFACT, CHAMPION if promote else REJECTED, version=reg.version, message=why)
    fields = {k: v for k, v in body.items() if k in Record.__dataclass_fields__}
    return Record(version=reg.version, **fields)


def materialize(repo: str | Path, rec: Record, root: str | Path, remote: str | None = None) -> Path:
    """The record's model as the folder root/<version> (fetched once, through DVC: the cache, else `remote`
    or the default DVC remote)."""
    from dvc.api import DVCFileSystem

    dest = Path(root) / rec.version
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        DVCFileSystem(str(repo), rev=rec.commit, remote=remote).get(rec.model, str(tmp), recursive=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---- what changed between two runs ----------------------------------------------------------------

def prompt_changes(old: pd.DataFrame | None, new: pd.DataFrame) -> dict[str, list[str]]:
    """Prompt ids that are new, changed (same id, any column differs: prompt, rubric) or removed."""
    def rows(df):
        return {} if df is None else {r["prompt_id"]: json.dumps(r, sort_keys=True, default=str)
                                      for r in df.to_dict("records")}

    a, b = rows(old), rows(new)
    return {"new": sorted(set(b) - set(a)), "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
            "removed": sorted(set(a) - set(b))}
