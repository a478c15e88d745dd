"""Evaluation sets as data: a prompt set with rubrics, by name (`evaluate.benchmarks`). No download at run time.

    items, note = load_benchmark("eval", params)     # note explains a skipped optional source

| name         | what                                                                  |
|--------------|-----------------------------------------------------------------------|
| eval         | the prepared eval split (paths.eval_prompts) of base.rubric_set       |
| health       | the eval split of the second shipped set, rubrics/health              |
| writingbench | WritingBench from the inspect-evals package, or evaluate.writingbench_path |
| healthbench  | any HealthBench-format JSONL at evaluate.healthbench_path             |

Each is cut to `evaluate.limit` prompts (0 = all), the first ones by id, and judged
with its rubric set's judge template (the default template for imported sets).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from focal.judging.prompts import set_template
from focal.judging.tables import stage_template
from focal.rubrics.formats import load_healthbench, load_writingbench
from focal.rubrics.sets import load_rubric_set, with_keys


def _writingbench_file(params) -> Path | None:
    if params.evaluate.writingbench_path:
        return Path(params.evaluate.writingbench_path)
    spec = importlib.util.find_spec("inspect_evals")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "writingbench" / "benchmark_all.jsonl"
    return path if path.exists() else None


def _set_eval(name: str, params):
    rs = load_rubric_set(Path(params.paths.rubrics) / name)
    return rs.split("eval"), "", set_template(rs)


def _eval(params):
    """The prepared eval split (paths.eval_prompts) with the current set's judge template (paths.judge_template),
    both written by prepare."""
    import pandas as pd

    from focal.rubrics.sets import item_from_row

    path = Path(params.paths.eval_prompts)
    if not path.exists():
        raise ValueError(f"{path} does not exist; run the prepare stage (`dvc repro prepare`)")
    items = [item_from_row(row) for _, row in pd.read_parquet(path).iterrows()]
    return items, "", stage_template(params.paths)


def _health(params):
    return _set_eval("health", params)


def _writingbench(params):
    path = _writingbench_file(params)
    if path is None:
        return [], ("skipped writingbench: the inspect-evals package is not installed (pip install inspect-evals) "
                    "and evaluate.writingbench_path is empty"), None
    limit = params.evaluate.limit or None
    return with_keys(load_writingbench(path, 0.0, limit=limit), "category"), "", None


def _healthbench(params):
    path = params.evaluate.healthbench_path
    if not path:
        return [], "skipped healthbench: set evaluate.healthbench_path to a HealthBench-format JSONL file", None
    if not Path(path).exists():
        return [], f"skipped healthbench: evaluate.healthbench_path {path!r} does not exist", None
    return with_keys(load_healthbench(Path(path), 0.0), "category"), "", None


BENCHMARKS = {"eval": _eval, "health": _health, "writingbench": _writingbench, "healthbench": _healthbench}


def load_benchmark(name: str, params) -> tuple[list, str, str | None]:
    """(items cut to evaluate.limit, a note when an optional source is missing, the judge template or None)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r} in evaluate.benchmarks; valid: {', '.join(BENCHMARKS)}")
    items, note, template = BENCHMARKS[name](params)
    items = sorted(items, key=lambda it: it.id)[: params.evaluate.limit or None]
    return items, note, template
