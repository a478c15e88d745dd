"""Loading a rubric set: set.yaml, Focal's YAML items, a set's own judge template.

A rubric set is a folder `rubrics/<name>/` holding `set.yaml` (what the set is and
how its items are stored) and the items: Focal's own YAML (`prompts.yaml`, below)
or a file in a format users already have (see focal/rubrics/formats.py: healthbench,
rar, chasing_the_tail, writingbench).

    from focal.rubrics.sets import load_rubric_set
    rs = load_rubric_set("rubrics/default")
    rs.items[0].criteria[0].text

Focal's item format (one YAML list entry per prompt):

    - id: p001                       # unique in the set
      split: train                   # train | eval
      prompt: Explain what a noun is.
      criteria:
        - id: short                  # unique within the item
          text: The response is at most 40 words.
          weight: 2                  # > 0; a pitfall's weight is its penalty
          category: important        # essential | important | optional | pitfall | any tag
          check: {max_words: 40}     # optional: decided locally (focal/rubrics/checks.py)
        - id: ai_disclaimer
          text: The response says it is an AI or a language model.
          category: pitfall          # pitfall: true is implied by this category
          weight: 2
        - id: clarity
          text: How clear is the explanation for a beginner?
          scale: {kind: likert, min: 1, max: 5}

The types (Item, Criterion, ...) and their validation live in focal/rubrics/types.py;
this module reads a set folder and Focal's YAML, checks a set's judge template,
and turns items into prompt-table rows and back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from focal.config import check_unique_keys
from focal.rubrics.formats import load_chasing_the_tail, load_healthbench, load_ifbench, load_ifeval, load_rar, load_writingbench
# The item types and their validation live in focal/rubrics/types.py; the ones callers used to import
# from here stay importable from here (see __all__).
from focal.rubrics.types import (CATEGORIES, Check, Criterion, Item, RubricError, Scale, Where, make_item, number,
                         parse_criterion, parse_item, read_text)


# Judge-template markers (filled by focal/judging/judge.py's render_prompt, which should import these).
MARKER = re.compile(r"<<(\w+)>>")
TEMPLATE_MARKERS = ("conversation", "response", "rubric_item", "answer_format", "fence_open", "fence_close")
REQUIRED_MARKERS = ("fence_open", "response", "fence_close", "rubric_item")


@dataclass
class RubricSet:
    """A named collection of items; `saturation_key` picks each criterion's key."""

    name: str
    items: list[Item]
    description: str = ""
    judge_template: str | None = None  # text of the set's judge prompt, None = Focal's default
    saturation_key: str = "id"

    def split(self, name: str) -> list[Item]:
        return [it for it in self.items if it.split == name]

    def dataset(self, split: str = "train"):
        """The split as a TRL training dataset (a `datasets.Dataset`): `prompt` (chat messages) and `prompt_id`,
        which FocalReward uses to find each completion's rubric. Needs the `datasets` package (focal[train])."""
        from datasets import Dataset

        items = self.split(split)
        if not items:
            raise ValueError(f"rubric set {self.name!r} has no {split!r} items; splits here: "
                             f"{sorted({it.split for it in self.items})}")
        return Dataset.from_list([{"prompt": it.chat(), "prompt_id": it.id} for it in items])


# ---- tables: an item as one row (prompt tables written by the prepare stage) ----------

def criterion_to_dict(c: Criterion) -> dict:
    d = {"id": c.id, "text": c.text, "weight": c.weight, "category": c.category, "pitfall": c.pitfall,
         "key": c.key, "scale": {"kind": c.scale.kind, "min": c.scale.min, "max": c.scale.max}}
    if c.check is not None:
        d["check"] = {"name": c.check.name, "params": c.check.params}
    return d


def criterion_from_dict(d: dict) -> Criterion:
    check = Check(d["check"]["name"], dict(d["check"]["params"])) if d.get("check") else None
    return Criterion(d["id"], d["text"], float(d["weight"]), d["category"], bool(d["pitfall"]),
                     Scale(**d["scale"]), check, d.get("key", d["id"]))


def item_to_row(item: Item) -> dict:
    """One prompt-table row; criteria and messages as JSON text."""
    return {"prompt_id": item.id, "split": item.split, "prompt": item.prompt,
            "messages": json.dumps(item.chat(), ensure_ascii=False),
            "criteria": json.dumps([criterion_to_dict(c) for c in item.criteria], ensure_ascii=False)}


def item_from_row(row) -> Item:
    messages = json.loads(row["messages"])
    return Item(row["prompt_id"], row["prompt"], tuple(criterion_from_dict(d) for d in json.loads(row["criteria"])),
                row["split"], tuple(messages) if len(messages) > 1 else ())


# ---- YAML with line numbers ---------------------------------------------------------

class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records each mapping's line as the key '__line__' and refuses a key given twice."""


def _construct_mapping(loader, node, deep=False):
    check_unique_keys(node)
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path):
    """Parse a YAML file; dicts carry '__line__'. A missing, non-UTF-8 or bad YAML file raises
    RubricError naming the file (and the line)."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RubricError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)}); fix the syntax there") from None


def with_keys(items: list[Item], saturation_key: str) -> list[Item]:
    """Set each criterion's Focal key: its id (criteria shared across prompts) or its category."""
    out = []
    for it in items:
        crits = tuple(Criterion(c.id, c.text, c.weight, c.category, c.pitfall, c.scale, c.check,
                                c.id if saturation_key == "id" else c.category)
                      for c in it.criteria)
        out.append(Item(it.id, it.prompt, crits, it.split, it.messages))
    return out




def load_focal_items(path: Path, eval_fraction: float) -> list[Item]:
    """Focal's own format: a YAML list of items (see the module docstring)."""
    data = read_yaml(path)
    if not isinstance(data, list):
        raise RubricError(f"{path}: must be a YAML list of items (`- id: ...`), got {type(data).__name__}")
    return [parse_item(d, path, i) for i, d in enumerate(data)]


FORMATS = {
    "focal": load_focal_items,
    "healthbench": load_healthbench,
    "rar": load_rar,
    "chasing_the_tail": load_chasing_the_tail,
    "writingbench": load_writingbench,
    "ifeval": load_ifeval,
    "ifbench": load_ifbench,
}


# ---- a set's judge template -----------------------------------------------------------

def check_template(text: str, path) -> str:
    """The template text if its <<markers>> are known and the required ones are in place;
    RubricError naming the template file (and the line) otherwise."""
    for m in MARKER.finditer(text):
        if m.group(1) not in TEMPLATE_MARKERS:
            line = text.count("\n", 0, m.start()) + 1
            raise RubricError(f"{path}:{line}: judge template marker <<{m.group(1)}>> is unknown; "
                              f"use only {', '.join(f'<<{n}>>' for n in TEMPLATE_MARKERS)}")
    missing = [f"<<{n}>>" for n in REQUIRED_MARKERS if f"<<{n}>>" not in text]
    if missing:
        raise RubricError(f"{path}: judge template lacks {', '.join(missing)}; add them "
                          "(focal/judging/template.md shows where each one goes)")
    first, last = text.index("<<response>>"), text.rindex("<<response>>")
    if not (text.index("<<fence_open>>") < first and last < text.rindex("<<fence_close>>")):
        raise RubricError(f"{path}: judge template must put <<response>> between <<fence_open>> and <<fence_close>>; "
                          "move the fence lines around it (the fence keeps the response from acting as instructions)")
    late = [f"<<{n}>>" for n in ("rubric_item", "answer_format") if 0 <= text.find(f"<<{n}>>") < text.rindex("<<fence_close>>")]
    if late:
        raise RubricError(f"{path}: judge template puts {', '.join(late)} before the response; move it after "
                          "<<fence_close>>, so that every criterion asked of one response shares the prompt up to its "
                          "rubric item (a server with prefix caching computes that part once)")
    return text


# ---- a rubric set folder --------------------------------------------------------------

def _named_file(meta: dict, key: str, folder: Path, where: Where, default=None) -> Path | None:
    """The file a set.yaml field names (None when the field is absent and has no default)."""
    name = meta.get(key)
    name = default if name in (None, "") else name
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise where.error(key, f"must be a file name in the set's folder, got {name!r}",
                          f"write e.g. `{key}: {default or 'judge.md'}`")
    path = folder / name
    if not path.is_file():
        raise where.error(key, f"names {path}, which does not exist", "create it or fix the name")
    return path


def load_rubric_set(folder) -> RubricSet:
    """Load and validate `rubrics/<name>/`. Raises RubricError naming file, item and field."""
    folder = Path(folder)
    meta_path = folder / "set.yaml"
    if not folder.is_dir():
        raise RubricError(f"{folder}: no such rubric set folder; create it with a set.yaml, or pick an existing one under rubrics/")
    meta = read_yaml(meta_path)
    if not isinstance(meta, dict):
        raise RubricError(f"{meta_path}: must be a mapping with at least `format` and `file`")
    where = Where(meta_path)
    known = {"name", "description", "format", "file", "judge_template", "saturation_key", "eval_fraction", "__line__"}
    for k in meta:
        if k not in known:
            raise where.error(k, "is not a set.yaml field", f"use only {sorted(known - {'__line__'})}")
    fmt = meta.get("format", "focal")
    if fmt not in FORMATS:
        raise where.error("format", f"is {fmt!r}, not a known format", f"use one of {sorted(FORMATS)}")
    key = meta.get("saturation_key", "id")
    if key not in ("id", "category"):
        raise where.error("saturation_key", f"must be `id` or `category`, got {key!r}",
                          "use `id` when criteria ids are shared across prompts, else `category`")
    eval_fraction = number(meta, "eval_fraction", where, 0.2)
    if not 0 <= eval_fraction < 1:
        raise where.error("eval_fraction", f"must be in [0, 1), got {eval_fraction}", "e.g. `eval_fraction: 0.2`")
    data_path = _named_file(meta, "file", folder, where, "prompts.yaml")
    items = FORMATS[fmt](data_path, eval_fraction)
    if not items:
        raise RubricError(f"{data_path}: no items; add at least one prompt with criteria")
    ids = set()
    for it in items:
        if it.id in ids:
            raise RubricError(f"{data_path}: item id {it.id!r} appears twice; give every item its own id")
        ids.add(it.id)
    template_path = _named_file(meta, "judge_template", folder, where)
    template = check_template(read_text(template_path), template_path) if template_path else None
    return RubricSet(str(meta.get("name", folder.name)), with_keys(items, key),
                     str(meta.get("description", "")).strip(), template, key)


__all__ = ["FORMATS", "TEMPLATE_MARKERS", "REQUIRED_MARKERS", "MARKER", "RubricSet", "load_rubric_set",
           "load_focal_items", "read_yaml", "check_template", "with_keys", "item_to_row", "item_from_row",
           "criterion_to_dict", "criterion_from_dict",
           # re-exported from focal.rubrics.types
           "CATEGORIES", "Check", "Criterion", "Item", "RubricError", "Scale", "Where", "make_item", "parse_criterion"]
