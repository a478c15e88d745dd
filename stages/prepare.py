"""Load and validate the chosen rubric set; write the train and eval prompt tables.

    python -m stages.prepare [--params params.yaml]

Reads `base.rubric_set`, `paths.*` and `prepare.*`; writes `paths.train_prompts`
and `paths.eval_prompts` (one row per prompt, its rubric as JSON) and
`paths.judge_template` (the set's judge template, or Focal's default): the judge,
train and evaluate stages read the template there, never from rubrics/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.core.atomic import write_parquet, write_text
from focal.core.stage import run_stage
from focal.judging.prompts import set_template
from focal.rubrics.sets import RubricSet, item_to_row, load_rubric_set

READS = ('base', 'prepare')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def prompt_tables(rs: RubricSet, max_train: int = 0, max_eval: int = 0) -> dict[str, pd.DataFrame]:
    """{split: table} sorted by prompt id, cut to the first max_* prompts (0 = all)."""
    tables = {}
    for split, limit in (("train", max_train), ("eval", max_eval)):
        rows = sorted((item_to_row(it) for it in rs.split(split)), key=lambda row: row["prompt_id"])
        if not rows:
            raise ValueError(f"rubric set {rs.name!r} has no {split!r} items; give some items `split: {split}`")
        tables[split] = pd.DataFrame(rows[:limit or None])
    return tables


def run(params: Params) -> list[Path]:
    """The stage: what `dvc repro` and the Prefect flow both call. Returns the written paths."""
    rs = load_rubric_set(Path(params.paths.rubrics) / params.base.rubric_set)
    tables = prompt_tables(rs, params.prepare.max_train_prompts, params.prepare.max_eval_prompts)
    outs = {"train": Path(params.paths.train_prompts), "eval": Path(params.paths.eval_prompts)}
    for split, path in outs.items():
        write_parquet(path, tables[split])
    write_text(params.paths.judge_template, set_template(rs))
    print(f"prepare: rubric set {rs.name!r}: {len(tables['train'])} train, {len(tables['eval'])} eval prompts")
    return [*outs.values(), Path(params.paths.judge_template)]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
