"""How far the judge agrees with verdicts we already know: agreement, Cohen's kappa, confusion counts, and the
probes that measure it (pure: the judge stage asks them through focal/judging/tables.py's judge_measured).

    figures([True, True, False, False], [True, False, False, False])
    # {"n": 4, "agreement": 0.75, "kappa": 0.5, "tp": 1, "fp": 0, "fn": 1, "tn": 2, "missing": 0}

Three measures, each reported overall and per criterion key (or category):
1. Programmatic checks (`with_checks`): on a share `judge.agreement_share` of the
   check-decided (rollout, criterion) pairs, picked by a hash of the two ids, the
   judge stage also asks the LLM judge (focal.judging.tables.judge_measured), as if the criterion had no check
   (`check_probes`). Those extra judgments go to metrics/judge.json only, never to
   the judgments table the policy is trained on.
2. Labels people already have (`load_labelled`, focal.judging.tables.judge_labelled): HealthBench's
   meta-evaluation rows {prompt, completion, rubric, binary_labels, category,
   prompt_id}; the verdict is the majority of the physicians' labels.
   `python -m benchmarks.judge_agreement --labels FILE` prints the figures.
3. Consistency, on a share `judge.consistency_share` of the judge-decided pairs
   (the same pairs for both figures, so they differ only by what is asked):
   - restated (`with_restated`, consistency/*): asked again at the configured
     temperature with the rubric item restated (`RESTATED`);
   - repeated (`with_repeated`, consistency/repeat/*): the identical request asked
     again (`Request.repeat = 1`: its own cache key, so the cache does not answer
     it with the first answer). At judge.temperature 0 on a deterministic server
     this measures determinism (batching and numerics), not judgment: expect 1.0;
     above 0 it is the sampling noise of a verdict.
   The self-agreement is the agreement of the two answers (the first plays "truth").
   Answer-order swapping does not apply: the judge sees one response per request,
   so there is no order to swap.

The math, with the reference verdict ("truth": the check, or the physicians) and the
judge's verdict, both "criterion met" (satisfaction r >= aggregate.MET; a pitfall is
met when absent):
- tp: both met; fn: truth met, judge not; fp: judge met, truth not; tn: neither.
- agreement p_o = (tp + tn) / n over the n pairs where both verdicts exist (a failed
  judgment is missing, counted in `missing`, never a disagreement).
- Cohen's kappa = (p_o - p_e) / (1 - p_e), with chance agreement
  p_e = p_truth p_judge + (1 - p_truth)(1 - p_judge), p_x the share each says "met".
Degenerate cases, defined:
- n = 0: agreement and kappa are NaN (nothing was compared); JSON writes null.
- both raters constant on the same verdict (p_e = 1, so p_o = 1): kappa is NaN,
  chance-corrected agreement is not measurable when neither rater varies.
- one rater constant and the other not, or both constant on opposite verdicts:
  the formula is defined and gives 0 (no better than chance).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

from focal.core.cache import content_key
from focal.judging.prompts import Request, probe, requests_for
from focal.rubrics.formats import healthbench_item, read_jsonl
from focal.rubrics.types import MET
from focal.rubrics.types import Where

FIGURES = ("agreement", "kappa", "n", "tp", "fp", "fn", "tn", "missing")
# what each prefix of agreement figures measures: the tables of the evaluation report and the Prefect artifact
MEASURES = {"agreement": "the judge vs the checks", "consistency": "the judge vs itself, rubric item restated",
            "consistency/repeat": "the judge vs itself, the same request again"}
RESTATED = "Consider this rubric item carefully: {text}"  # the rewording of consistency probes
GROUPINGS = ("by_key", "by_category")  # what agreement figures are grouped by: criterion key, a label's category


# ---- the math ---------------------------------------------------------------------

def confusion(truth, judged) -> dict:
    """Counts tp, fp, fn, tn over pairs where both verdicts exist (None or NaN = missing)."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "missing": 0}
    for t, j in zip(truth, judged, strict=True):
        if _missing(t) or _missing(j):
            counts["missing"] += 1
        else:
            counts[("tp" if j else "fn") if t else ("fp" if j else "tn")] += 1
    return counts


def cohen_kappa(tp: int, fp: int, fn: int, tn: int) -> float:
    """Cohen's kappa of a 2x2 confusion; NaN when nothing was compared, or when both raters give one and the
    same verdict throughout (chance agreement 1); see the module docstring."""
    n = tp + fp + fn + tn
    if n == 0:
        return math.nan
    p_truth, p_judge = (tp + fn) / n, (tp + fp) / n
    chance = p_truth * p_judge + (1 - p_truth) * (1 - p_judge)
    if chance == 1:
        return math.nan
    return ((tp + tn) / n - chance) / (1 - chance)


def figures(truth, judged) -> dict:
    """{n, agreement, kappa, tp, fp, fn, tn, missing} of two lists of verdicts (bool; None/NaN = missing)."""
    c = confusion(truth, judged)
    n = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    return {"n": n, "agreement": (c["tp"] + c["tn"]) / n if n else math.nan,
            "kappa": cohen_kappa(c["tp"], c["fp"], c["fn"], c["tn"]), **c}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def met(score) -> bool | None:
    """A satisfaction in [0, 1] as a verdict (r >= MET); NaN (a failed judgment) -> None."""
    return None if _missing(score) else bool(score >= MET)


def agreement_table(truth_scores, judged_scores, groups, by: str) -> dict[tuple, dict]:
    """figures() of satisfactions overall (scope ()) and per group (scope (by, group)): the structure that
    agreement_metrics names."""
    if by not in GROUPINGS:
        raise ValueError(f"agreement figures are grouped by one of {', '.join(GROUPINGS)}, got {by!r}")
    truth, judged, groups = [met(s) for s in truth_scores], [met(s) for s in judged_scores], list(groups)
    table = {(): figures(truth, judged)}
    for g in sorted(set(groups)):
        pick = [i for i, x in enumerate(groups) if x == g]
        table[(by, g)] = figures([truth[i] for i in pick], [judged[i] for i in pick])
    return table


def metric_name(prefix: str, scope: tuple, figure: str) -> str:
    """The one builder of an agreement metric's name: `<prefix>/overall` (the overall agreement), `<prefix>/kappa`,
    ..., and per group `<prefix>/<by>/<group>/<figure>`."""
    if not scope:
        return f"{prefix}/{'overall' if figure == 'agreement' else figure}"
    return "/".join((prefix, *scope, figure))


def agreement_metrics(truth_scores, judged_scores, groups, prefix: str, by: str) -> dict:
    """Flat metrics of satisfactions (agreement_table, named by metric_name): `<prefix>/overall` (agreement),
    `<prefix>/kappa`, `<prefix>/n`, ... and per group `<prefix>/<by>/<group>/agreement`, ...; NaN becomes None
    (null in JSON)."""
    def value(v):
        return None if _missing(v) else (round(v, 4) if isinstance(v, float) else v)

    table = agreement_table(truth_scores, judged_scores, groups, by)
    return {metric_name(prefix, scope, k): value(f[k]) for scope, f in table.items() for k in FIGURES}


def scopes(metrics: dict, prefix: str) -> list[tuple]:
    """The scopes of a flat metrics dict (a metrics file read back) that agreement_metrics wrote under `prefix`:
    () when its overall figures are there ([] otherwise), then each (by, group) with every figure there. A group is
    found where metric_name would have put its `n`, and kept only if metric_name names all its figures: nothing
    is split at '/' (a criterion key may hold one), and a nested prefix's figures (consistency/repeat under
    consistency) are not this prefix's."""
    if metric_name(prefix, (), "n") not in metrics:
        return []
    n = "/" + "n"  # how metric_name ends a group's `n`
    heads = {by: metric_name(prefix, (by,), "") for by in GROUPINGS}  # `<prefix>/<by>/`
    found = {(by, k[len(head):-len(n)]) for k in metrics for by, head in heads.items()
             if k.startswith(head) and k.endswith(n)}
    return [()] + sorted(s for s in found if all(metric_name(prefix, s, k) in metrics for k in FIGURES))


def rows(metrics: dict, prefix: str) -> list[dict]:
    """One row per scope (overall, then each group) of what agreement_metrics wrote under `prefix`:
    for the evaluation report and the Prefect table artifact."""
    return [{"scope": "/".join(s) or "overall", **{k: metrics[metric_name(prefix, s, k)] for k in FIGURES}}
            for s in scopes(metrics, prefix)]


def markdown(metrics: dict, prefix: str) -> str:
    """rows() as a markdown table ('' when nothing was measured)."""
    table = rows(metrics, prefix)
    if not table:
        return ""
    cells = [" | ".join(["scope", *FIGURES])] + [" | ".join(["---"] * (len(FIGURES) + 1))]
    cells += [" | ".join(str("-" if r[k] is None else r[k]) for k in ["scope", *FIGURES]) for r in table]
    return "\n".join(f"| {c} |" for c in cells)


# ---- 1. and 3.: the probes the judge stage asks (the checks; the judge, restated, repeated) ----

def sampled(rollout_id: str, criterion_id: str, share: float) -> bool:
    """Whether the pair is in the deterministic sample of `share` (a hash of the two ids)."""
    h = int(hashlib.sha256(f"{rollout_id}\x00{criterion_id}".encode()).hexdigest()[:16], 16)
    return h / 16 ** 16 < share


def check_probes(requests: list[Request], share: float) -> list[Request]:
    """The sampled check-decided requests, with the check removed, so that the LLM judge answers them."""
    return [probe(r) for r in requests if r.criterion.check is not None and sampled(r.rollout_id, r.criterion.id, share)]


def restated_probes(requests: list[Request], share: float) -> list[Request]:
    """The sampled judge-decided requests with their rubric item restated (RESTATED), to ask again."""
    return [dataclasses.replace(r, criterion=dataclasses.replace(r.criterion, text=RESTATED.format(text=r.criterion.text)))
            for r in requests if r.criterion.check is None and sampled(r.rollout_id, r.criterion.id, share)]


def repeated_probes(requests: list[Request], share: float) -> list[Request]:
    """The sampled judge-decided requests, identical but for `repeat = 1` (asked afresh, not from the cache)."""
    return [dataclasses.replace(r, repeat=1) for r in requests
            if r.criterion.check is None and sampled(r.rollout_id, r.criterion.id, share)]


def _against(reference, probes, prefix: str) -> dict:
    """agreement_metrics of the probes' scores against the reference rows of the same (rollout, criterion)."""
    ref = reference.set_index(["rollout_id", "criterion_id"]).score
    truth = [ref.get((r, c), math.nan) for r, c in zip(probes.rollout_id, probes.criterion_id, strict=True)]
    return agreement_metrics(truth, probes.score.tolist(), probes.key.tolist(), prefix, "by_key")


def with_checks(judgments, probes, share: float) -> dict:
    """agreement/* metrics of the judge's answers on the probes (a judgments table of check_probes)
    against the checks' verdicts in `judgments`, overall and per criterion key."""
    return {"agreement/share": share, **_against(judgments[judgments.source == "check"], probes, "agreement")}


def with_restated(judgments, probes, share: float) -> dict:
    """consistency/* metrics: the judge's answers on the restated probes against its first answers in `judgments`
    (self-agreement), overall and per criterion key."""
    return {"consistency/share": share, **_against(judgments[judgments.source == "judge"], probes, "consistency")}


def with_repeated(judgments, probes, temperature: float) -> dict:
    """consistency/repeat/* metrics: the judge's answers to the identical requests asked again against its first
    answers, overall and per criterion key; consistency/repeat/temperature says what it measures (0: determinism)."""
    return {"consistency/repeat/temperature": temperature,
            **_against(judgments[judgments.source == "judge"], probes, "consistency/repeat")}


def with_ensemble(judgments, votes) -> dict:
    """ensemble/* metrics of a votes table (focal.judging.ensemble) on check probes against the checks' verdicts in
    `judgments`: ensemble/agreement/* for the vote, ensemble/member/<name>/agreement/* for each member."""
    truth = judgments[judgments.source == "check"]
    out = _against(truth, votes.assign(score=votes.vote), "ensemble/agreement")
    for name in [c for c in votes.columns if c not in ("rollout_id", "criterion_id", "key", "vote")]:
        out |= _against(truth, votes.assign(score=votes[name]), f"ensemble/member/{name}/agreement")
    return out


# ---- 2. agreement with labels people already have ------------------------------------

@dataclass
class Labelled:
    """A request with a known verdict (the majority of its labels)."""

    request: Request
    verdict: bool
    category: str


def labelled_row(row: dict, where: Where) -> Labelled | None:
    """One HealthBench meta-evaluation row; None when the labels tie (no majority)."""
    labels = row.get("binary_labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(b, bool) for b in labels):
        raise where.error("binary_labels", f"must be a non-empty list of true/false, got {labels!r}",
                          'write e.g. `"binary_labels": [true, false, true]`')
    completion, rubric = row.get("completion"), row.get("rubric")
    for name, value in (("completion", completion), ("rubric", rubric)):
        if not isinstance(value, str) or not value.strip():
            raise where.error(name, "is missing or empty", f"each row needs `{name}` (text)")
    category = str(row.get("category") or "uncategorized")
    item = healthbench_item({"prompt_id": row.get("prompt_id"), "prompt": row.get("prompt"),
                             "rubrics": [{"criterion": rubric, "points": 1}]}, where, 0.0)
    item = dataclasses.replace(item, criteria=(dataclasses.replace(item.criteria[0], category=category, key=category),))
    yes = sum(labels)
    if 2 * yes == len(labels):
        return None
    rid = str(row.get("completion_id") or "c-" + content_key(item.id, completion)[:16])
    (request,) = requests_for([{"prompt_id": item.id, "rollout_id": rid, "completion": completion}], {item.id: item},
                              str(where.path))
    return Labelled(request, 2 * yes > len(labels), category)


def load_labelled(path) -> tuple[list[Labelled], int]:
    """(labelled requests, rows skipped because their labels tie) of a HealthBench meta-evaluation JSONL."""
    out, ties = [], 0
    for n, row in read_jsonl(path):
        where = Where(path, n, str(row.get("prompt_id") or f"line {n}"))
        one = labelled_row(row, where)
        if one is None:
            ties += 1
        else:
            out.append(one)
    return out, ties


def with_labels(labelled: list[Labelled], judged_scores) -> dict:
    """labels/* metrics of the judge's satisfactions (one per labelled request, NaN = failed) against the
    majority verdicts, overall and per category."""
    truth = [1.0 if x.verdict else 0.0 for x in labelled]
    return agreement_metrics(truth, judged_scores, [x.category for x in labelled], "labels", "by_category")
