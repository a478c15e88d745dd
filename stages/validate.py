"""Data checks on the judgments (Great Expectations): stop the pipeline before training on bad scores.

    python -m stages.validate [--params params.yaml]

Reads `paths.judgments` and `validate.*`; writes `paths.validation_report` (JSON)
and prints a summary. Exits non-zero, naming each failed check's column and rows,
when a check fails; the report is written either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.io import write_json
from focal.quality import ChecksFailed, check_judgments, summarize
from focal.stage import run_stage

READS = ('validate', 'judge')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    report = check_judgments(pd.read_parquet(params.paths.judgments), params.validate, params.judge.max_failure_share)
    write_json(params.paths.validation_report, report)
    print(summarize(report), file=sys.stdout if report["success"] else sys.stderr)
    if not report["success"]:
        raise ChecksFailed(f"validate: the judgments in {params.paths.judgments} failed their checks; "
                         f"see {params.paths.validation_report}")
    return [Path(params.paths.validation_report)]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
