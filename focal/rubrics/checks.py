"""Programmatic checks: criteria decided locally from the response text, no judge call.

A criterion's `check` field names one entry of CHECKS with its parameters, e.g.
`check: {max_words: 50}` or `check: {max_count: {text: "!", n: 0}}`. A check
returns whether the criterion's *text* is true of the response; polarity (pitfall)
is applied afterwards, the same way as for judged criteria (see focal/rubrics/types.py).
Parameters are validated when a rubric loads: names, types (from each check's
signature, see PARAM_KINDS) and ranges; a CheckError keeps the problem and its fix
apart so that the rubric loader can say where it is.

    from focal.rubrics.checks import run_check
    run_check("max_words", {"n": 3}, "one two three")  # True
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Callable

_WORD = re.compile(r"[A-Za-z0-9']+")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+\S")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def _has_word(text: str, word: str) -> bool:
    """Case-insensitive whole-word (or whole-phrase) match."""
    return re.search(r"(?<!\w)" + re.escape(word.lower()) + r"(?!\w)", text.lower()) is not None


# ---- the checks: each f(response, **params) -> bool ---------------------------------

def max_words(response: str, n: int) -> bool:
    """At most n words."""
    return len(_words(response)) <= n


def min_words(response: str, n: int) -> bool:
    """At least n words."""
    return len(_words(response)) >= n


def max_chars(response: str, n: int) -> bool:
    """At most n characters (surrounding white space ignored)."""
    return len(response.strip()) <= n


def max_lines(response: str, n: int) -> bool:
    """At most n non-empty lines."""
    return len(_lines(response)) <= n


def min_lines(response: str, n: int) -> bool:
    """At least n non-empty lines."""
    return len(_lines(response)) >= n


def max_sentences(response: str, n: int) -> bool:
    """At most n sentences (a sentence ends with . ! or ?, or at the end of the text)."""
    text = response.strip()
    if not text:
        return True
    count = len(_SENTENCE_END.findall(text))
    if not _SENTENCE_END.search(text[-1:] + " "):
        count += 1  # trailing sentence without final punctuation
    return count <= n


def max_paragraphs(response: str, n: int) -> bool:
    """At most n paragraphs (blocks separated by a blank line)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", response.strip()) if p.strip()]
    return len(paragraphs) <= n


def contains_all(response: str, words: list[str]) -> bool:
    """Every word or phrase in `words` appears (case-insensitive, whole words)."""
    return all(_has_word(response, w) for w in words)


def contains_any(response: str, words: list[str]) -> bool:
    """At least one word or phrase in `words` appears (case-insensitive, whole words)."""
    return any(_has_word(response, w) for w in words)


def max_count(response: str, text: str, n: int) -> bool:
    """The substring `text` occurs at most n times (e.g. text="!", n=0)."""
    return response.count(text) <= n


def min_count(response: str, text: str, n: int) -> bool:
    """The substring `text` occurs at least n times."""
    return response.count(text) >= n


def bullet_list(response: str, min_items: int = 2) -> bool:
    """At least min_items lines are bullets (-, * or \u2022)."""
    return sum(bool(_BULLET.match(line)) for line in _lines(response)) >= min_items


def numbered_list(response: str, min_items: int = 2) -> bool:
    """At least min_items lines are numbered items (1. or 1))."""
    return sum(bool(_NUMBERED.match(line)) for line in _lines(response)) >= min_items


def ends_with_question(response: str) -> bool:
    """The last non-space character is a question mark."""
    return response.rstrip().endswith("?")


def starts_with(response: str, text: str) -> bool:
    """The response starts with `text` (case-insensitive, leading white space ignored)."""
    return response.lstrip().lower().startswith(text.lower())


def ends_with(response: str, text: str) -> bool:
    """The response ends with `text` (case-insensitive, trailing white space ignored)."""
    return response.rstrip().lower().endswith(text.lower())


def all_lowercase(response: str) -> bool:
    """No upper-case letters at all (and at least one letter)."""
    return any(ch.isalpha() for ch in response) and response == response.lower()


def contains_digit(response: str) -> bool:
    """At least one digit 0-9 appears."""
    return any(ch.isdigit() for ch in response)


def valid_json(response: str) -> bool:
    """The whole response (optionally in a ``` fence) parses as JSON."""
    text = response.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    return True


def regex(response: str, pattern: str) -> bool:
    """The regular expression `pattern` matches somewhere (re.search, multiline)."""
    return re.search(pattern, response, flags=re.M) is not None


def ifeval(response: str, id: str, kwargs: dict = None, prompt: str = "") -> bool:
    """IFEval's checker `id` with its arguments, strict (if-verifiable's registry; focal/rubrics/ifeval.py)."""
    from focal.rubrics.ifeval import follows

    return follows("ifeval", id, kwargs or {}, response, prompt)[0]


def ifbench(response: str, id: str, kwargs: dict = None, prompt: str = "") -> bool:
    """IFBench's checker `id` with its arguments, strict (if-verifiable's registry; focal/rubrics/ifeval.py)."""
    from focal.rubrics.ifeval import follows

    return follows("ifbench", id, kwargs or {}, response, prompt)[0]


CHECKS = {
    "max_words": max_words,
    "min_words": min_words,
    "max_chars": max_chars,
    "max_lines": max_lines,
    "min_lines": min_lines,
    "max_sentences": max_sentences,
    "max_paragraphs": max_paragraphs,
    "contains_all": contains_all,
    "contains_any": contains_any,
    "max_count": max_count,
    "min_count": min_count,
    "bullet_list": bullet_list,
    "numbered_list": numbered_list,
    "ends_with_question": ends_with_question,
    "starts_with": starts_with,
    "ends_with": ends_with,
    "all_lowercase": all_lowercase,
    "contains_digit": contains_digit,
    "valid_json": valid_json,
    "regex": regex,
    "ifeval": ifeval,
    "ifbench": ifbench,
}


class CheckError(ValueError):
    """A check's name or parameters are invalid; `problem` and `fix` are kept apart so that
    focal.rubrics.sets can put the file, line, item and criterion in front of them."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def _is_text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


# A parameter's annotation -> (what a value must be, its placeholder in a usage line, the test).
# `lo` is the parameter's smallest allowed integer (see AT_LEAST_ONE).
PARAM_KINDS = {
    "int": ("an integer >= {lo}", "<integer >= {lo}>",
            lambda v, lo: isinstance(v, int) and not isinstance(v, bool) and v >= lo),
    "str": ("a non-empty text", "<non-empty text>", lambda v, lo: _is_text(v)),
    "dict": ("a mapping of argument names to values", "{{<name>: <value>, ...}}", lambda v, lo: isinstance(v, dict)),
    "list[str]": ("a non-empty list of non-empty texts", "[<non-empty text>, ...]",
                  lambda v, lo: isinstance(v, list) and bool(v) and all(map(_is_text, v))),
}
# Integer parameters that must be >= 1 (the others are >= 0): "at least 0" would always hold.
AT_LEAST_ONE = {("min_words", "n"), ("min_lines", "n"), ("min_count", "n"),
                ("bullet_list", "min_items"), ("numbered_list", "min_items")}


def _known(name: str) -> None:
    if name not in CHECKS:
        near = difflib.get_close_matches(str(name), CHECKS, n=1, cutoff=0.6)
        raise CheckError(f"unknown check {name!r}" + (f": did you mean {near[0]!r}?" if near else ""),
                         f"valid checks: {', '.join(sorted(CHECKS))}")


def _parameters(name: str) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(CHECKS[name]).parameters.values() if p.name != "response"]


def _kind(name: str, p: inspect.Parameter) -> tuple[str, str, Callable[[object], bool]]:
    """(what a value must be, its placeholder in a usage line, the test) for parameter `p` of check `name`."""
    what, placeholder, test = PARAM_KINDS[p.annotation]
    lo = 1 if (name, p.name) in AT_LEAST_ONE else 0
    return what.format(lo=lo), placeholder.format(lo=lo), lambda v: test(v, lo)


def usage(name: str) -> str:
    """How a rubric writes the check, e.g. `check: {max_count: {text: <non-empty text>, n: <integer >= 0>}}`."""
    shown = [(p.name, _kind(name, p)[1]) for p in _parameters(name)]
    if not shown:
        return f"check: {name}"
    if len(shown) == 1:
        return f"check: {{{name}: {shown[0][1]}}}"
    return f"check: {{{name}: {{{', '.join(f'{k}: {v}' for k, v in shown)}}}}}"


def validate_params(name: str, params: dict) -> None:
    """Raise CheckError unless `params` are exactly right for the check `name` (names, types, ranges)."""
    _known(name)
    fix = f"write `{usage(name)}`"
    if not isinstance(params, dict):
        raise CheckError(f"check {name!r} parameters must be a mapping, got {params!r}", fix)
    known = {p.name: p for p in _parameters(name)}
    for key in params:
        if key not in known:
            raise CheckError(f"check {name!r} has no parameter {key!r}", fix)
    for key, p in known.items():
        if key not in params:
            if p.default is p.empty:
                raise CheckError(f"check {name!r} is missing its parameter {key!r}", fix)
            continue
        what, _, test = _kind(name, p)
        if not test(params[key]):
            raise CheckError(f"check {name!r} parameter {key!r} must be {what}, got {params[key]!r}", fix)
    if name in ("ifeval", "ifbench"):
        from focal.rubrics.ifeval import describe

        try:
            describe(name, params["id"], params.get("kwargs") or {}, params.get("prompt", ""))
        except ValueError as e:
            raise CheckError(f"check {name!r}: {e}", f"use an instruction id of the {name} registry with the "
                             "arguments its checker's build_description takes") from None
    if name == "regex":
        try:
            re.compile(params["pattern"])
        except re.error as e:
            raise CheckError(f"check 'regex' parameter 'pattern' does not compile ({e}), got {params['pattern']!r}",
                             "fix the regular expression (Python `re` syntax) and quote it in YAML, "
                             "e.g. `check: {regex: '^Step \\d'}`") from None


def as_params(name: str, raw) -> dict:
    """A check's YAML value as keyword parameters, not yet validated.

    `raw` may be None (no parameters), a dict of parameters, or a single value for
    the check's first parameter (`max_words: 50`, `contains_any: [a, b]`).
    """
    _known(name)
    names = [p.name for p in _parameters(name)]
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if names:
        return {names[0]: raw}
    raise CheckError(f"check {name!r} takes no parameters, got {raw!r}", f"write `check: {name}`")


def check_params(name: str, raw) -> dict:
    """A check's YAML value (see as_params) as validated keyword parameters; CheckError (a ValueError)
    names the problem and the fix."""
    params = as_params(name, raw)
    validate_params(name, params)
    return params


def run_check(name: str, params: dict, response: str) -> bool:
    """Whether the criterion text checked by `name` is true of `response`."""
    return bool(CHECKS[name](response, **params))
