"""Rubric types, validation, projection to satisfaction, and loading a rubric set.

A rubric set is a folder `rubrics/<name>/` holding `set.yaml` (what the set is and
how its items are stored) and the items: Focal's own YAML (`prompts.yaml`, below)
or a file in a format users already have (see focal/importers.py: healthbench,
rar, chasing_the_tail, writingbench).

    from focal.rubric import load_rubric_set
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
          check: {max_words: 40}     # optional: decided locally (focal/checks.py)
        - id: ai_disclaimer
          text: The response says it is an AI or a language model.
          category: pitfall          # pitfall: true is implied by this category
          weight: 2
        - id: clarity
          text: How clear is the explanation for a beginner?
          scale: {kind: likert, min: 1, max: 5}

Satisfaction (METHOD.md): binary met -> 1/0; likert s -> (s - min) / (max - min);
a pitfall's judgment says whether the bad behaviour is *present*, and its
satisfaction is 1 - present. A failed judgment is NaN, never 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from focal.checks import check_params

CATEGORIES = ("essential", "important", "optional", "pitfall")
SCALE_KINDS = ("binary", "likert")
SPLITS = ("train", "eval")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class RubricError(ValueError):
    """A rubric file is invalid; the message names the file, the item, the field and the fix."""


@dataclass(frozen=True)
class Scale:
    """How a judgment is scored: binary (met / not met) or likert min..max."""

    kind: str = "binary"
    min: float = 0.0
    max: float = 1.0


@dataclass(frozen=True)
class Check:
    """A programmatic check: a name in focal.checks.CHECKS and its parameters."""

    name: str
    params: dict = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion (METHOD.md 'Data')."""

    id: str
    text: str
    weight: float = 1.0
    category: str = "important"
    pitfall: bool = False
    scale: Scale = Scale()
    check: Check | None = None
    key: str = ""  # saturation key for Focal's moving average; set by the rubric set

    def satisfaction(self, raw) -> float:
        """Project a raw judgment (bool met/present, or a likert score) to r in [0, 1].

        None or NaN (a failed judgment) stays NaN.
        """
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return math.nan
        if self.scale.kind == "binary":
            r = 1.0 if bool(raw) else 0.0
        else:
            s = min(max(float(raw), self.scale.min), self.scale.max)
            r = (s - self.scale.min) / (self.scale.max - self.scale.min)
        return 1.0 - r if self.pitfall else r


@dataclass(frozen=True)
class Item:
    """A prompt with its rubric."""

    id: str
    prompt: str  # the (last) user message
    criteria: tuple[Criterion, ...]
    split: str = "train"
    messages: tuple = ()  # the whole conversation [{role, content}] when multi-turn, else ()

    def chat(self) -> list[dict]:
        """The conversation to send to a chat model."""
        return [dict(m) for m in self.messages] or [{"role": "user", "content": self.prompt}]


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
    """SafeLoader that records each mapping's line as the key '__line__'."""


def _construct_mapping(loader, node, deep=False):
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path):
    """Parse a YAML file; dicts carry '__line__'. Bad YAML raises RubricError with the line."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_LineLoader)
    except FileNotFoundError:
        raise RubricError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RubricError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)}); fix the syntax there") from None


# ---- validation ---------------------------------------------------------------------

class _Where:
    """Builds error messages: file:line: item 'x' criterion 'y': field 'f' ..."""

    def __init__(self, path, line=None, item=None, criterion=None):
        self.path, self.line, self.item, self.criterion = path, line, item, criterion

    def error(self, field_name: str, problem: str, fix: str) -> RubricError:
        loc = f"{self.path}" + (f":{self.line}" if self.line else "")
        who = "".join([f" item {self.item!r}" if self.item is not None else "",
                       f" criterion {self.criterion!r}" if self.criterion is not None else ""])
        return RubricError(f"{loc}:{who} field {field_name!r} {problem}; {fix}")


def _number(d: dict, key: str, where: _Where, default=None) -> float:
    v = d.get(key, default)
    if v is None:
        raise where.error(key, "is missing", f"add `{key}: <number>`")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise where.error(key, f"must be a finite number, got {v!r}", f"write e.g. `{key}: 1`")
    return float(v)


def _text(d: dict, key: str, where: _Where) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise where.error(key, "is missing or empty" if v in (None, "") else f"must be text, got {v!r}",
                          f"add `{key}: <text>`")
    return v.strip()


def _ident(d: dict, key: str, where: _Where) -> str:
    v = d.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not _ID.match(v):
        raise where.error(key, f"must be an identifier (letters, digits, _ . : -), got {v!r}",
                          f"add e.g. `{key}: clarity`")
    return v


def parse_scale(raw, where: _Where) -> Scale:
    if raw is None or raw == "binary":
        return Scale()
    if isinstance(raw, dict) and raw.get("kind", "likert") == "likert":
        lo, hi = _number(raw, "min", where, 1), _number(raw, "max", where)
        if hi <= lo:
            raise where.error("scale", f"needs max > min, got min={lo} max={hi}", "e.g. `scale: {kind: likert, min: 1, max: 5}`")
        return Scale("likert", lo, hi)
    raise where.error("scale", f"must be `binary` or `{{kind: likert, min: 1, max: N}}`, got {raw!r}",
                      f"use one of {SCALE_KINDS}")


def parse_check(raw, where: _Where) -> Check | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        name, value = raw, None
    elif isinstance(raw, dict) and len([k for k in raw if k != "__line__"]) == 1:
        name = next(k for k in raw if k != "__line__")
        value = raw[name]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "__line__"}
    else:
        raise where.error("check", f"must be a check name or a one-key mapping, got {raw!r}",
                          "write e.g. `check: {max_words: 50}`")
    try:
        return Check(name, check_params(name, value))
    except ValueError as e:
        raise where.error("check", str(e), "see focal/checks.py for the registry") from None


def parse_criterion(d, where: _Where) -> Criterion:
    """Validate one criterion mapping of Focal's format."""
    if not isinstance(d, dict):
        raise where.error("criteria", f"entries must be mappings, got {d!r}", "write `- id: ...` with text, weight")
    where = _Where(where.path, d.get("__line__", where.line), where.item, d.get("id"))
    known = {"id", "text", "weight", "category", "pitfall", "scale", "check", "__line__"}
    for k in d:
        if k not in known:
            raise where.error(k, "is not a criterion field", f"use only {sorted(known - {'__line__'})}")
    cid = _ident(d, "id", where)
    text = _text(d, "text", where)
    weight = _number(d, "weight", where)
    if weight <= 0:
        raise where.error("weight", f"must be > 0, got {weight}",
                          "a negative weight is written as a positive weight with `category: pitfall`")
    category = d.get("category", "important")
    if not isinstance(category, str) or not category.strip():
        raise where.error("category", f"must be text, got {category!r}", f"use one of {CATEGORIES} or a tag")
    pitfall = d.get("pitfall", category == "pitfall")
    if not isinstance(pitfall, bool):
        raise where.error("pitfall", f"must be true or false, got {pitfall!r}", "write `pitfall: true`")
    return Criterion(cid, text, weight, category.strip().lower(), pitfall,
                     parse_scale(d.get("scale"), where), parse_check(d.get("check"), where))


def parse_item(d, path, index: int) -> Item:
    """Validate one prompt item of Focal's format."""
    if not isinstance(d, dict):
        raise RubricError(f"{path}: item #{index} must be a mapping with id, prompt, criteria; got {d!r}")
    where = _Where(path, d.get("__line__"), d.get("id", f"#{index}"))
    for k in d:
        if k not in {"id", "prompt", "split", "criteria", "__line__"}:
            raise where.error(k, "is not an item field", "use only id, prompt, split, criteria")
    iid = _ident(d, "id", where)
    prompt = _text(d, "prompt", where)
    split = d.get("split", "train")
    if split not in SPLITS:
        raise where.error("split", f"must be one of {SPLITS}, got {split!r}", "write `split: train` or `split: eval`")
    raw = d.get("criteria")
    if not isinstance(raw, list) or not raw:
        raise where.error("criteria", "is missing or empty", "add a list of criteria with id, text, weight")
    criteria = tuple(parse_criterion(c, where) for c in raw)
    return make_item(iid, prompt, criteria, split, where)


def make_item(iid: str, prompt: str, criteria, split: str, where: _Where, messages=()) -> Item:
    """Build an Item, checking that criterion ids are unique."""
    seen = set()
    for c in criteria:
        if c.id in seen:
            raise where.error("criteria", f"has the id {c.id!r} twice", "give every criterion of an item its own id")
        seen.add(c.id)
    return Item(iid, prompt, tuple(criteria), split, tuple(messages))


def with_keys(items: list[Item], saturation_key: str) -> list[Item]:
    """Set each criterion's Focal key: its id (criteria shared across prompts) or its category."""
    out = []
    for it in items:
        crits = tuple(Criterion(c.id, c.text, c.weight, c.category, c.pitfall, c.scale, c.check,
                                c.id if saturation_key == "id" else c.category)
                      for c in it.criteria)
        out.append(Item(it.id, it.prompt, crits, it.split, it.messages))
    return out


def hash_split(item_id: str, eval_fraction: float) -> str:
    """Deterministic split for formats without one: by a hash of the item id."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if h < eval_fraction else "train"


def load_rubric_set(folder) -> RubricSet:
    """Load and validate `rubrics/<name>/`. Raises RubricError naming file, item and field."""
    from focal.importers import FORMATS  # importers build Items with this module's types

    folder = Path(folder)
    meta_path = folder / "set.yaml"
    if not folder.is_dir():
        raise RubricError(f"{folder}: no such rubric set folder; create it with a set.yaml, or pick an existing one under rubrics/")
    meta = read_yaml(meta_path)
    if not isinstance(meta, dict):
        raise RubricError(f"{meta_path}: must be a mapping with at least `format` and `file`")
    where = _Where(meta_path)
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
    eval_fraction = _number(meta, "eval_fraction", where, 0.2)
    if not 0 <= eval_fraction < 1:
        raise where.error("eval_fraction", f"must be in [0, 1), got {eval_fraction}", "e.g. `eval_fraction: 0.2`")
    data_path = folder / meta.get("file", "prompts.yaml")
    items = FORMATS[fmt](data_path, eval_fraction)
    if not items:
        raise RubricError(f"{data_path}: no items; add at least one prompt with criteria")
    ids = set()
    for it in items:
        if it.id in ids:
            raise RubricError(f"{data_path}: item id {it.id!r} appears twice; give every item its own id")
        ids.add(it.id)
    template = None
    if meta.get("judge_template"):
        tpath = folder / meta["judge_template"]
        if not tpath.is_file():
            raise where.error("judge_template", f"names {tpath}, which does not exist", "create it or remove the field")
        template = tpath.read_text(encoding="utf-8")
    return RubricSet(str(meta.get("name", folder.name)), with_keys(items, key),
                     str(meta.get("description", "")).strip(), template, key)


def load_focal_items(path: Path, eval_fraction: float) -> list[Item]:
    """Focal's own format: a YAML list of items (see the module docstring)."""
    data = read_yaml(path)
    if not isinstance(data, list):
        raise RubricError(f"{path}: must be a YAML list of items (`- id: ...`), got {type(data).__name__}")
    return [parse_item(d, path, i) for i, d in enumerate(data)]
