"""Data checks on the judgments (Great Expectations): stop the pipeline before training on bad scores.

    python -m stages.validate [--params params.yaml]

Reads `paths.judgments`, the judge's agreement with the checks in `paths.judge_stats`
(absent = not measured) and `validate.*`; writes `paths.validation_report` (JSON)
and prints a summary. Exits non-zero, naming each failed check's column and rows,
when a check fails; the report is written either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.core.atomic import write_json
from focal.core.stage import run_stage
from focal.judging.validate import ChecksFailed, check_judgments, summarize

READS = ('validate', 'judge')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    stats = Path(params.paths.judge_stats)
    judge_stats = json.loads(stats.read_text(encoding="utf-8")) if stats.exists() else None
    report = check_judgments(pd.read_parquet(params.paths.judgments), params.validate, params.judge.max_failure_share,
                             judge_stats)
    write_json(params.paths.validation_report, report)
    print(summarize(report), file=sys.stdout if report["success"] else sys.stderr)
    if not report["success"]:
        raise ChecksFailed(f"validate: the judgments in {params.paths.judgments} failed their checks; "
                         f"see {params.paths.validation_report}")
    return [Path(params.paths.validation_report)]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
