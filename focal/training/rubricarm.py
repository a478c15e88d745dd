"""Rubric-ARM (arXiv 2602.01511): a rubric generator pi_r and a pairwise judge pi_j, warmed up with SFT, then
trained by alternating GRPO on preference pairs; measured on held-out pairs after each phase.

    run = prepare_run(params.rubricarm, params.paths, params.rollouts, params.serve, seed=0)   # pairs, rubrics
    for phase, figures in learn(run, generator_dir, judge_dir, work):                         # untrained, sft, arm
        print(phase, figures["heldout_accuracy"])

The method as published: for a preference pair (x, y1, y2, o*), pi_r writes a rubric for x; pi_j, given x, the rubric
and both responses, checks compliance, analyses each response criterion by criterion and names a winner. Both
models (Qwen3-8B) are warmed up with SFT; then GRPO alternates, the judge first (generator frozen), rewarded when its
winner matches o* plus a format reward, then the generator (judge frozen), rewarded by the frozen judge's accuracy
with its rubric. Here, in order, how this differs (docs/rubricarm.md says why):

1. Pairs are labelled by checkers, not people: G rollouts of each prompt of an IFEval-format rubric set
   (`rubricarm.rubric_set`), the one that follows more of the prompt's instructions (IFEval's checkers,
   focal/rubrics/ifeval.py) is chosen, ties dropped (focal/training/pairs.py). Train pairs come from the set's train
   prompts, held-out pairs from its eval prompts (other base tasks), at most `pairs_per_prompt` /
   `heldout_pairs_per_prompt` of each. The rollouts' sampling seed is the run's seed: each seed is a new draw of
   pairs and a new training.
2. The layouts are ours and short (a 135M model writes them; rubricarm_formats.py): the compliance check counts the
   hard rules each response meets (the paper names one gatekeeper criterion and explains it), an analysis line is a
   verdict (`met` / `not met`) with no evidence quoted, and the winner line ends the judgment with no
   justification. Only the winner line decides. The rubric is a numbered list with `[Hard Rule]` / `[Principle]`
   tags, read line by line, never JSON.
3. Oracle rubrics: a prompt's rubric is its instructions' own texts (what each checker's build_description wrote,
   the criteria of the rubric set), all `[Hard Rule]`, as written (imperative), not rephrased as "The response
   ...". They are the generator's SFT targets and the judge's rubric when the judge is measured alone. Imported
   pairs (no checks) have one generic `[Principle]` criterion.
4. SFT targets come from the checkers: for each train pair, in both orders, per criterion met or not for each
   response, then the winner (the label); the generator's targets are the oracle rubrics of the train prompts. The
   paper's SFT data are judgments and rubrics written by larger models.
5. LoRA on the top layers (`rubricarm.sft.*` for SFT, `rubricarm.lora_*` for GRPO); each phase saves a merged
   plain folder, and GRPO starts from the SFT model with a fresh adapter of its own.
6. Every pair is judged in both orders, in SFT, in GRPO (each order its own prompt) and in every measurement:
   position bias is trained against and reported.
7. Rewards: the judge's is 1[winner right] + `format_weight` * 1[well formed] for each order alone (a malformed
   judgment gets 0); the generator's is the frozen judge's accuracy with its rubric on its pair in both orders (a
   malformed verdict 0.5, a coin flip), 0 for a rubric with no numbered criterion.
8. In the judge phase each pair's rubric is the frozen generator's greedy rubric for its prompt, or the oracle
   rubric when it wrote none (`rubricarm.fallback_rubric`).

Measurement (`measure`), on the held-out pairs in both orders, greedy. Chance is 0.5 everywhere: a malformed verdict
counts half right. The judge alone with the oracle rubric: `heldout_accuracy` (both orders), `accuracy_ab`,
`accuracy_ba`, `accuracy_both` (right in both orders; chance 0.25), `well_formed`; its preference read by forcing
`Winner: Response` after its own analysis and comparing the next-token probabilities of ` A` and ` B`
(`forced_*`; `forced_prefers_a`, the mean P(A), shows position bias); its analysis lines against the checkers
(`criteria_agreement`). The generator: the same judge's accuracy with the generator's greedy rubrics
(`generated_accuracy`, `rubric_valid`) against the oracle rubrics and no rubric on the same pairs
(`oracle_subset_accuracy`, `norubric_accuracy`).

Models run in-process (transformers): SFT in TRL's SFTTrainer, GRPO in its GRPOTrainer (focal.training.trainer,
as the policy's training), the frozen partner and the measurements through `generate`. Each finished phase keeps
its models and figures in the work folder: a run started again resumes after its last finished phase.
"""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from focal.core.atomic import write_json
from focal.core.cache import content_key
from focal.rubrics.checks import run_check
from focal.rubrics.types import Item
from focal.training.rubricarm_formats import (HARD, PRINCIPLE, RubricLine, analysis, both_orders, forced_prefix,
                                              judge_prompt, judge_reward, judge_target, order_score, parse_rubric_text,
                                              parse_winner, preferred, render_rubric, rubric_prompt, rubric_reward)

GENERIC = RubricLine("The response does what the user asked, correctly and helpfully.", PRINCIPLE)
PHASES = ("untrained", "sft", "arm")  # the records' phases, in order


# ---- oracle rubrics and the checkers' verdicts ------------------------------------------------------------

def checked(item: Item | None) -> tuple:
    """The criteria of an item that a checker decides."""
    return tuple(c for c in item.criteria if c.check is not None) if item is not None else ()


def oracle_rubric(item: Item | None) -> tuple[RubricLine, ...]:
    """The prompt's own rubric: its checked criteria's texts, each a hard rule (a pitfall says what to avoid); an
    imported prompt (no item, no checks): GENERIC."""
    return tuple(RubricLine(f"The response avoids this: {c.text}" if c.pitfall else c.text, HARD)
                 for c in checked(item)) or (GENERIC,)


def oracle_verdicts(item: Item | None, response: str) -> tuple[bool, ...] | None:
    """Per criterion of oracle_rubric(item): whether the response meets it, by its checker; None without checks."""
    crit = checked(item)
    return tuple(c.satisfaction(run_check(c.check.name, c.check.params, response)) >= 0.5 for c in crit) or None


def orders(pair) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """The pair shown both ways: (Response A, Response B, the right verdict)."""
    return (pair.chosen, pair.rejected, "A"), (pair.rejected, pair.chosen, "B")


# ---- a run: the pairs, the rubric set, the settings --------------------------------------------------------

@dataclass
class Run:
    """One Rubric-ARM run: pairs (focal.training.pairs.COLUMNS, split train / heldout), items (prompt_id -> Item),
    cfg (the rubricarm section), the seed of the pairs and of training."""

    pairs: pd.DataFrame
    items: dict
    cfg: object
    seed: int = 0
    log: list = field(default_factory=list)  # every GRPO reward call's figures, in order

    def split(self, name: str) -> list:
        return list(self.pairs[self.pairs.split == name].itertuples())

    def rubric(self, pair) -> tuple[RubricLine, ...]:
        return oracle_rubric(self.items.get(pair.prompt_id))

    def verdicts(self, pair) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """(met by the chosen, met by the rejected) per oracle criterion; an imported pair: chosen meets GENERIC."""
        item = self.items.get(pair.prompt_id)
        chosen, rejected = oracle_verdicts(item, pair.chosen), oracle_verdicts(item, pair.rejected)
        return (chosen, rejected) if chosen is not None else ((True,), (False,))


def prepare_run(cfg, paths, client, serve, seed: int) -> Run:
    """The run of one seed: its pairs (sampled and labelled by the checkers, or imported) and the rubric set."""
    from focal.rubrics.sets import load_rubric_set
    from focal.serving.rollouts import Sampling
    from focal.training.pairs import cap_per_prompt, import_pairs, sample_checked_pairs, split_by_items, split_by_prompt

    items = {it.id: it for it in load_rubric_set(Path(paths.rubrics) / cfg.rubric_set).items}
    if cfg.pairs_source != "checks":
        pairs = split_by_prompt(import_pairs(cfg.pairs_source, cfg.pairs_format), cfg.heldout_share)
    else:
        chosen = [it for split in ("train", "eval") for it in
                  sorted((it for it in items.values() if it.split == split), key=lambda it: it.id)[:cfg.max_prompts or None]]
        sampling = Sampling(cfg.pair_generations, cfg.pair_temperature, 1.0, cfg.pair_max_tokens, seed)
        pairs = sample_checked_pairs(chosen, items, cfg.policy or paths.base_model, sampling, cfg.backend, client,
                                     serve, paths.rollout_cache)
        pairs = split_by_items(pairs, items)
    pairs = cap_per_prompt(pairs, {"train": cfg.pairs_per_prompt, "heldout": cfg.heldout_pairs_per_prompt}, seed)
    counts = pairs.split.value_counts()
    for name in ("train", "heldout"):
        if not counts.get(name, 0):
            raise ValueError(f"rubricarm: no {name} pair ({len(pairs)} pairs in all): raise rubricarm.pair_generations "
                             "or rubricarm.max_prompts, or import pairs (rubricarm.pairs_source)")
    return Run(pairs, items, cfg, seed)


# ---- prompts -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompt:
    """One row of a GRPO phase's dataset (focal.training.trainer.prompt_dataset): its id, which the reward looks up,
    and the chat."""

    id: str
    messages: tuple

    def chat(self) -> list[dict]:
        return [dict(m) for m in self.messages]


def user(text: str) -> tuple:
    return ({"role": "user", "content": text},)


def judge_chat(pair, rubric, a: str, b: str) -> tuple:
    return user(judge_prompt(pair.prompt, rubric, a, b))


def rubric_chat(pair, most: int) -> tuple:
    return user(rubric_prompt(pair.prompt, most))


def completion_text(c) -> str:
    """The text of a TRL completion: our datasets are conversational, so TRL passes [{"role": "assistant", ...}]."""
    return c if isinstance(c, str) else c[-1]["content"] or ""


# ---- models in-process ------------------------------------------------------------------------------------------

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
    """One completion per chat, batched by prompt length (left padding): greedy at temperature 0 (the same chat twice
    is generated once), else sampled (seeded per batch)."""
    if temperature == 0:
        keys = [json.dumps(list(c), sort_keys=True) for c in chats]
        unique = list(dict.fromkeys(keys))
        if len(unique) < len(chats):
            texts = dict(zip(unique, generate(model, tok, [json.loads(k) for k in unique], max_new_tokens, 0.0, seed,
                                              batch_size)))
            return [texts[k] for k in keys]
    import torch

    ids = [tok.apply_chat_template(list(c), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
           for c in chats]
    order = sorted(range(len(chats)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    out = [""] * len(chats)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(model.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed + start)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        for i, row in zip(idx, gen[:, enc["input_ids"].shape[1]:].tolist()):
            end = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            out[i] = tok.decode(row[:end], skip_special_tokens=True)
    return out


def forced_preference(model, tok, chats: list, prefixes: list[str], batch_size: int = 8) -> list[float]:
    """P(A) / (P(A) + P(B)) for each chat whose reply is made to begin with its prefix (ending `Winner: Response`):
    the probabilities of the tokens that write ` A` and ` B` next, in one forward pass."""
    import torch

    rows = []
    for chat, prefix in zip(chats, prefixes):
        text = tok.apply_chat_template(list(chat), add_generation_prompt=True, tokenize=False) + prefix
        a, b = (tok(text + s, add_special_tokens=False)["input_ids"] for s in (" A", " B"))
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if k is None:
            raise ValueError("the judge's tokenizer writes ' A' and ' B' alike: the forced-prefix reading needs a "
                             "tokenizer that tells them apart")
        rows.append((a[:k], a[k], b[k]))
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        width = max(len(r[0]) for r in batch)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(r[0])) + r[0] for r in batch])
        mask = torch.tensor([[0] * (width - len(r[0])) + [1] * len(r[0]) for r in batch])
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        out += [float(torch.sigmoid(row[a] - row[b])) for row, (_, a, b) in zip(logp, batch)]
    return out


def write_rubrics(run: Run, gen, pairs: list) -> dict:
    """prompt_id -> pi_r's greedy rubric (() when it wrote no numbered criterion) for each distinct prompt."""
    firsts = {p.prompt_id: p for p in pairs}
    texts = generate(*gen, [rubric_chat(p, run.cfg.max_criteria) for p in firsts.values()], run.cfg.rubric_max_tokens,
                     batch_size=run.cfg.generate_batch)
    return {pid: (parse_rubric_text(t, run.cfg.max_criteria), t) for pid, t in zip(firsts, texts)}


def judge_verdicts(run: Run, judge, asks: list[tuple], samples: int = 1) -> list[list]:
    """For each (pair, rubric, Response A, Response B): the verdicts of `samples` judgments (greedy when 1)."""
    chats = [judge_chat(p, rubric, a, b) for p, rubric, a, b in asks for _ in range(samples)]
    temperature = 0.0 if samples == 1 else run.cfg.temperature
    texts = generate(*judge, chats, run.cfg.judge_max_tokens, temperature, run.seed, run.cfg.generate_batch)
    verdicts = [parse_winner(t) for t in texts]
    return [verdicts[i * samples:(i + 1) * samples] for i in range(len(asks))]


# ---- SFT warm-up ----------------------------------------------------------------------------------------------------

def example(chat: tuple, target: str) -> dict:
    """One SFT row in TRL's conversational prompt-completion form (the loss is on the completion only)."""
    return {"prompt": list(chat), "completion": [{"role": "assistant", "content": target}]}


def judge_examples(run: Run) -> list[dict]:
    """The judge's SFT rows: every train pair in both orders with its oracle rubric, the checkers' verdicts as the
    analysis and the label as the winner (rubricarm_formats.judge_target)."""
    out = []
    for p in run.split("train"):
        rubric, (met_c, met_r) = run.rubric(p), run.verdicts(p)
        for (a, b, right), (met_a, met_b) in zip(orders(p), ((met_c, met_r), (met_r, met_c))):
            out.append(example(judge_chat(p, rubric, a, b), judge_target(rubric, met_a, met_b, right)))
    return out


def generator_examples(run: Run) -> list[dict]:
    """The generator's SFT rows: each train prompt's oracle rubric, numbered."""
    firsts = {p.prompt_id: p for p in run.split("train")}
    return [example(rubric_chat(p, run.cfg.max_criteria), render_rubric(run.rubric(p))) for p in firsts.values()]


def sft(start_dir, examples: list[dict], settings, epochs: float, out_dir: Path, seed: int) -> dict:
    """SFT (TRL's SFTTrainer, LoRA from rubricarm.sft) of start_dir on `examples`; the merged model to out_dir.
    Returns the steps and the first and last logged training loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from focal.training.trainer import lora_config, save_policy

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(start_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32)
    gpu = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(out_dir.parent / f"{out_dir.name}-trl"), use_cpu=not gpu, bf16=gpu,
                     per_device_train_batch_size=settings.batch_size, num_train_epochs=epochs,
                     max_steps=settings.max_steps or -1, learning_rate=settings.learning_rate, logging_steps=1,
                     report_to="none", save_strategy="no", seed=seed, activation_checkpointing=False,
                     max_length=settings.max_length, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok,
                         peft_config=lora_config(settings, model))
    trainer.train()
    save_policy(trainer, out_dir)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    figures = {"steps": trainer.state.global_step, "examples": len(examples),
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    del trainer, model
    gc.collect()
    return figures


# ---- GRPO: the rewards as TRL reward functions ---------------------------------------------------------------------

def _log(log_metric, metrics: dict) -> None:
    if log_metric is not None:
        for k, v in metrics.items():
            log_metric(k, float(v))


class JudgeReward:
    """TRL reward of the judge phase: right[prompt_id] is the verdict that matches the label in that prompt's order."""

    __name__ = "arm_judge"

    def __init__(self, right: dict, format_weight: float, log: list):
        self.right, self.format_weight, self.log = right, format_weight, log

    def __call__(self, prompts, completions, prompt_id, log_metric=None, **kwargs) -> list[float]:
        verdicts = [parse_winner(completion_text(c)) for c in completions]
        rewards = [judge_reward(v, self.right[pid], self.format_weight) for v, pid in zip(verdicts, prompt_id)]
        figures = {"arm/well_formed": float(np.mean([v is not None for v in verdicts])),
                   "arm/accuracy": float(np.mean([order_score(v, self.right[pid]) for v, pid in zip(verdicts, prompt_id)]))}
        self.log.append({"phase": "judge", "rewards": rewards, **figures})
        _log(log_metric, figures)
        return rewards


class RubricReward:
    """TRL reward of the generator phase: rows[prompt_id] = the pair; each rubric is judged by the frozen judge on its
    pair in both orders (`rubricarm.judge_samples` judgments of each) and rewarded with the accuracy."""

    __name__ = "arm_rubric"

    def __init__(self, rows: dict, run: Run, judge):
        self.rows, self.run, self.judge = rows, run, judge

    def __call__(self, prompts, completions, prompt_id, log_metric=None, **kwargs) -> list[float]:
        run = self.run
        pairs = [self.rows[pid] for pid in prompt_id]
        rubrics = [parse_rubric_text(completion_text(c), run.cfg.max_criteria) for c in completions]
        asks = [(p, rubric, a, b) for p, rubric in zip(pairs, rubrics) if rubric for a, b, _ in orders(p)]
        judged = iter(judge_verdicts(run, self.judge, asks, run.cfg.judge_samples))
        rewards = []
        for rubric in rubrics:
            ab, ba = (next(judged), next(judged)) if rubric else ([], [])
            rewards.append(rubric_reward(bool(rubric), ab, ba))
        figures = {"arm/rubric_valid": float(np.mean([bool(r) for r in rubrics])), "arm/accuracy": float(np.mean(rewards))}
        run.log.append({"phase": "generator", "rewards": rewards, **figures})
        _log(log_metric, figures)
        return rewards


# ---- GRPO: the phases --------------------------------------------------------------------------------------------

def phase_config(cfg, completion_tokens: int, prompts_per_step: int):
    """The train section of one GRPO phase (focal.training.trainer.build_trainer reads it as the policy's training does)."""
    from focal.config import Train

    return Train(max_steps=cfg.steps_per_phase, prompts_per_step=prompts_per_step, num_generations=cfg.group_size,
                 max_completion_length=completion_tokens, learning_rate=cfg.learning_rate,
                 temperature=cfg.temperature, lora_r=cfg.lora_r, lora_layers=cfg.lora_layers,
                 bf16=True)  # bf16 takes effect on CUDA only (focal.training.trainer.grpo_config)


def _train(run: Run, trainee_dir, prompts: list[Prompt], reward, tokens: int, per_step: int, out_dir: Path) -> None:
    """GRPO (TRL, focal.training.trainer.build_trainer) of the trainee on `prompts` with `reward`; saved to out_dir."""
    from focal.training.trainer import build_trainer, save_policy

    trainer = build_trainer(str(trainee_dir), prompts, reward, phase_config(run.cfg, tokens, per_step),
                            str(out_dir.parent / f"{out_dir.name}-trl"), run.seed)
    trainer.train()
    save_policy(trainer, out_dir)
    del trainer
    gc.collect()


def judge_phase(run: Run, generator_dir, judge_dir, out_dir: Path) -> dict:
    """GRPO of pi_j with pi_r frozen: every train pair in both orders, each its own prompt."""
    cfg, pairs = run.cfg, run.split("train")
    rubrics = write_rubrics(run, load_model(generator_dir), pairs)
    prompts, right, generated = [], {}, 0
    for p in pairs:
        rubric = rubrics[p.prompt_id][0]
        if not rubric:
            if not cfg.fallback_rubric:
                continue
            rubric = run.rubric(p)
        else:
            generated += 1
        for a, b, verdict in orders(p):
            pid = f"j{len(prompts)}"
            right[pid] = verdict
            prompts.append(Prompt(pid, judge_chat(p, rubric, a, b)))
    if not prompts:
        raise ValueError("rubricarm: the judge phase has no pair: the generator wrote no rubric with a numbered "
                         "criterion; set rubricarm.fallback_rubric: true (the oracle rubric stands in)")
    _train(run, judge_dir, prompts, JudgeReward(right, cfg.format_weight, run.log), cfg.judge_max_tokens,
           2 * cfg.pairs_per_step, out_dir)
    return {"pairs": len(prompts) // 2, "generated_rubrics": generated}


def generator_phase(run: Run, generator_dir, judge_dir, out_dir: Path) -> dict:
    """GRPO of pi_r with pi_j frozen: one prompt per train pair, rewarded on that pair."""
    rows = {f"g{k}": p for k, p in enumerate(run.split("train"))}
    prompts = [Prompt(pid, rubric_chat(p, run.cfg.max_criteria)) for pid, p in rows.items()]
    _train(run, generator_dir, prompts, RubricReward(rows, run, load_model(judge_dir)), run.cfg.rubric_max_tokens,
           run.cfg.pairs_per_step, out_dir)
    return {"pairs": len(rows)}


# ---- measurement ----------------------------------------------------------------------------------------------------

def measure(run: Run, generator_dir, judge_dir) -> dict:
    """The judge and the generator on the held-out pairs, both orders, greedy (module docstring)."""
    cfg = run.cfg
    pairs = run.split("heldout")[: cfg.eval_pairs or None]
    rubrics = write_rubrics(run, load_model(generator_dir), pairs)
    subset, seen = [], {}  # the pairs the generator is measured on: the first generator_pairs_per_prompt of a prompt
    for k, p in enumerate(pairs):
        seen[p.prompt_id] = seen.get(p.prompt_id, 0) + 1
        if seen[p.prompt_id] <= (cfg.generator_pairs_per_prompt or math.inf):
            subset.append(k)
    conditions = {"oracle": [(k, run.rubric(p)) for k, p in enumerate(pairs)],  # (pair index, rubric)
                  "generated": [(k, rubrics[pairs[k].prompt_id][0] or None) for k in subset],
                  "none": [(k, ()) for k in subset]}
    chats, where = [], []
    for name, rows in conditions.items():
        for j, (k, rubric) in enumerate(rows):
            if rubric is None:  # the generator wrote no criterion: not judged, both verdicts coin flips
                continue
            for o, (a, b, _) in enumerate(orders(pairs[k])):
                chats.append(judge_chat(pairs[k], rubric, a, b))
                where.append((name, j, o))
    judge = load_model(judge_dir)
    said = {name: [["", ""] for _ in rows] for name, rows in conditions.items()}
    for (name, j, o), text in zip(where, generate(*judge, chats, cfg.judge_max_tokens, batch_size=cfg.generate_batch)):
        said[name][j][o] = text

    def figures(name, rows=None) -> dict:  # both_orders of one condition's judgments (of `rows` only, if given)
        texts = said[name] if rows is None else [said[name][j] for j in rows]
        return both_orders([parse_winner(ab) for ab, _ in texts], [parse_winner(ba) for _, ba in texts])

    oracle, none = figures("oracle"), figures("none")
    p_a = forced_preference(*judge, [c for c, w in zip(chats, where) if w[0] == "oracle"],
                            [forced_prefix(t) for pair in said["oracle"] for t in pair], cfg.generate_batch)
    forced = both_orders([preferred(x) for x in p_a[0::2]], [preferred(x) for x in p_a[1::2]])
    return {"heldout_pairs": len(pairs), "train_pairs": len(run.split("train")),
            "heldout_accuracy": oracle["accuracy"], "well_formed": oracle["well_formed"],
            **{k: oracle[k] for k in ("accuracy_ab", "accuracy_ba", "accuracy_both")},
            **{f"forced_{k}": forced[k] for k in ("accuracy", "accuracy_ab", "accuracy_ba", "accuracy_both")},
            "forced_prefers_a": float(np.mean(p_a)) if p_a else None,
            **criteria_agreement(run, pairs, said["oracle"]),
            "generator_pairs": len(subset),
            "rubric_valid": float(np.mean([r is not None for _, r in conditions["generated"]])) if subset else None,
            "generated_accuracy": figures("generated")["accuracy"],
            "oracle_subset_accuracy": figures("oracle", subset)["accuracy"],
            "norubric_accuracy": none["accuracy"], "norubric_well_formed": none["well_formed"],
            "example_judgment": said["oracle"][0][0][:400] if pairs else None,
            "example_rubric": next(iter(rubrics.values()))[1][:400] if rubrics else None}


def criteria_agreement(run: Run, pairs: list, texts: list) -> dict:
    """The judge's analysis lines (read leniently) against the checkers' verdicts, on the oracle judgments (texts[k]:
    pair k's judgments in orders AB and BA): `criteria_lines`, the share of the expected lines written;
    `criteria_agreement`, the share of those that agree with the checker (None when none was written)."""
    expected = agree = written = 0
    for p, both in zip(pairs, texts):
        met_c, met_r = run.verdicts(p)
        for text, truth in zip(both, ({"A": met_c, "B": met_r}, {"A": met_r, "B": met_c})):
            lines = analysis(text)
            for side, met in truth.items():
                for i, m in enumerate(met, 1):
                    expected += 1
                    if (side, i) in lines:
                        written += 1
                        agree += lines[side, i] == m
    return {"criteria_lines": written / expected if expected else None,
            "criteria_agreement": agree / written if written else None}


# ---- the phases, in order, resumable --------------------------------------------------------------------------------

def run_key(run: Run, generator_dir, judge_dir) -> str:
    """Everything that defines a run: both starting models' weights, the pairs, the settings, the seed."""
    from focal.serving.weights import fingerprint

    return content_key("rubricarm", fingerprint(generator_dir), fingerprint(judge_dir), sorted(run.pairs.pair_id),
                       list(run.pairs.split), settings(run.cfg), run.seed)[:16]


def settings(cfg) -> dict:
    """The rubricarm settings that can change a run's result (not the switch, the seeds list or the records' path)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("enabled", "seeds", "results")}


def models_after(phase: str, start: dict, work: Path, rounds: int) -> dict:
    """{'generator', 'judge'}: the folders a phase leaves (untrained: the starting ones)."""
    if phase == "untrained":
        return dict(start)
    if phase == "sft":
        return {name: work / "sft" / name for name in ("generator", "judge")}
    return {name: work / "arm" / f"r{rounds}_{name}" for name in ("generator", "judge")}


def train_sft(run: Run, models: dict, out: Path) -> dict:
    s = run.cfg.sft_settings()
    figures = {}
    for name, rows, epochs in (("judge", judge_examples(run), s.judge_epochs),
                               ("generator", generator_examples(run), s.generator_epochs)):
        if not (out / name).exists():
            figures.update({f"sft_{name}_{k}": v for k, v in sft(models[name], rows, s, epochs, out / name,
                                                                   run.seed).items()})
    return figures


def train_arm(run: Run, models: dict, out: Path) -> dict:
    """rubricarm.rounds rounds of (judge phase, generator phase); a finished sub-phase's model is kept and reused."""
    models, figures, start = dict(models), {}, len(run.log)
    for r in range(1, run.cfg.rounds + 1):
        for name, phase in (("judge", judge_phase), ("generator", generator_phase)):
            folder = out / f"r{r}_{name}"
            if not folder.exists():
                for k, v in phase(run, models["generator"], models["judge"], folder).items():
                    figures[f"arm_r{r}_{name}_{k}"] = v
            models[name] = folder
    calls = run.log[start:]
    for phase, key in (("judge", "arm/well_formed"), ("generator", "arm/rubric_valid")):
        mine = [c for c in calls if c["phase"] == phase]
        if mine:
            figures[f"arm_{phase}_reward_mean"] = float(np.mean([x for c in mine for x in c["rewards"]]))
            figures[f"arm_{phase}_accuracy"] = float(np.mean([c["arm/accuracy"] for c in mine]))
            figures[f"arm_{phase}_{key.split('/')[1]}"] = float(np.mean([c[key] for c in mine]))
            figures[f"arm_{phase}_rewards"] = [c["rewards"] for c in mine]
    return figures


TRAIN = {"untrained": lambda run, models, out: {}, "sft": train_sft, "arm": train_arm}  # each phase, from the last's models


def learn(run: Run, generator_dir, judge_dir, work: Path, progress=print):
    """Yield (phase, figures) for each of PHASES: the untrained pair measured, then SFT of both and measured, then
    the alternating GRPO from the SFT models and measured. A phase whose figures are in `work` is not run again."""
    start = {"generator": Path(generator_dir), "judge": Path(judge_dir)}
    models = start
    for phase in PHASES:
        done = work / phase / "phase.json"
        if done.exists():
            figures = json.loads(done.read_text())
            progress(f"rubricarm: {phase}: finished earlier, kept ({done})")
        else:
            (work / phase).mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            figures = TRAIN[phase](run, models, work / phase)
            t1 = time.perf_counter()
            after = models_after(phase, start, work, run.cfg.rounds)
            figures = {**measure(run, after["generator"], after["judge"]), **figures,
                       "train_minutes": round((t1 - t0) / 60, 2), "measure_minutes": round((time.perf_counter() - t1) / 60, 2),
                       "minutes": round((time.perf_counter() - t0) / 60, 2)}
            write_json(done, figures)
            progress(f"rubricarm: {phase}: held-out accuracy {figures['heldout_accuracy']} (well formed "
                     f"{figures['well_formed']}, both orders right {figures['accuracy_both']}, forced "
                     f"{figures['forced_accuracy']}); with generated rubrics {figures['generated_accuracy']} (valid "
                     f"{figures['rubric_valid']}), no rubric {figures['norubric_accuracy']}; {figures['minutes']} min")
        models = models_after(phase, start, work, run.cfg.rounds)
        yield phase, figures
