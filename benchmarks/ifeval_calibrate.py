"""How often the base policy meets each instruction of an IFEval-format rubric set (strict and loose).

    python -m benchmarks.ifeval_calibrate [--set rubrics/ifeval] [--samples 2] [--max-tokens 64] [--policy models/base]

Samples every prompt of the set (both splits) and prints, per instruction id, how many responses
it was asked of and the strict and loose pass rates through IFEval's own checkers. An instruction
that the base policy meets never or always cannot move in training and only dilutes a comparison:
pick the pool in tasks.yaml from the ones in between (docs/evidence.md has the table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from focal.rubrics.formats import read_jsonl
from focal.rubrics.ifeval import score_response
from focal.serving.rollouts import Sampling, TransformersBackend


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="rubrics/ifeval")
    ap.add_argument("--policy", default="models/base")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--out", default="", help="also write the per-instruction figures as JSON here")
    args = ap.parse_args(argv)
    rows = [r for _, r in read_jsonl(Path(args.set) / "prompts.jsonl")]
    backend = TransformersBackend(args.policy, batch_prompts=16)
    comps = backend.sample([[{"role": "user", "content": r["prompt"]}] for r in rows],
                           Sampling(args.samples, args.temperature, 1.0, args.max_tokens, 1234))
    table: dict[str, list] = {}
    for row, cs in zip(rows, comps):
        for c in cs:
            for iid, strict, loose in score_response("ifeval", row, c.text).instructions:
                table.setdefault(iid, []).append((strict, loose))
    print(f"| instruction | responses | strict | loose |\n|---|---|---|---|")
    out = {}
    for iid, v in sorted(table.items(), key=lambda kv: -sum(s for s, _ in kv[1]) / len(kv[1])):
        st, lo = sum(s for s, _ in v) / len(v), sum(x for _, x in v) / len(v)
        out[iid] = {"responses": len(v), "strict": st, "loose": lo}
        print(f"| {iid} | {len(v)} | {st:.2f} | {lo:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
