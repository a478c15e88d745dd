"""Rubric-ARM (arXiv 2602.01511): a rubric generator pi_r and a judge pi_j trained by alternating GRPO on pairs.

    history = alternate(arm, generator_dir, judge_dir, work_dir)   # untrained pair, then judge / generator phases
    judge_rewards([1.0, None], [0.0, 0.0], format_weight=0.1)      # ([1.1, 0.0], [0.55, 0.55])

The method as published: for a preference pair (x, y1, y2, o*), pi_r writes a rubric for x; pi_j, given x, the
rubric and the responses, judges them criterion by criterion and decides which is better. The judge is rewarded
when its decision matches o* plus a small reward for a well-formed judgment; the generator is rewarded by the
frozen judge's accuracy with its rubric. GRPO alternates: the judge first (generator frozen), then the generator
(judge frozen), for `rubricarm.rounds` rounds. Here, in order, how this differs (docs/rubricarm.md says why):

1. The judge is focal's own judge (focal/judging/judge.py, `judge.mode: per_response`): one call per response, the
   rubric's criteria answered one by one as JSON, parsed strictly by focal.judging.judge.parse_answers. The overall
   decision is the rubric score: a response's static score (focal.rewards.aggregators.static over the rubric's weights and
   satisfactions) is s, and the judge prefers y1 when s(y1) > s(y2). A tie decides nothing (counted wrong).
   So the trained judge is trained on exactly the prompts it answers when it serves `judge.*`, and it never sees
   the two responses side by side (no position to be biased by).
2. The judge's reward for one judgment needs a judgment of the other response: both responses of a pair are in
   the same GRPO batch (TRL's sampler does not shuffle; the pairs are shuffled once with the seed), and a
   judgment of y is paired with every judgment of the other response in its group:
       R_j(judgment i of y_c) = mean_j 1[s_c,i > s_r,j] + w_fmt * 1[i is well-formed]
       R_j(judgment j of y_r) = mean_i 1[s_c,i > s_r,j] + w_fmt * 1[j is well-formed]
   where a malformed judgment has no s and decides nothing: the expected accuracy of the judge when each of its
   answers is met by a random answer of its own on the other response (`judge_rewards`).
3. The generator writes rubrics with the prompt and validator of the rubrics stage (focal/rubrics/generate.py's
   GENERATE and parse_rubric, `rubricgen.min_criteria`..`max_criteria`), so the trained generator serves that
   stage unchanged. Its reward is the frozen judge's accuracy on the pair with its rubric,
   `pair_accuracy` of `rubricarm.judge_samples` judgments of each response (1 = greedy); an invalid rubric
   gets 0 (`rubric_reward`).
4. In the judge phase each pair's rubric is the frozen generator's (greedy) for its prompt; when that is not a
   valid rubric, the rubric the pair's label came from is used (`reference_rubric`: the prompt's checked
   criteria; `rubricarm.fallback_rubric`; imported pairs fall back to GENERIC). The report says how many were
   generated.
5. No SFT warm-up (the paper warms both 8B models up with SFT); both start from `rubricarm.generator` /
   `rubricarm.judge` (default: the base model).

Evaluation (`measure`), before training and after every phase, on the held-out pairs (prompts never trained on):
`heldout/accuracy` (the pair: the generator's greedy rubric, the judge's greedy judgments; an invalid rubric or
no decision counts wrong), `heldout/rubric_valid`, `heldout/decided`, `heldout/judge_accuracy` (the judge alone,
with the rubric the label came from, `reference_rubric`), `judge/well_formed` (share of the judge's answers that
parse), and the judge's agreement with the checks: on held-out rollouts the judge answers the prompt's checked
criteria as if they had no check, compared with the checks (`agreement/*`, focal/judging/agreement.py's figures).

Models run in-process (transformers): the trainee inside TRL's GRPOTrainer (focal.training.trainer.build_trainer, as the
policy's training), the frozen partner through `generate`. Each finished phase is saved in the work folder with
its figures; a run started again with the same identity resumes after the last finished phase.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from focal.core.atomic import write_json
from focal.core.cache import content_key
from focal.judging.agreement import agreement_metrics
from focal.judging.prompts import AnswerError, parse_answers, render_response_prompt
from focal.rewards.aggregators import aggregate
from focal.rubrics.generate import GENERATE, parse_rubric
from focal.rubrics.types import Criterion, Item, RubricError

GENERIC = (Criterion("helpful", "The response does what the user asked, correctly and helpfully.", 1.0, "essential",
                     key="helpful"),)  # the rubric of a pair with no rubric of its own (imported pairs)


# ---- the rewards: pure functions ------------------------------------------------------------------

def judgment_score(text: str, criteria) -> float | None:
    """s: the static rubric score of one judgment (sum_c w_c r_c / sum_c w_c); None when it is malformed (not
    the JSON object of focal's per-response judge, or a criterion unanswered or invalid)."""
    try:
        values, _, errors = parse_answers(text, criteria)
    except AnswerError:
        return None
    if errors:
        return None
    r = [[c.satisfaction(values[c.id]) for c in criteria]]
    out = aggregate("static", r, [c.weight for c in criteria], [0], [c.category for c in criteria],
                    [c.key or c.id for c in criteria])
    return float(out.rewards[0])


def correct(s_chosen: float | None, s_rejected: float | None) -> bool:
    """The decision matches o* (chosen preferred): both judged and s_chosen > s_rejected; a tie decides nothing."""
    return s_chosen is not None and s_rejected is not None and s_chosen > s_rejected


def pair_accuracy(chosen: list, rejected: list) -> float:
    """Mean of correct(c, r) over every (judgment of the chosen, judgment of the rejected) combination."""
    if not chosen or not rejected:
        return 0.0
    return sum(correct(c, r) for c in chosen for r in rejected) / (len(chosen) * len(rejected))


def judge_rewards(chosen: list, rejected: list, format_weight: float) -> tuple[list[float], list[float]]:
    """R_j of a group of judgments of the chosen response and a group of the rejected one (module docstring, 2.):
    each judgment's share of correct decisions against the other group, plus format_weight if well-formed."""
    def one(s, others, mine_is_chosen):
        if s is None:
            return 0.0
        wins = sum(correct(s, o) if mine_is_chosen else correct(o, s) for o in others) / len(others)
        return wins + format_weight

    return [one(s, rejected, True) for s in chosen], [one(s, chosen, False) for s in rejected]


def rubric_reward(rubric_valid: bool, chosen: list, rejected: list) -> float:
    """R_r: the frozen judge's accuracy on the pair with this rubric; 0 for an invalid rubric."""
    return pair_accuracy(chosen, rejected) if rubric_valid else 0.0


# ---- prompts ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompt:
    """One row of a phase's TRL dataset (focal.training.trainer.prompt_dataset): its id, which the reward looks up, and the chat."""

    id: str
    messages: tuple

    def chat(self) -> list[dict]:
        return [dict(m) for m in self.messages]


def user(text: str) -> tuple:
    return ({"role": "user", "content": text},)


def rubric_chat(prompt: str, lo: int, hi: int) -> tuple:
    """pi_r's prompt: the rubrics stage's (focal/rubrics/generate.py GENERATE)."""
    return user(GENERATE.format(prompt=prompt, lo=lo, hi=hi))


def judge_chat(template: str, conversation: Item, criteria, response: str) -> tuple:
    """pi_j's prompt: focal's per-response judge prompt (focal/judging/judge.py), the rubric's criteria at once."""
    return user(render_response_prompt(template, conversation, criteria, response))


def parse_generated(text: str, prompt_id: str, prompt: str, lo: int, hi: int) -> tuple[tuple | None, str]:
    """(criteria, '') of a valid rubric (focal/rubrics/generate.py's validator), or (None, why not)."""
    try:
        return parse_rubric(text, prompt_id, prompt, lo, hi).criteria, ""
    except (RubricError, ValueError) as e:
        return None, str(e)


def conversation(pair) -> Item:
    """The pair's conversation as an Item (for the judge prompt's <<conversation>>)."""
    messages = json.loads(pair.messages)
    return Item(pair.prompt_id, pair.prompt, (), "train", tuple(messages) if len(messages) > 1 else ())


def reference_rubric(prompt_id: str, items: dict) -> tuple:
    """The rubric a pair's label came from: its prompt's checked criteria (the judge answers them; their checks
    made the label), else the prompt's whole rubric from the rubric set, else GENERIC (an imported pair)."""
    item = items.get(prompt_id)
    criteria = item.criteria if item is not None else ()
    return tuple(c for c in criteria if c.check is not None) or criteria or GENERIC


# ---- models in-process ------------------------------------------------------------------------------

def load_model(folder):
    """(model, tokenizer) of an HF folder for generation (left padding): float32 on the CPU, bf16 on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if gpu else torch.float32)
    return (model.to("cuda") if gpu else model).eval(), tok


def generate(model, tok, chats: list, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 8) -> list[str]:
    """One completion per chat, batched (left padding): greedy at temperature 0 (the same chat twice is generated
    once), else sampled (seeded per batch)."""
    if temperature == 0:
        keys = [json.dumps(list(c), sort_keys=True) for c in chats]
        unique = list(dict.fromkeys(keys))
        if len(unique) < len(chats):
            texts = dict(zip(unique, generate(model, tok, [json.loads(k) for k in unique], max_new_tokens, 0.0, seed,
                                              batch_size)))
            return [texts[k] for k in keys]
    import torch

    out = []
    for start in range(0, len(chats), batch_size):
        enc = tok.apply_chat_template([list(c) for c in chats[start:start + batch_size]], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True, padding=True).to(model.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed + start)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            end = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            out.append(tok.decode(row[:end], skip_special_tokens=True))
    return out


# ---- what every phase needs --------------------------------------------------------------------------

@dataclass
class Arm:
    """A Rubric-ARM run: the pairs, the rubric set's items and judge template, the settings.

    pairs: focal.training.pairs.COLUMNS (split train / heldout); items: prompt_id -> Item (own rubrics, checks); probes:
    held-out rollouts to measure agreement with the checks (prompt_id, rollout_id, completion); cfg: the
    rubricarm section; lo, hi: rubricgen.min_criteria, max_criteria."""

    pairs: pd.DataFrame
    items: dict
    probes: pd.DataFrame
    template: str
    cfg: object
    lo: int
    hi: int
    seed: int = 0
    log: list = field(default_factory=list)  # every reward call's figures, in order

    def split(self, name: str) -> list:
        return list(self.pairs[self.pairs.split == name].itertuples())


def write_rubrics(arm: Arm, gen, pairs: list) -> dict:
    """prompt_id -> (criteria or None, why not) of pi_r's greedy rubric for each distinct prompt of `pairs`."""
    firsts = {p.prompt_id: p for p in pairs}
    texts = generate(*gen, [rubric_chat(p.prompt, arm.lo, arm.hi) for p in firsts.values()],
                     arm.cfg.rubric_max_tokens)
    return {pid: parse_generated(t, pid, p.prompt, arm.lo, arm.hi) for (pid, p), t in zip(firsts.items(), texts)}


def judge_scores(arm: Arm, judge, asks: list[tuple], samples: int = 1) -> list[list]:
    """For each (conversation, criteria, response): the scores s of `samples` judgments (greedy when 1)."""
    chats = [judge_chat(arm.template, conv, crit, resp) for conv, crit, resp in asks for _ in range(samples)]
    temperature = 0.0 if samples == 1 else arm.cfg.temperature
    texts = generate(*judge, chats, arm.cfg.judge_max_tokens, temperature, arm.seed)
    scores = [judgment_score(t, crit) for t, (_, crit, _) in zip(texts, [a for a in asks for _ in range(samples)])]
    return [scores[i * samples:(i + 1) * samples] for i in range(len(asks))]


# ---- the rewards as TRL reward functions ---------------------------------------------------------------

def _log(log_metric, metrics: dict) -> None:
    if log_metric is not None:
        for k, v in metrics.items():
            log_metric(k, float(v))


class JudgeReward:
    """TRL reward of the judge phase: rows[prompt_id] = (pair index, 'chosen' | 'rejected', criteria); both sides
    of a pair must be in the batch (module docstring, 2.); a judgment whose other side is missing gets None."""

    __name__ = "arm_judge"

    def __init__(self, rows: dict, format_weight: float, log: list):
        self.rows, self.format_weight, self.log = rows, format_weight, log

    def __call__(self, prompts, completions, prompt_id, log_metric=None, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        scores = [judgment_score(t, self.rows[pid][2]) for t, pid in zip(texts, prompt_id)]
        sides: dict = {}
        for i, pid in enumerate(prompt_id):
            pair, side, _ = self.rows[pid]
            sides.setdefault(pair, {"chosen": [], "rejected": []})[side].append(i)
        rewards = [None] * len(texts)
        for got in sides.values():
            if got["chosen"] and got["rejected"]:
                rc, rr = judge_rewards([scores[i] for i in got["chosen"]], [scores[i] for i in got["rejected"]],
                                       self.format_weight)
                for i, r in zip(got["chosen"] + got["rejected"], rc + rr):
                    rewards[i] = r
        paired = [(scores[c], scores[r]) for g in sides.values() for c in g["chosen"] for r in g["rejected"]]
        figures = {"arm/well_formed": sum(s is not None for s in scores) / len(scores),
                   "arm/accuracy": sum(correct(c, r) for c, r in paired) / len(paired) if paired else 0.0}
        self.log.append({"phase": "judge", "rewards": rewards, **figures})
        _log(log_metric, figures)
        return rewards


class RubricReward:
    """TRL reward of the generator phase: rows[prompt_id] = the pair; each rubric is judged by the frozen judge
    on both responses (`rubricarm.judge_samples` judgments each) and rewarded with its accuracy."""

    __name__ = "arm_rubric"

    def __init__(self, rows: dict, arm: Arm, judge):
        self.rows, self.arm, self.judge = rows, arm, judge

    def __call__(self, prompts, completions, prompt_id, log_metric=None, **kwargs) -> list[float]:
        arm = self.arm
        pairs = [self.rows[pid] for pid in prompt_id]
        rubrics = [parse_generated(completion_text(c), p.prompt_id, p.prompt, arm.lo, arm.hi)[0]
                   for c, p in zip(completions, pairs)]
        asks = [(conversation(p), crit, resp) for p, crit in zip(pairs, rubrics) if crit is not None
                for resp in (p.chosen, p.rejected)]
        scored = iter(judge_scores(arm, self.judge, asks, arm.cfg.judge_samples))
        rewards = []
        for crit in rubrics:
            chosen, rejected = (next(scored), next(scored)) if crit is not None else ([], [])
            rewards.append(rubric_reward(crit is not None, chosen, rejected))
        figures = {"arm/valid_rubrics": sum(c is not None for c in rubrics) / len(rubrics),
                   "arm/accuracy": float(np.mean(rewards))}
        arm.log.append({"phase": "generator", "rewards": rewards, **figures})
        _log(log_metric, figures)
        return rewards


def completion_text(c) -> str:
    """The text of a TRL completion: our datasets are conversational, so TRL passes [{"role": "assistant", ...}]."""
    return c if isinstance(c, str) else c[-1]["content"] or ""


# ---- the phases ----------------------------------------------------------------------------------------

def phase_config(cfg, completion_tokens: int, prompts_per_step: int):
    """The train section of one GRPO phase (focal.training.trainer.build_trainer reads it as the policy's training does)."""
    from focal.config import Train

    return Train(max_steps=cfg.steps_per_phase, prompts_per_step=prompts_per_step, num_generations=cfg.group_size,
                 max_completion_length=completion_tokens, learning_rate=cfg.learning_rate,
                 temperature=cfg.temperature, lora_r=cfg.lora_r, lora_layers=cfg.lora_layers,
                 bf16=True)  # bf16 takes effect on CUDA only (focal.training.trainer.grpo_config)


def _train(arm: Arm, trainee_dir, prompts: list[Prompt], reward, tokens: int, per_step: int, out_dir: Path,
           shuffle: bool = True) -> None:
    """GRPO (TRL, focal.training.trainer.build_trainer) of the trainee on `prompts` with `reward`; the result saved to out_dir."""
    from focal.training.trainer import build_trainer, save_policy

    trainer = build_trainer(str(trainee_dir), prompts, reward, phase_config(arm.cfg, tokens, per_step),
                            str(out_dir.parent / f"{out_dir.name}-trl"), arm.seed)
    trainer.shuffle_dataset = shuffle  # TRL's sampler; the judge phase keeps both sides of a pair together
    trainer.train()
    save_policy(trainer, out_dir)
    del trainer
    gc.collect()


def judge_phase(arm: Arm, generator_dir, judge_dir, out_dir: Path) -> dict:
    """Train pi_j with pi_r frozen; returns what happened (rubrics generated, the reward calls)."""
    pairs = arm.split("train")
    rubrics = write_rubrics(arm, load_model(generator_dir), pairs)
    rows, prompts = {}, []
    order = np.random.default_rng(arm.seed).permutation(len(pairs))
    generated = 0
    for k in order:
        p = pairs[k]
        crit, _ = rubrics[p.prompt_id]
        if crit is None:
            if not arm.cfg.fallback_rubric:
                continue
            crit = reference_rubric(p.prompt_id, arm.items)
        else:
            generated += 1
        for side in ("chosen", "rejected"):
            pid = f"j{len(prompts)}"
            rows[pid] = (int(k), side, crit)
            prompts.append(Prompt(pid, judge_chat(arm.template, conversation(p), crit, getattr(p, side))))
    start = len(arm.log)
    if prompts:
        _train(arm, judge_dir, prompts, JudgeReward(rows, arm.cfg.format_weight, arm.log), arm.cfg.judge_max_tokens,
               2 * arm.cfg.pairs_per_step, out_dir, shuffle=False)
    return {"pairs": len(prompts) // 2, "generated_rubrics": generated, "skipped": len(pairs) - len(prompts) // 2,
            "calls": arm.log[start:]}


def generator_phase(arm: Arm, generator_dir, judge_dir, out_dir: Path) -> dict:
    """Train pi_r with pi_j frozen; returns what happened (the reward calls)."""
    pairs = arm.split("train")
    if not pairs:
        return {"pairs": 0}
    rows = {f"g{k}": p for k, p in enumerate(pairs)}
    prompts = [Prompt(pid, rubric_chat(p.prompt, arm.lo, arm.hi)) for pid, p in rows.items()]
    start = len(arm.log)
    _train(arm, generator_dir, prompts, RubricReward(rows, arm, load_model(judge_dir)), arm.cfg.rubric_max_tokens,
           arm.cfg.pairs_per_step, out_dir)
    return {"pairs": len(pairs), "calls": arm.log[start:]}


# ---- evaluation ------------------------------------------------------------------------------------------

def measure(arm: Arm, generator_dir, judge_dir) -> dict:
    """The pair on the held-out pairs, and the judge against the checks (module docstring)."""
    pairs = arm.split("heldout")[: arm.cfg.eval_pairs or None]
    gen = load_model(generator_dir)
    rubrics = write_rubrics(arm, gen, pairs) if pairs else {}
    del gen
    asks, index = [], {}

    def ask(p, crit, resp) -> int:  # one judgment per distinct (rubric, response): pairs share responses
        key = content_key([dataclasses.astuple(c) for c in crit], p.prompt_id, resp)
        if key not in index:
            index[key] = len(asks)
            asks.append((conversation(p), crit, resp))
        return index[key]

    generated, reference = [], []
    for p in pairs:
        crit = rubrics[p.prompt_id][0]
        if crit is not None:
            generated.append((ask(p, crit, p.chosen), ask(p, crit, p.rejected)))
        ref = reference_rubric(p.prompt_id, arm.items)
        reference.append((ask(p, ref, p.chosen), ask(p, ref, p.rejected)))
    probes = probe_asks(arm)
    texts = generate(*load_model(judge_dir), [judge_chat(arm.template, *a) for a in asks + [q[:3] for q in probes]],
                     arm.cfg.judge_max_tokens)
    s = [judgment_score(t, crit) for t, (_, crit, _) in zip(texts, asks)]
    n = len(pairs) or math.nan
    out = {"heldout/pairs": len(pairs),
           "heldout/accuracy": sum(correct(s[c], s[r]) for c, r in generated) / n,
           "heldout/decided": sum(None not in (s[c], s[r]) and s[c] != s[r] for c, r in generated) / n,
           "heldout/rubric_valid": len(generated) / n,
           "heldout/judge_accuracy": sum(correct(s[c], s[r]) for c, r in reference) / n}
    truth, verdict, keys, formed = [], [], [], [x is not None for x in s]
    for text, (_, crit, _, checked) in zip(texts[len(asks):], probes):
        try:
            values, _, errors = parse_answers(text, crit)
        except AnswerError:
            values, errors = {}, {c.id: "malformed" for c in crit}
        formed.append(not errors)
        for c, t in zip(crit, checked):
            truth.append(t)
            verdict.append(math.nan if c.id in errors else c.satisfaction(values[c.id]))
            keys.append(c.key or c.id)
    out["judge/well_formed"] = sum(formed) / len(formed) if formed else math.nan
    why = [w for _, w in rubrics.values() if w]
    out["example/judgment"] = texts[0][:300] if texts else None  # what the judge writes, for the reader
    out["example/rubric_rejected"] = why[0][:300] if why else None  # why a generated rubric was not valid
    out.update(agreement_metrics(truth, verdict, keys, "agreement", "by_key"))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def probe_asks(arm: Arm) -> list[tuple]:
    """(conversation, checked criteria without their checks, response, the checks' satisfactions) for the first
    `rubricarm.agreement_rollouts` held-out rollouts whose prompt has checked criteria."""
    from focal.judging.prompts import check_judgment, probe, requests_for

    out = []
    for r in arm.probes.itertuples():
        item = arm.items.get(r.prompt_id)
        if item is None:
            continue
        checked = requests_for([{"prompt_id": r.prompt_id, "rollout_id": r.rollout_id, "completion": r.completion}],
                               arm.items, "rubricarm probes", only_checks=True)
        if checked:
            truth = [check_judgment(q).score for q in checked]
            out.append((item, tuple(probe(q).criterion for q in checked), r.completion, truth))
    return out[: arm.cfg.agreement_rollouts or None]


# ---- the alternation --------------------------------------------------------------------------------------

def run_key(arm: Arm, generator_dir, judge_dir) -> str:
    """Everything that defines a run: both starting models' weights, the pairs, the template, the settings."""
    from focal.serving.weights import fingerprint

    cfg = {k: v for k, v in dataclasses.asdict(arm.cfg).items() if k not in ("eval_pairs", "agreement_rollouts")}
    return content_key("rubricarm", fingerprint(generator_dir), fingerprint(judge_dir), sorted(arm.pairs.pair_id),
                       list(arm.pairs.split), arm.template, cfg, arm.lo, arm.hi, arm.seed)[:16]


PHASES = {"judge": judge_phase, "generator": generator_phase}  # in the order of a round: the judge first


def alternate(arm: Arm, generator_dir, judge_dir, work: Path, progress=print) -> tuple[Path, Path, dict]:
    """Measure the untrained pair, then `rubricarm.rounds` rounds of (judge phase, generator phase), measuring after
    each. Returns (generator folder, judge folder, {phase name: figures}). Each finished phase is kept in `work`
    (its model and figures): started again, the run resumes after the last finished phase."""
    models = {"generator": Path(generator_dir), "judge": Path(judge_dir)}
    report = {"r0_untrained": run_phase(arm, None, work / "r0_untrained", models, progress)}
    for r in range(1, arm.cfg.rounds + 1):
        for name in PHASES:
            report[f"r{r}_{name}"] = run_phase(arm, name, work / f"r{r}_{name}", models, progress)
    return models["generator"], models["judge"], report


def run_phase(arm: Arm, name: str | None, out: Path, models: dict, progress) -> dict:
    """Train `models[name]` (None: nothing) with the other frozen, then measure the pair; `models[name]` becomes the
    trained folder. A phase whose figures are in `out` finished earlier: it is not run again."""
    done = out / "phase.json"
    if done.exists():
        figures = json.loads(done.read_text())
        progress(f"rubricarm: {out.name}: finished earlier, kept ({out})")
    else:
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        trained = PHASES[name](arm, models["generator"], models["judge"], out / "model") if name else {}
        if trained.get("pairs"):
            models[name] = out / "model"
        t1 = time.perf_counter()
        figures = {**measure(arm, models["generator"], models["judge"]), "seconds/train": round(t1 - t0, 1),
                   "seconds/measure": round(time.perf_counter() - t1, 1)}
        calls = trained.pop("calls", [])
        figures.update({f"train/{k}": v for k, v in trained.items()})
        if calls:
            figures["train/rewards"] = [c["rewards"] for c in calls]
            figures["train/reward_mean"] = float(np.mean([x for c in calls for x in c["rewards"] if x is not None]
                                                         or [0.0]))
            figures["train/accuracy"] = float(np.mean([c["arm/accuracy"] for c in calls]))
            for k in ("arm/well_formed", "arm/valid_rubrics"):  # the judge's judgments, the generator's rubrics
                if k in calls[0]:
                    figures[f"train/{k.split('/')[1]}"] = float(np.mean([c[k] for c in calls]))
        write_json(done, figures)
        progress(f"rubricarm: {out.name}: held-out accuracy {figures['heldout/accuracy']}, judge alone "
                 f"{figures['heldout/judge_accuracy']}, valid rubrics {figures['heldout/rubric_valid']}, agreement "
                 f"with the checks {figures.get('agreement/overall')} (kappa {figures.get('agreement/kappa')}); "
                 f"{figures['seconds/train']} s training, {figures['seconds/measure']} s measuring")
        return figures
    if figures.get("train/pairs"):
        models[name] = out / "model"
    return figures
