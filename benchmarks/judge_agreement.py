"""The judge's agreement with labels people already have (HealthBench meta-evaluation format):

    python -m benchmarks.judge_agreement --labels FILE [--params params.yaml] [--json OUT]

Each row of FILE is {prompt_id, prompt: [{role, content}], completion, rubric, binary_labels,
category}; the verdict is the majority of binary_labels (a tie is skipped and counted). The
configured judge (judge.base_url, else the local vLLM server with the base model) judges every
row through the judge cache (paths.judge_cache); prints agreement, Cohen's kappa and the
confusion counts overall and per category (focal/judging/agreement.py defines each).
"""

from __future__ import annotations

import argparse
import json
import sys

from focal.config import load_params
from focal.judging.agreement import load_labelled, markdown
from focal.judging.spec import JudgeSpec
from focal.judging.tables import judge_labelled


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="HealthBench meta-evaluation JSONL")
    ap.add_argument("--params", default="params.yaml", help="the params file (judge.*, paths.judge_cache)")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    try:
        labelled, ties = load_labelled(args.labels)
        params = load_params(args.params)
        spec = JudgeSpec.from_params(params, None)  # HealthBench's rows: Focal's default template
        metrics = judge_labelled(spec, labelled) | {"labels/ties_skipped": ties}
    except ValueError as e:  # a bad row names file:line, item, field and fix; a bad param names the key
        sys.exit(f"error: {e}")
    print(f"{args.labels}: {len(labelled)} labelled judgments ({ties} ties skipped)")
    print(markdown(metrics, "labels"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
    return metrics


if __name__ == "__main__":
    main()
