"""Programmatic checks: criteria decided locally from the response text, no judge call.

A criterion's `check` field names one entry of CHECKS with its parameters, e.g.
`check: {max_words: 50}` or `check: {max_count: {text: "!", n: 0}}`. A check
returns whether the criterion's *text* is true of the response; polarity (pitfall)
is applied afterwards, the same way as for judged criteria (see focal/rubric.py).

    from focal.checks import run_check
    run_check("max_words", {"n": 3}, "one two three")  # True
"""

from __future__ import annotations

import inspect
import json
import re

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
}


def check_params(name: str, raw) -> dict:
    """Normalise a check's YAML value to keyword parameters and validate them.

    `raw` may be None (no parameters), a dict of parameters, or a single value for
    the check's first parameter (`max_words: 50`, `contains_any: [a, b]`).
    Raises ValueError naming the problem and the fix.
    """
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; valid checks: {', '.join(sorted(CHECKS))}")
    sig = inspect.signature(CHECKS[name])
    names = [p for p in sig.parameters if p != "response"]
    if raw is None:
        params = {}
    elif isinstance(raw, dict):
        params = dict(raw)
    elif names:
        params = {names[0]: raw}
    else:
        raise ValueError(f"check {name!r} takes no parameters, got {raw!r}; write it as `check: {name}`")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ValueError(f"check {name!r} has no parameter {unknown[0]!r}; its parameters: {names or 'none'}")
    try:
        sig.bind("", **params)
    except TypeError as e:
        raise ValueError(f"check {name!r} parameters {params}: {e}; its parameters: {names}") from None
    if "regex" == name:
        try:
            re.compile(params["pattern"])
        except re.error as e:
            raise ValueError(f"check 'regex' pattern {params['pattern']!r} does not compile: {e}") from None
    return params


def run_check(name: str, params: dict, response: str) -> bool:
    """Whether the criterion text checked by `name` is true of `response`."""
    return bool(CHECKS[name](response, **params))
