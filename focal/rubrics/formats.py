"""Importers: rubric formats users already have, turned into Focal items.

Each loader reads one file and returns a list of focal.rubrics.types.Item; a rubric set
picks one with `format:` in its set.yaml (focal/rubrics/sets.py's FORMATS). Every
criterion is built as a Focal criterion mapping and validated by
focal.rubrics.types.parse_criterion, the same validator as Focal's own YAML. Row
converters are exposed for use on data already in memory.

| format           | file                | one row                                                        |
|------------------|---------------------|----------------------------------------------------------------|
| focal            | YAML list           | see focal/rubrics/sets.py                                            |
| healthbench      | JSONL               | {prompt_id, prompt: [{role, content}], rubrics: [{criterion, points, tags}]} |
| rar              | JSONL               | {id?, prompt | question, rubric: [{title, description, weight}]} |
| chasing_the_tail | JSONL               | {id?, prompt, rubric: [{criterion, weight}]}                   |
| writingbench     | JSONL               | {index, query, checklist: [{name, criteria_description, "1-2".."9-10"}]} |
| ifeval, ifbench  | JSONL               | {key, prompt, instruction_id_list, kwargs, split?}             |

Mappings (documented in docs/rubrics.md):
- healthbench: weight = |points|; points < 0 -> pitfall; category = the `axis:` tag.
- rar: weight = |weight|; weight < 0 or "Pitfall" -> pitfall; category from the
  "Essential/Important/Optional/Pitfall Criteria:" prefix of description or title.
- chasing_the_tail: weight 1-3 -> category optional / important / essential.
- ifeval / ifbench (IFEval's input format; the registry of that name decides): each
  instruction is a criterion whose check is the benchmark's own checker (`check: {ifeval:
  {id, kwargs}}`, strict; focal/rubrics/ifeval.py), id = the instruction id, text = the checker's own
  description, category = the instruction's group (`keywords`, `detectable_format`, ...), weight 1.
  An optional `split` (train | eval) is kept; without it the split is a hash of the key.
- writingbench: each checklist entry is a likert 1-10 criterion with its level
  descriptors in the text; category `writing`, weight 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from focal.rubrics.types import (Criterion, Item, Problems, RubricError, Where, hash_split, make_item, parse_criterion,
                                parse_each, read_text)

_RAR_CATEGORY = re.compile(r"^\s*(essential|important|optional|pitfall)\s+criteri(?:a|on)\s*:\s*", re.I)
_WB_LEVELS = ("1-2", "3-4", "5-6", "7-8", "9-10")


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each non-empty line; bad JSON names the line."""
    rows, problems = [], Problems()
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(RubricError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); fix that line"))
            continue
        if not isinstance(row, dict):
            problems.add(RubricError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}"))
            continue
        rows.append((n, row))
    problems.check()
    return rows


def _req(row: dict, key: str, where: Where, kind=str):
    v = row.get(key)
    if not isinstance(v, kind) or (kind is str and not v.strip()) or (kind is list and not v):
        raise where.error(key, "is missing or empty" if v in (None, "", []) else f"has the wrong type ({type(v).__name__})",
                          f"each row needs `{key}` ({kind.__name__})")
    return v


def _weight(v, where: Where, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v == 0:
        raise where.error(key, f"must be a non-zero number, got {v!r}", f"write e.g. `\"{key}\": 3`")
    return float(v)


# ---- HealthBench --------------------------------------------------------------------

def healthbench_item(row: dict, where: Where, eval_fraction: float) -> Item:
    """A HealthBench row: rubric items with points (negative = pitfall) and axis tags."""
    iid = str(row.get("prompt_id") or row.get("id") or where.item)
    where = Where(where.path, where.line, iid)
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        messages = ({"role": "user", "content": prompt},)
    elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        messages = tuple({"role": m.get("role", "user"), "content": m["content"]} for m in prompt)
    else:
        raise where.error("prompt", "must be a list of {role, content} messages", "see HealthBench's format")
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
    criteria = []
    for j, rb in enumerate(_req(row, "rubrics", where, list)):
        cw = Where(where.path, where.line, iid, f"c{j + 1}")
        if not isinstance(rb, dict):
            raise cw.error("rubrics", f"entries must be objects, got {rb!r}", "write {criterion, points, tags}")
        points = _weight(rb.get("points"), cw, "points")
        axis = next((t.split(":", 1)[1] for t in rb.get("tags", []) if isinstance(t, str) and t.startswith("axis:")), None)
        criteria.append(parse_criterion({"id": f"c{j + 1}", "text": _req(rb, "criterion", cw), "weight": abs(points),
                                         "category": axis or ("pitfall" if points < 0 else "important"),
                                         "pitfall": points < 0}, cw))
    split = row.get("split") or hash_split(iid, eval_fraction)
    return make_item(iid, last_user, criteria, split, where, messages if len(messages) > 1 else ())


def load_healthbench(path: Path, eval_fraction: float) -> list[Item]:
    return parse_each(lambda r: healthbench_item(r[1], Where(path, r[0], f"line {r[0]}"), eval_fraction), read_jsonl(path))


# ---- RaR (Rubrics as Rewards) -------------------------------------------------------

def rar_criteria(rubric: list, where: Where) -> list[Criterion]:
    """RaR items {title, description, weight}; category from the 'X Criteria:' prefix."""
    out = []
    for j, rb in enumerate(rubric):
        cw = Where(where.path, where.line, where.item, f"r{j + 1}")
        if not isinstance(rb, dict):
            raise cw.error("rubric", f"entries must be objects, got {rb!r}", "write {title, description, weight}")
        description = _req(rb, "description", cw)
        weight = _weight(rb.get("weight"), cw, "weight")
        m = _RAR_CATEGORY.match(description) or _RAR_CATEGORY.match(str(rb.get("title", "")))
        category = m.group(1).lower() if m else ("pitfall" if weight < 0 else "important")
        text = _RAR_CATEGORY.sub("", description).strip() or description
        out.append(parse_criterion({"id": f"r{j + 1}", "text": text, "weight": abs(weight), "category": category,
                                    "pitfall": weight < 0 or category == "pitfall"}, cw))
    return out


def rar_item(n: int, row: dict, path: Path, eval_fraction: float) -> Item:
    iid = str(row.get("id") or f"rar{n}")
    where = Where(path, n, iid)
    prompt = row.get("prompt") or row.get("question")
    if not isinstance(prompt, str) or not prompt.strip():
        raise where.error("prompt", "is missing (also looked for `question`)", "each row needs the prompt text")
    criteria = rar_criteria(_req(row, "rubric", where, list), where)
    return make_item(iid, prompt.strip(), criteria, row.get("split") or hash_split(iid, eval_fraction), where)


def load_rar(path: Path, eval_fraction: float) -> list[Item]:
    return parse_each(lambda r: rar_item(*r, path, eval_fraction), read_jsonl(path))


# ---- Chasing the Tail ---------------------------------------------------------------

_CTT_CATEGORY = {1: "optional", 2: "important", 3: "essential"}


def chasing_the_tail_criteria(rubric: list, where: Where) -> list[Criterion]:
    """Chasing-the-Tail rubric JSON [{criterion, weight 1-3}], judged yes/no."""
    out = []
    for j, rb in enumerate(rubric):
        cw = Where(where.path, where.line, where.item, f"t{j + 1}")
        if not isinstance(rb, dict):
            raise cw.error("rubric", f"entries must be objects, got {rb!r}", "write {criterion, weight}")
        weight = _weight(rb.get("weight"), cw, "weight")
        if weight < 0:
            raise cw.error("weight", f"must be 1-3, got {weight:g}", "Chasing-the-Tail weights are positive")
        category = _CTT_CATEGORY.get(int(weight), "essential" if weight > 3 else "optional")
        out.append(parse_criterion({"id": f"t{j + 1}", "text": _req(rb, "criterion", cw), "weight": weight,
                                    "category": category}, cw))
    return out


def chasing_the_tail_item(n: int, row: dict, path: Path, eval_fraction: float) -> Item:
    iid = str(row.get("id") or f"ctt{n}")
    where = Where(path, n, iid)
    criteria = chasing_the_tail_criteria(_req(row, "rubric", where, list), where)
    return make_item(iid, _req(row, "prompt", where).strip(), criteria,
                     row.get("split") or hash_split(iid, eval_fraction), where)


def load_chasing_the_tail(path: Path, eval_fraction: float) -> list[Item]:
    return parse_each(lambda r: chasing_the_tail_item(*r, path, eval_fraction), read_jsonl(path))


# ---- WritingBench -------------------------------------------------------------------

def writingbench_item(row: dict, where: Where, eval_fraction: float) -> Item:
    """A WritingBench query with its checklist of 1-10 criteria and level descriptors."""
    iid = f"wb{row['index']}" if "index" in row else str(where.item)
    where = Where(where.path, where.line, iid)
    criteria = []
    for j, ck in enumerate(_req(row, "checklist", where, list)):
        cw = Where(where.path, where.line, iid, f"w{j + 1}")
        if not isinstance(ck, dict):
            raise cw.error("checklist", f"entries must be objects, got {ck!r}", "write {name, criteria_description, 1-2..9-10}")
        levels = "; ".join(f"{lv}: {ck[lv]}" for lv in _WB_LEVELS if ck.get(lv))
        text = f"{_req(ck, 'name', cw)}: {_req(ck, 'criteria_description', cw)}"
        if levels:
            text += f" Scoring levels: {levels}"
        criteria.append(parse_criterion({"id": f"w{j + 1}", "text": text, "weight": 1, "category": "writing",
                                         "scale": {"kind": "likert", "min": 1, "max": 10}}, cw))
    return make_item(iid, _req(row, "query", where).strip(), criteria,
                     row.get("split") or hash_split(iid, eval_fraction), where)


def load_writingbench(path: Path, eval_fraction: float, limit: int | None = None) -> list[Item]:
    rows = read_jsonl(path)[:limit]
    return parse_each(lambda r: writingbench_item(r[1], Where(path, r[0], f"line {r[0]}"), eval_fraction), rows)


# ---- IFEval's input format ----------------------------------------------------------

def ifeval_item(row: dict, where: Where, eval_fraction: float, registry: str = "ifeval") -> Item:
    """A row of IFEval's input format: one criterion per instruction, checked by the registry's checker."""
    from focal.rubrics.ifeval import clean_kwargs, describe, group, needs_prompt

    key = row.get("key")
    if key is None or (isinstance(key, str) and not key.strip()):
        raise where.error("key", "is missing", "each row needs `key` (a number or text, unique in the file)")
    iid = str(key)
    where = Where(where.path, where.line, iid)
    prompt = _req(row, "prompt", where)
    ids = _req(row, "instruction_id_list", where, list)
    kwargs = row.get("kwargs")
    if kwargs is None:
        kwargs = [{}] * len(ids)
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(k is None or isinstance(k, dict) for k in kwargs):
        raise where.error("kwargs", f"must be a list of {len(ids)} mappings (one per instruction), got {kwargs!r}",
                          "write one `{}` per entry of instruction_id_list")
    split = row.get("split") or hash_split(iid, eval_fraction)
    if split not in ("train", "eval"):
        raise where.error("split", f"must be train or eval, got {split!r}", "write `\"split\": \"train\"` or leave it out")
    criteria, seen = [], {}
    for n, (inst, kw) in enumerate(zip(ids, kwargs)):
        if not isinstance(inst, str) or not inst.strip():
            raise where.error("instruction_id_list", f"entry {n} must be an instruction id, got {inst!r}",
                              f"use ids of the {registry} registry, e.g. `punctuation:no_comma`")
        kw = clean_kwargs(kw)
        cw = Where(where.path, where.line, iid, inst)
        try:
            text = describe(registry, inst, kw, prompt)
            check = {"id": inst, "kwargs": kw, **({"prompt": prompt} if needs_prompt(registry, inst, kw) else {})}
        except ValueError as e:
            raise cw.error("instruction_id_list", str(e), f"use ids of the {registry} registry with their checker's "
                           "arguments in `kwargs`") from None
        seen[inst] = seen.get(inst, 0) + 1
        cid = inst if seen[inst] == 1 else f"{inst}-{seen[inst]}"
        criteria.append(parse_criterion({"id": cid, "text": text, "weight": 1, "category": group(inst),
                                         "check": {registry: check}}, cw))
    return make_item(iid, prompt, criteria, split, where)


def load_ifeval(path: Path, eval_fraction: float, registry: str = "ifeval") -> list[Item]:
    """Every row (validated: file, line, field). A row with an instruction whose checker cannot run here (it
    needs NLTK data that is not installed: focal.rubrics.ifeval.available) is left out whole, with a warning naming
    the instructions: graded on the rest of its instructions it would look easier than it is."""
    import warnings

    from focal.rubrics.ifeval import available

    items, missing, rows_out = [], {}, 0
    rows = parse_each(lambda r: ifeval_item(r[1], Where(path, r[0], f"line {r[0]}"), eval_fraction, registry),
                      read_jsonl(path))
    for it in rows:
        gone = [c.check.params["id"] for c in it.criteria
                if not available(registry, c.check.params["id"], c.check.params.get("kwargs") or {}, it.prompt)]
        for iid in gone:
            missing[iid] = missing.get(iid, 0) + 1
        if gone:
            rows_out += 1
        else:
            items.append(it)
    if rows_out:
        warnings.warn(f"{path}: {rows_out} rows left out: they have instructions whose checkers need NLTK data that "
                      f"is not installed ({', '.join(f'{k} x{v}' for k, v in sorted(missing.items()))}). Install "
                      "NLTK's data (python -m nltk.downloader punkt punkt_tab stopwords averaged_perceptron_tagger_eng) "
                      "to keep them", stacklevel=2)
    return items


def load_ifbench(path: Path, eval_fraction: float) -> list[Item]:
    return load_ifeval(path, eval_fraction, "ifbench")


__all__ = ["read_jsonl", "ifeval_item", "rar_item", "chasing_the_tail_item", "load_ifeval", "load_ifbench", "load_healthbench", "load_rar", "load_chasing_the_tail", "load_writingbench",
           "healthbench_item", "rar_criteria", "chasing_the_tail_criteria", "writingbench_item"]
