"""Loading a rubric set: set.yaml, Focal's YAML items, a set's own judge template.

A rubric set is a folder `rubrics/<name>/` holding `set.yaml` (what the set is and
how its items are stored) and the items: Focal's own YAML (`prompts.yaml`, below)
or a file in a format users already have (see focal/rubrics/formats.py: healthbench,
rar, chasing_the_tail, writingbench).

    from focal.rubrics.sets import load_rubric_set
    rs = load_rubric_set("rubrics/default")   # a folder
    rs = load_rubric_set("default")           # a bare name: ./default if that folder exists, else the shipped set
    rs.items[0].criteria[0].text

The sets shipped with Focal (default, health, ifeval: the repository's rubrics/ folder) are package data
(focal/rubrics/shipped links to rubrics/), so a bare name finds them after `pip install`, from any folder.
`new_rubric_set` writes a commented starter set (`focal new DOMAIN`).

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
from focal.rubrics.types import (CATEGORIES, IDENTIFIER, Check, Criterion, Item, Problems, RubricError, Scale, Where,
                                make_item, number, parse_criterion, parse_each, parse_item, read_fields, read_text)


# Judge-template markers (filled by focal/judging/judge.py's render_prompt, which should import these).
MARKER = re.compile(r"<<(\w+)>>")
TEMPLATE_MARKERS = ("conversation", "response", "rubric_item", "answer_format", "fence_open", "fence_close")
REQUIRED_MARKERS = ("fence_open", "response", "fence_close", "rubric_item")


@dataclass(repr=False)
class RubricSet:
    """A named collection of items; `saturation_key` picks each criterion's key."""

    name: str
    items: list[Item]
    description: str = ""
    judge_template: str | None = None  # text of the set's judge prompt, None = Focal's default
    saturation_key: str = "id"

    def summary(self) -> str:
        """'64 items (48 train, 16 eval), 386 criteria (183 checked, 203 judged)'."""
        criteria = [c for it in self.items for c in it.criteria]
        checked = sum(c.check is not None for c in criteria)
        return (f"{len(self.items)} items ({len(self.split('train'))} train, {len(self.split('eval'))} eval), "
                f"{len(criteria)} criteria ({checked} checked, {len(criteria) - checked} judged)")

    def __repr__(self) -> str:  # a summary: the items themselves are thousands of lines
        return f"RubricSet({self.name!r}: {self.summary()}, saturation_key={self.saturation_key!r})"

    def split(self, name: str) -> list[Item]:
        return [it for it in self.items if it.split == name]

    def dataset(self, split: str = "train"):
        """The split as a TRL training dataset (a `datasets.Dataset`): `prompt` (chat messages) and `prompt_id`,
        which FocalReward uses to find each completion's rubric. Needs the `datasets` package (focal[train])."""
        try:
            from datasets import Dataset
        except ImportError as e:
            raise ModuleNotFoundError("RubricSet.dataset needs the `datasets` package, which comes with TRL: "
                                      "pip install 'focal[train]' (in a clone: pip install '.[train]')",
                                      name="datasets") from e

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
    return parse_each(lambda entry: parse_item(entry[1], path, entry[0]), enumerate(data))


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


SET_FIELDS = ("name", "description", "format", "file", "judge_template", "saturation_key", "eval_fraction")
SHIPPED = Path(__file__).resolve().parent / "shipped"  # the sets shipped with Focal: a link to the repository's rubrics/


def shipped_sets() -> list[str]:
    """The names of the rubric sets shipped with Focal (load_rubric_set(name) finds them from any folder)."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "set.yaml").is_file()) if SHIPPED.is_dir() else []


def set_folder(folder) -> Path:
    """Where a rubric set is: `folder` itself, or for a bare name (no slash) with no such folder here, the shipped
    set of that name."""
    folder = Path(folder)
    if not folder.is_dir() and len(folder.parts) == 1 and (SHIPPED / folder / "set.yaml").is_file():
        return SHIPPED / folder
    if not folder.is_dir():
        raise RubricError(f"{folder}: no such rubric set folder; give a folder with a set.yaml (`focal new NAME` "
                          f"writes one), or a shipped set by its bare name: {', '.join(shipped_sets())}")
    return folder


STARTER = Path(__file__).resolve().parent / "starter"  # the commented set `focal new` writes ({name}: its name)


def new_rubric_set(folder) -> Path:
    """Write a commented starter set at `folder` (set.yaml and prompts.yaml: one checked and one judged criterion per
    prompt, every field explained); its name is the folder's. An existing folder is never overwritten."""
    from focal.core.atomic import atomic_dir

    folder = Path(folder)
    if not IDENTIFIER.match(folder.name):
        raise RubricError(f"{folder.name!r}: a rubric set's name is letters, digits and _ . : - (starting with a "
                          "letter or digit); e.g. `focal new support`")
    if folder.exists():
        raise RubricError(f"{folder}: already exists; pick another name, or check it with `focal validate {folder}`")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        for f in sorted(STARTER.glob("*.yaml")):
            (tmp / f.name).write_text(f.read_text(encoding="utf-8").replace("{name}", folder.name), encoding="utf-8")
    return folder


def load_rubric_set(folder) -> RubricSet:
    """Load and validate a rubric set: a folder `rubrics/<name>/`, or a shipped set's bare name ('default',
    'health', 'ifeval') when there is no folder of that name here. Every problem is found in one pass: the
    RubricError names each one's file, line, item, field and fix (`errors` lists them)."""
    folder = set_folder(folder)
    meta_path = folder / "set.yaml"
    meta = read_yaml(meta_path)
    if not isinstance(meta, dict):
        raise RubricError(f"{meta_path}: must be a mapping with at least `format` and `file`")
    where = Where(meta_path)
    problems, _ = read_fields(meta, SET_FIELDS, "set.yaml", where)
    fmt = meta.get("format", "focal")
    if fmt not in FORMATS:
        problems.add(where.error("format", f"is {fmt!r}, not a known format", f"use one of {sorted(FORMATS)}"))
    key = meta.get("saturation_key", "id")
    if key not in ("id", "category"):
        problems.add(where.error("saturation_key", f"must be `id` or `category`, got {key!r}",
                                 "use `id` when criteria ids are shared across prompts, else `category`"))
    eval_fraction = problems.run(number, meta, "eval_fraction", where, 0.2)
    if eval_fraction is not None and not 0 <= eval_fraction < 1:
        problems.add(where.error("eval_fraction", f"must be in [0, 1), got {eval_fraction}",
                                 "e.g. `eval_fraction: 0.2`"))
    data_path = problems.run(_named_file, meta, "file", folder, where, "prompts.yaml")
    template_path = problems.run(_named_file, meta, "judge_template", folder, where)
    template = problems.run(lambda: check_template(read_text(template_path), template_path)) if template_path else None
    if fmt in FORMATS and data_path:  # the items are checked even when a set.yaml field is wrong
        items = problems.run(FORMATS[fmt], data_path, 0.2 if eval_fraction is None else eval_fraction)
    else:
        items = None
    if items == []:
        problems.add(RubricError(f"{data_path}: no items; add at least one prompt with criteria"))
    seen = set()
    for it in items or []:
        if it.id in seen:
            problems.add(RubricError(f"{data_path}: item id {it.id!r} appears twice; give every item its own id"))
        seen.add(it.id)
    problems.check()
    return RubricSet(str(meta.get("name", folder.name)), with_keys(items, key),
                     str(meta.get("description", "")).strip(), template, key)


__all__ = ["FORMATS", "TEMPLATE_MARKERS", "REQUIRED_MARKERS", "MARKER", "RubricSet", "load_rubric_set", "shipped_sets",
           "new_rubric_set",
           "load_focal_items", "read_yaml", "check_template", "with_keys", "item_to_row", "item_from_row",
           "criterion_to_dict", "criterion_from_dict",
           # re-exported from focal.rubrics.types
           "CATEGORIES", "Check", "Criterion", "Item", "RubricError", "Scale", "Where", "make_item", "parse_criterion"]
