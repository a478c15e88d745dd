"""Judge every rollout on every criterion of its prompt's rubric.

    python -m stages.judge [--params params.yaml]

Reads `paths.rollouts`, the prompt tables and the judge template (`paths.judge_template`,
all three written upstream); writes `paths.judgments` (one row per
(rollout, criterion): prompt_id, rollout_id, criterion_id, key, category, weight,
pitfall, source, raw, score in [0, 1] or NaN, reason, cached, latency_s) and the
judge's counts to `paths.judge_stats`. Judgments are cached in `paths.judge_cache`:
a rerun, or a restart after a crash, calls the API only for what is missing. The
vLLM server is started only if something is left to ask. Fails, writing nothing,
when more than `judge.max_failure_share` of the judge calls failed (one line with
the failure kinds and counts).

It also measures the judge against the checks: on `judge.agreement_share` of the
check-decided pairs (a hash of rollout and criterion ids), the judge answers as if
the criterion had no check; its agreement, Cohen's kappa and confusion counts with
the checks, overall and per criterion key, go to `paths.judge_stats` (agreement/*,
focal/judging/agreement.py). Likewise, on `judge.consistency_share` of the judge-decided
pairs it asks again with the rubric item restated: the judge's self-agreement
(consistency/*), and asks the identical request again (consistency/repeat/*). Those
extra judgments never enter `paths.judgments`. With `ensemble.members`, those judges
also answer the check probes and vote with the configured judge: each one's verdict
and the vote go to `paths.judge_votes` (empty without an ensemble), their agreement
with the checks to `paths.judge_stats` (ensemble/*, focal/judging/ensemble.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.core.atomic import write_json, write_parquet
from focal.core.stage import run_stage
from focal.judging.ensemble import EMPTY, open_ensemble
from focal.judging.prompts import requests_for
from focal.judging.spec import JudgeSpec
from focal.judging.tables import judge_measured
from focal.judging.tables import check_failure_budget, failure_text, load_items, stage_template

READS = ('judge', 'serve', 'ensemble')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    p = params
    requests = requests_for(pd.read_parquet(p.paths.rollouts), load_items(p.paths), p.paths.rollouts)
    template = stage_template(p.paths)  # the rubric set's, as the prepare stage wrote it
    spec = JudgeSpec.from_params(p, template)
    with open_ensemble(p.ensemble, spec) as ensemble:
        df, m = judge_measured(spec, requests, ensemble)  # the judge measured too
    check_failure_budget(df, params.judge.max_failure_share, "judge")  # successes stay cached for the rerun
    write_parquet(params.paths.judgments, df)
    write_parquet(params.paths.judge_votes, EMPTY if ensemble is None else ensemble.votes)
    write_json(params.paths.judge_stats, m)
    print(f"judge: {len(df)} judgments ({m['judge/checks']} by checks), {m['judge/calls']} API calls, "
          f"{m['judge/cache_hits']} cache hits, {failure_text(df)}; agreement with the checks "
          f"{m['agreement/overall']} (kappa {m['agreement/kappa']}) on {m['agreement/n']} sampled pairs, "
          f"self-agreement {m['consistency/overall']} on {m['consistency/n']}")
    if ensemble is not None:
        print(f"judge: ensemble ({params.ensemble.vote} of judge, {', '.join(ensemble.members)}) agrees with the "
              f"checks {m.get('ensemble/agreement/overall')} on {m.get('ensemble/agreement/n')} pairs; "
              + ", ".join(f"{n} {m.get(f'ensemble/member/{n}/agreement/overall')}" for n in ["judge", *ensemble.members]))
    return [Path(params.paths.judgments), Path(params.paths.judge_stats), Path(params.paths.judge_votes)]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
