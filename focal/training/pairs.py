"""Preference pairs (prompt, chosen, rejected, source) for Rubric-ARM: built from checked rollouts, or imported.

    pairs = build_pairs(rollouts, checked, items)           # two rollouts of a prompt whose checked weight differs
    pairs = sample_checked_pairs(chosen, items, policy, sampling, "vllm", client, serve, cache)   # the same, sampled
    pairs = import_pairs("prefs.jsonl", "preference")       # a public pair format (IMPORTERS)
    pairs = split_by_prompt(pairs, heldout_share=0.34)      # no prompt in both splits
    pairs = split_by_items(pairs, items)                    # or: each prompt where its rubric set puts it
    pairs = cap_per_prompt(pairs, {"train": 6, "heldout": 3}, seed=0)

A pair is one row of a table with COLUMNS:
- `pair_id`: a hash of the prompt and the two responses (stable across runs);
- `prompt_id`, `prompt` (the last user message), `messages` (the whole conversation, JSON);
- `chosen`, `rejected`: the preferred response and the other (o* is always "chosen");
- `chosen_id`, `rejected_id`: their rollout ids ('' when imported);
- `margin`: for built pairs, the checked weight the chosen response meets minus the rejected one's, over the
  prompt's checked weight (in (0, 1]); NaN when imported;
- `source`: what made the label: `checks` (focal's programmatic checks) or `import:<format>:<file name>`;
- `split`: `train` or `heldout` (split_by_prompt, split_by_items).

The label of a built pair is objective: every criterion of the prompt that has a programmatic check is decided
locally (focal/rubrics/checks.py, no judge); a rollout's checked weight is `sum_c w_c r_ic` over those criteria (r is the
satisfaction: a pitfall counts when absent), and of two rollouts of the same prompt the one with more is chosen.
Ties are dropped, so the label never depends on the order of the rollouts.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import pandas as pd

from focal.core.cache import content_key
from focal.rubrics.formats import read_jsonl
from focal.rubrics.types import RubricError, Where

COLUMNS = ["pair_id", "prompt_id", "prompt", "messages", "chosen", "rejected", "chosen_id", "rejected_id", "margin",
           "source", "split"]
SPLITS = ("train", "heldout")


def pair_id(messages: list[dict], chosen: str, rejected: str) -> str:
    return content_key("pair", messages, chosen, rejected)[:16]


def prompt_key(messages: list[dict]) -> str:
    """The prompt id of an imported conversation: a hash of its messages."""
    return "x" + content_key("prompt", messages)[:12]


def _row(prompt_id: str, messages: list[dict], chosen: str, rejected: str, source: str, chosen_id: str = "",
         rejected_id: str = "", margin: float = math.nan) -> dict:
    return {"pair_id": pair_id(messages, chosen, rejected), "prompt_id": prompt_id, "prompt": messages[-1]["content"],
            "messages": json.dumps(messages, ensure_ascii=False), "chosen": chosen, "rejected": rejected,
            "chosen_id": chosen_id, "rejected_id": rejected_id, "margin": margin, "source": source, "split": "train"}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# ---- built from what the pipeline has: rollouts and their checked criteria ----------------

def checked_weight(checked: pd.DataFrame) -> pd.DataFrame:
    """Per rollout: `met` = sum_c w_c r_ic over its checked criteria and `total` = sum_c w_c (one row per rollout)."""
    df = checked[checked.source == "check"] if "source" in checked else checked
    if df.score.isna().any():
        raise ValueError("checked judgments have NaN scores; a check always decides (use rows with source 'check')")
    df = df.assign(met=df.weight * df.score)
    return df.groupby(["prompt_id", "rollout_id"], sort=False).agg(met=("met", "sum"), total=("weight", "sum")).reset_index()


def build_pairs(rollouts: pd.DataFrame, checked: pd.DataFrame, items: dict) -> pd.DataFrame:
    """Every pair of rollouts of the same prompt whose checked weight differs; the one meeting more is chosen.

    rollouts: prompt_id, rollout_id, completion (focal.serving.rollouts.COLUMNS); checked: the judgments of their checked
    criteria (prompt_id, rollout_id, weight, score; focal.judging.judge.Judgment rows with source 'check'); items:
    prompt_id -> Item (the conversation). Ties are dropped; so are rollouts with no checked criterion and pairs
    with the same text."""
    weights = checked_weight(checked).set_index("rollout_id")
    rows = []
    for pid, group in rollouts.groupby("prompt_id", sort=True):
        scored = [(r.rollout_id, r.completion, weights.met[r.rollout_id], weights.total[r.rollout_id])
                  for r in group.itertuples() if r.rollout_id in weights.index]
        messages = items[pid].chat()
        for (ia, ta, ma, total), (ib, tb, mb, _) in combinations(scored, 2):
            if ma == mb or ta == tb:
                continue
            (ic, tc, mc), (ir, tr, mr) = sorted([(ia, ta, ma), (ib, tb, mb)], key=lambda x: -x[2])
            rows.append(_row(pid, messages, tc, tr, "checks", ic, ir, float((mc - mr) / total)))
    return frame(rows).drop_duplicates("pair_id", ignore_index=True)


def sample_checked_pairs(chosen: list, items: dict, policy_dir: str, sampling, backend: str, client, serve,
                         cache_path) -> pd.DataFrame:
    """build_pairs on G fresh rollouts of each chosen item: sampled as the rollouts stage samples
    (focal.serving.rollouts.sample_policy: the vLLM server of `serve`, or transformers in-process; cached in
    cache_path), their checked criteria decided by the checks (no judge)."""
    from focal.judging.prompts import decide_checks, requests_for
    from focal.serving.rollouts import sample_policy

    rollouts = sample_policy(chosen, policy_dir, sampling, backend, client, serve, cache_path)
    checked = decide_checks([q for q in requests_for(rollouts, items, "rubricarm rollouts") if q.criterion.check])
    return build_pairs(rollouts, pd.DataFrame([j.__dict__ for j in checked]), items)


# ---- imported: public pair formats ----------------------------------------------------------

def _text(row: dict, key: str, where: Where) -> str:
    v = row.get(key)
    if not isinstance(v, str) or not v.strip():
        raise where.error(key, "is missing or empty" if v in (None, "") else f"has the wrong type ({type(v).__name__})",
                          f"each row needs `{key}` as non-empty text")
    return v


def _messages(v, key: str, where: Where) -> list[dict]:
    """A conversation: text (one user message) or a list of {role, content}."""
    if isinstance(v, str) and v.strip():
        return [{"role": "user", "content": v}]
    ok = isinstance(v, list) and v and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                           and isinstance(m.get("content"), str) for m in v)
    if not ok:
        problem = "is missing or empty" if v in (None, "", []) else f"must be text or a list of {{role, content}} " \
                                                                   f"messages, got {str(v)[:60]!r}"
        raise where.error(key, problem, "see docs/rubricarm.md for the pair formats")
    return [{"role": m["role"], "content": m["content"]} for m in v]


def _reply(v, key: str, where: Where) -> str:
    """A response: text, or a list of messages whose last one is the assistant's."""
    if isinstance(v, str):
        if not v.strip():
            raise where.error(key, "is empty", f"each row needs a non-empty `{key}` response")
        return v
    msgs = _messages(v, key, where)
    if msgs[-1]["role"] != "assistant":
        raise where.error(key, f"ends with a {msgs[-1]['role']!r} message", "the last message must be the assistant's")
    return msgs[-1]["content"]


def load_preference(path: Path, source: str) -> list[dict]:
    """TRL's preference format, one JSON object per line: {"prompt", "chosen", "rejected"}, each text or a list of
    messages (the prompt's conversation; the chosen and rejected assistant replies). The prompt-free form, where
    chosen and rejected are whole conversations sharing every message but the last, is accepted too."""
    rows = []
    for n, row in read_jsonl(path):
        where = Where(path, n)
        if "prompt" in row:
            messages = _messages(row["prompt"], "prompt", where)
            chosen, rejected = _reply(row.get("chosen"), "chosen", where), _reply(row.get("rejected"), "rejected", where)
        else:
            c, r = _messages(row.get("chosen"), "chosen", where), _messages(row.get("rejected"), "rejected", where)
            if c[:-1] != r[:-1] or not c[:-1]:
                raise where.error("chosen", "and `rejected` do not share their conversation before the last message",
                                  "give a `prompt` field, or two conversations that differ only in the last reply")
            messages, chosen, rejected = c[:-1], _reply(c, "chosen", where), _reply(r, "rejected", where)
        rows.append(_row(prompt_key(messages), messages, chosen, rejected, source))
    return rows



def _hh_turns(text: str, key: str, where: Where) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as messages."""
    parts, messages = text.split("\n\n"), []
    for part in parts:
        for tag, role in (("Human:", "user"), ("Assistant:", "assistant")):
            if part.startswith(tag):
                messages.append({"role": role, "content": part[len(tag):].strip()})
                break
        else:
            if not messages:
                if part.strip():
                    raise where.error(key, f"does not start with a Human: turn ({part[:40]!r})",
                                      "HH-RLHF rows are '\\n\\nHuman: ...\\n\\nAssistant: ...'")
                continue
            messages[-1]["content"] += "\n\n" + part  # a paragraph of the same turn
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise where.error(key, "has no final Assistant: turn", "HH-RLHF rows end with '\\n\\nAssistant: <reply>'")
    return messages


def load_hh_rlhf(path: Path, source: str) -> list[dict]:
    """Anthropic's HH-RLHF: {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}, two transcripts
    that share every turn but the last Assistant reply."""
    rows = []
    for n, row in read_jsonl(path):
        where = Where(path, n)
        c = _hh_turns(_text(row, "chosen", where), "chosen", where)
        r = _hh_turns(_text(row, "rejected", where), "rejected", where)
        if c[:-1] != r[:-1]:
            raise where.error("chosen", "and `rejected` differ before their last Assistant reply",
                              "an HH-RLHF pair shares the conversation and differs in the last reply only")
        rows.append(_row(prompt_key(c[:-1]), c[:-1], c[-1]["content"], r[-1]["content"], source))
    return rows


IMPORTERS = {"preference": load_preference, "hh_rlhf": load_hh_rlhf}


def import_pairs(path, fmt: str) -> pd.DataFrame:
    """Pairs from a file in a public format (IMPORTERS); RubricError names the file, line, field and fix."""
    if fmt not in IMPORTERS:
        raise ValueError(f"pairs format {fmt!r} is unknown; use one of {', '.join(IMPORTERS)}")
    path = Path(path)
    rows = IMPORTERS[fmt](path, f"import:{fmt}:{path.name}")
    if not rows:
        raise RubricError(f"{path}: no pairs; add at least one line")
    same = [r for r in rows if r["chosen"] == r["rejected"]]
    if same:
        raise RubricError(f"{path}: a pair has the same chosen and rejected text ({same[0]['chosen'][:40]!r}); "
                          "drop it: it says nothing about preference")
    return frame(rows).drop_duplicates("pair_id", ignore_index=True)


# ---- splits by prompt -------------------------------------------------------------------------

def split_by_prompt(pairs: pd.DataFrame, heldout_share: float) -> pd.DataFrame:
    """Held out: the round(share * n) prompts (at least 1 and at most n - 1 when there are two or more prompts and
    share > 0) that come first in the order of a hash of their id; every pair of a prompt goes where its prompt
    goes, so no prompt is in both splits. The order is the ids' own, so the split does not move with the seed."""
    prompts = sorted(set(pairs.prompt_id), key=lambda p: (content_key("split", p), p))
    k = 0
    if heldout_share > 0 and len(prompts) >= 2:
        k = min(max(1, round(heldout_share * len(prompts))), len(prompts) - 1)
    held = set(prompts[:k])
    return pairs.assign(split=["heldout" if p in held else "train" for p in pairs.prompt_id])


def split_by_items(pairs: pd.DataFrame, items: dict) -> pd.DataFrame:
    """Each pair where its prompt's rubric set puts the prompt: a train prompt's pairs train, an eval prompt's are
    held out (an IFEval-format set has different base tasks in its two splits)."""
    unknown = sorted(set(pairs.prompt_id) - set(items))
    if unknown:
        raise ValueError(f"pairs of prompt {unknown[0]!r}, which the rubric set does not have")
    return pairs.assign(split=["heldout" if items[p].split == "eval" else "train" for p in pairs.prompt_id])


def cap_per_prompt(pairs: pd.DataFrame, caps: dict, seed: int) -> pd.DataFrame:
    """At most caps[split] pairs of each prompt (0 = all), the first in the order of a hash of (seed, pair_id): a
    draw that depends on the seed and on nothing else (not on the order of the rows)."""
    order = pairs.assign(_rank=[content_key("cap", seed, p) for p in pairs.pair_id]).sort_values(["prompt_id", "_rank"])
    kept = order.groupby("prompt_id", sort=False).cumcount()
    limit = order.split.map(lambda s: caps.get(s, 0) or math.inf)
    return order[kept < limit].drop(columns="_rank").reset_index(drop=True)
