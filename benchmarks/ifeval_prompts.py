"""Write an IFEval-style rubric set's prompts from its tasks file and IFEval's registry.

    python -m benchmarks.ifeval_prompts [--set rubrics/ifeval]     # tasks.yaml -> prompts.jsonl

tasks.yaml holds the base tasks by split, the instruction pool, the number of prompts per task
and split, the number of instructions per prompt and the seed; focal.rubrics.ifeval.generate_prompts does
the drawing (non-conflicting instructions, each written by its checker). The output is IFEval's
input format plus a `split` field, so the rubric set loads it with `format: ifeval` and any IFEval
scorer reads it. Deterministic: the same tasks file gives the same bytes (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from focal.core.atomic import write_text
from focal.rubrics.ifeval import generate_prompts


def build(tasks_file: Path) -> list[dict]:
    """The rows for one tasks file (see the module docstring)."""
    spec = yaml.safe_load(Path(tasks_file).read_text())
    for key in ("seed", "per_task", "instructions", "pool", "tasks"):
        if key not in spec:
            raise ValueError(f"{tasks_file}: field {key!r} is missing; see rubrics/ifeval/tasks.yaml")
    rows = []
    for split in ("train", "eval"):
        tasks = [{"id": tid, "text": text, "split": split} for tid, text in (spec["tasks"].get(split) or {}).items()]
        rows += generate_prompts(tasks, list(spec["pool"]), int(spec["per_task"][split]), int(spec["instructions"]["min"]),
                                 int(spec["instructions"]["max"]), int(spec["seed"]))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="rubrics/ifeval", help="rubric set folder holding tasks.yaml")
    args = ap.parse_args(argv)
    folder = Path(args.set)
    try:
        rows = build(folder / "tasks.yaml")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    write_text(folder / "prompts.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {folder / 'prompts.jsonl'}")


if __name__ == "__main__":
    main()
