"""Rubric items and their criteria: the types, their validation, and errors that say where.

The bottom of the rubric code: focal/rubrics/sets.py (Focal's YAML format, rubric sets)
and focal/rubrics/formats.py (formats users already have) both build items with these
functions, so every format goes through the same validation.

    from focal.rubrics.types import Where, parse_criterion
    c = parse_criterion({"id": "short", "text": "At most 40 words.", "weight": 2,
                         "check": {"max_words": 40}}, Where("prompts.yaml", 12, "p001"))
    c.satisfaction(True)  # 1.0

Satisfaction (docs/method.md): binary met -> 1/0 (a soft verdict, the probability p that it is
met, -> p); likert s -> (s - min) / (max - min);
a pitfall's judgment says whether the bad behaviour is *present*, and its
satisfaction is 1 - present. A failed judgment is NaN, never 0.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from focal.rubrics.checks import CheckError, as_params, validate_params

CATEGORIES = ("essential", "important", "optional", "pitfall")
MET = 0.5  # a criterion counts as met when its satisfaction r >= MET (binary: r == 1)
SCALE_KINDS = ("binary", "likert")
SPLITS = ("train", "eval")
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class RubricError(ValueError):
    """A rubric file is invalid; the message names the file, the item, the field and the fix.

    `errors`: every problem found, one line each (a set is checked whole: `focal validate` prints them all)."""

    def __init__(self, *errors: str):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class Problems:
    """The problems of independent parts (the fields of a criterion, the criteria of an item, the items of a file),
    kept so that one pass over a set reports every mistake in it, not only the first.

        problems = Problems()
        weight = problems.run(number, d, "weight", where)   # None when it failed; its error is kept
        problems.check()                                    # one RubricError listing every error, if any
    """

    def __init__(self):
        self.errors: list[str] = []

    def add(self, error: RubricError) -> None:
        self.errors.extend(error.errors)

    def run(self, fn, *args):
        """fn(*args), or None with its RubricError kept."""
        try:
            return fn(*args)
        except RubricError as e:
            self.add(e)
            return None

    def check(self) -> None:
        if self.errors:
            raise RubricError(*self.errors)


def parse_each(parse, entries) -> list:
    """[parse(e) for e in entries], every entry tried: the errors of all of them are raised together."""
    problems = Problems()
    out = [problems.run(parse, e) for e in entries]
    problems.check()
    return out


@dataclass(frozen=True)
class Scale:
    """How a judgment is scored: binary (met / not met) or likert min..max."""

    kind: str = "binary"
    min: float = 0.0
    max: float = 1.0


@dataclass(frozen=True)
class Check:
    """A programmatic check: a name in focal.rubrics.checks.CHECKS and its parameters, validated on construction."""

    name: str
    params: dict = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self):
        validate_params(self.name, self.params)  # CheckError (a ValueError): the problem and the fix


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion (docs/method.md 'Data')."""

    id: str
    text: str
    weight: float = 1.0
    category: str = "important"
    pitfall: bool = False
    scale: Scale = Scale()
    check: Check | None = None
    key: str = ""  # saturation key for Focal's moving average; set by the rubric set

    def satisfaction(self, raw) -> float:
        """Project a raw judgment (bool met/present, a probability of it in [0, 1] (a soft verdict), or a likert
        score) to r in [0, 1].

        None or NaN (a failed judgment) stays NaN.
        """
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return math.nan
        if self.scale.kind == "binary":
            if not isinstance(raw, bool) and not 0 <= raw <= 1:
                raise ValueError(f"criterion {self.id!r}: a binary judgment is true/false or a probability in "
                                 f"[0, 1], got {raw!r}")
            r = float(raw)
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


# ---- where an error is ----------------------------------------------------------------

class Where:
    """Builds error messages: file:line: item 'x' criterion 'y' field 'f' <problem>; <fix>."""

    def __init__(self, path, line=None, item=None, criterion=None):
        self.path, self.line, self.item, self.criterion = path, line, item, criterion

    def error(self, field_name: str, problem: str, fix: str) -> RubricError:
        return RubricError(self.text(field_name, problem, fix))

    def warn(self, field_name: str, problem: str, fix: str) -> None:
        """Print `warning: <where> field ... <problem>; <fix>` to stderr (the file is still accepted)."""
        print(f"warning: {self.text(field_name, problem, fix)}", file=sys.stderr)

    def text(self, field_name: str, problem: str, fix: str) -> str:
        loc = f"{self.path}" + (f":{self.line}" if self.line else "")
        who = "".join([f" item {self.item!r}" if self.item is not None else "",
                       f" criterion {self.criterion!r}" if self.criterion is not None else ""])
        return f"{loc}:{who} field {field_name!r} {problem}; {fix}"


def read_text(path) -> str:
    """A rubric file's text; a missing, unreadable or non-UTF-8 file is a RubricError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RubricError(f"{path}: file not found; create it or fix the name that points to it") from None
    except OSError as e:
        raise RubricError(f"{path}: cannot be read ({e.strerror}); make it a readable file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RubricError(f"{path}:{line}: is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
                          "save the file as UTF-8") from None


# ---- validation ---------------------------------------------------------------------

CRITERION_FIELDS = ("id", "text", "weight", "category", "pitfall", "scale", "check")
ITEM_FIELDS = ("id", "prompt", "split", "criteria")


def read_fields(d: dict, known, kind: str, where: Where):
    """(problems, field) for reading the mapping `d` of a `kind` (criterion, item, set.yaml) whose fields are `known`.

    `problems` already holds an error for each key that is not a known field: "did you mean" for a misspelling, and
    for the rest of a text cut at an unquoted comma (`{text: Verify it, then reply}` is YAML for {text: "Verify it",
    "then reply": null}) the quoted text to write. `field(name, parse, *args)` is parse(*args), or None with its error
    kept; a field a misspelt key stands for is skipped (its "is missing" would only repeat the news)."""
    problems, meant, previous = Problems(), set(), None
    for k, v in d.items():
        if k == "__line__":
            continue
        if k in known:
            previous = k
            continue
        name = str(k)
        near = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        if isinstance(d.get(previous), str) and (v is None or " " in name):
            rest = name if v is None else f"{name}: {v}"
            problems.add(where.error(k, f"is not a {kind} field: it looks like the rest of field {previous!r} "
                                        "after an unquoted comma (in `{...}`, a comma ends a field)",
                                     f'quote the text: `{previous}: "{d[previous]}, {rest}"`'))
        elif near:
            meant.add(near[0])
            problems.add(where.error(k, f"is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} field: did you mean "
                                        f"{near[0]!r}?", f"write `{near[0]}:` (fields: {', '.join(known)})"))
        else:
            problems.add(where.error(k, f"is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} field",
                                     f"use only {', '.join(known)}"))

    def field(name, parse, *args):
        return None if name in meant and name not in d else problems.run(parse, *args)

    return problems, field


def number(d: dict, key: str, where: Where, default=None) -> float:
    """d[key] (or `default`) as a finite float; RubricError naming the field otherwise."""
    v = d.get(key, default)
    if v is None:
        raise where.error(key, "is missing", f"add `{key}: <number>`")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise where.error(key, f"must be a finite number, got {v!r}", f"write e.g. `{key}: 1`")
    return float(v)


def _text(d: dict, key: str, where: Where) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise where.error(key, "is missing or empty" if v in (None, "") else f"must be text, got {v!r}",
                          f"add `{key}: <text>`")
    return v.strip()


def _ident(d: dict, key: str, where: Where) -> str:
    v = d.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not IDENTIFIER.match(v):
        raise where.error(key, f"must be an identifier (letters, digits, _ . : -), got {v!r}",
                          f"add e.g. `{key}: clarity`")
    return v


def parse_scale(raw, where: Where) -> Scale:
    if raw is None or raw == "binary":
        return Scale()
    if isinstance(raw, dict) and raw.get("kind", "likert") == "likert":
        lo, hi = number(raw, "min", where, 1), number(raw, "max", where)
        if hi <= lo:
            raise where.error("scale", f"needs max > min, got min={lo} max={hi}", "e.g. `scale: {kind: likert, min: 1, max: 5}`")
        return Scale("likert", lo, hi)
    raise where.error("scale", f"must be `binary` or `{{kind: likert, min: 1, max: N}}`, got {raw!r}",
                      f"use one of {SCALE_KINDS}")


def parse_check(raw, where: Where) -> Check | None:
    """A criterion's `check` field: a check name, or a one-key mapping {name: params}; validated here."""
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
        return Check(name, as_params(name, value))
    except CheckError as e:
        raise where.error("check", e.problem, e.fix) from None


def _weight(d: dict, where: Where) -> float:
    weight = number(d, "weight", where)
    if weight <= 0:
        raise where.error("weight", f"must be > 0, got {weight}",
                          "a negative weight is written as a positive weight with `category: pitfall`")
    return weight


def _category(d: dict, where: Where) -> str:
    category = d.get("category", "important")
    if not isinstance(category, str) or not category.strip():
        raise where.error("category", f"must be text, got {category!r}", f"use one of {CATEGORIES} or a tag")
    tag = category.strip().lower()
    near = difflib.get_close_matches(tag, CATEGORIES, n=1, cutoff=0.8)
    if near and tag not in CATEGORIES:  # a typo of a known category would silently become a free tag
        where.warn("category", f"is {tag!r}, not a known category: did you mean {near[0]}?",
                   f"write `category: {near[0]}` (any other text is kept as a free tag)")
    return tag


def _pitfall(d: dict, where: Where) -> bool:
    pitfall = d.get("pitfall", d.get("category") == "pitfall")
    if not isinstance(pitfall, bool):
        raise where.error("pitfall", f"must be true or false, got {pitfall!r}", "write `pitfall: true`")
    return pitfall


def parse_criterion(d, where: Where) -> Criterion:
    """Validate one criterion mapping of Focal's format (importers build the same mapping). Every field is checked:
    the RubricError lists each problem."""
    if not isinstance(d, dict):
        raise where.error("criteria", f"entries must be mappings, got {d!r}", "write `- id: ...` with text, weight")
    where = Where(where.path, d.get("__line__", where.line), where.item, d.get("id"))
    problems, field = read_fields(d, CRITERION_FIELDS, "criterion", where)
    criterion = Criterion(field("id", _ident, d, "id", where), field("text", _text, d, "text", where),
                          field("weight", _weight, d, where), field("category", _category, d, where),
                          field("pitfall", _pitfall, d, where), field("scale", parse_scale, d.get("scale"), where),
                          field("check", parse_check, d.get("check"), where))
    problems.check()
    return criterion


def parse_item(d, path, index: int) -> Item:
    """Validate one prompt item of Focal's format; every field and every criterion is checked (the RubricError
    lists each problem)."""
    if not isinstance(d, dict):
        raise RubricError(f"{path}: item #{index} must be a mapping with id, prompt, criteria; got {d!r}")
    where = Where(path, d.get("__line__"), d.get("id", f"#{index}"))
    problems, field = read_fields(d, ITEM_FIELDS, "item", where)
    iid = field("id", _ident, d, "id", where)
    prompt = field("prompt", _text, d, "prompt", where)
    split = field("split", _split, d, where)
    criteria = field("criteria", _criteria, d, where)
    problems.check()
    return make_item(iid, prompt, criteria, split, where)


def _split(d: dict, where: Where) -> str:
    split = d.get("split", "train")
    if split not in SPLITS:
        raise where.error("split", f"must be one of {SPLITS}, got {split!r}", "write `split: train` or `split: eval`")
    return split


def _criteria(d: dict, where: Where) -> list[Criterion]:
    raw = d.get("criteria")
    if not isinstance(raw, list) or not raw:
        raise where.error("criteria", "is missing or empty", "add a list of criteria with id, text, weight")
    return parse_each(lambda c: parse_criterion(c, where), raw)


def make_item(iid: str, prompt: str, criteria, split: str, where: Where, messages=()) -> Item:
    """Build an Item, checking that criterion ids are unique."""
    seen, problems = set(), Problems()
    for c in criteria:
        if c.id in seen:
            problems.add(where.error("criteria", f"has the id {c.id!r} twice",
                                     "give every criterion of an item its own id"))
        seen.add(c.id)
    problems.check()
    return Item(iid, prompt, tuple(criteria), split, tuple(messages))


def hash_split(item_id: str, eval_fraction: float) -> str:
    """Deterministic split for formats without one: by a hash of the item id."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if h < eval_fraction else "train"
