"""Programmatic checks: each registered check on a response that passes and one that fails."""

import inspect
import re

import pytest

from focal.rubrics.checks import CHECKS, PARAM_KINDS, CheckError, check_params, run_check

CASES = {
    # name: (params, passing response, failing response)
    "max_words": ({"n": 3}, "one two three", "one two three four"),
    "min_words": ({"n": 3}, "one two three", "one two"),
    "max_chars": ({"n": 5}, "  abcde  ", "abcdef"),
    "max_lines": ({"n": 2}, "a\n\nb", "a\nb\nc"),
    "min_lines": ({"n": 2}, "a\nb", "a"),
    "max_sentences": ({"n": 2}, "One. Two!", "One. Two? Three"),
    "max_paragraphs": ({"n": 1}, "one line\nsecond line", "para one\n\npara two"),
    "contains_all": ({"words": ["sun", "water"]}, "Sun and water.", "Sunny water."),
    "contains_any": ({"words": ["as an ai", "robot"]}, "As an AI, I think", "I think"),
    "max_count": ({"text": "!", "n": 0}, "Calm.", "Wow!"),
    "min_count": ({"text": "!", "n": 2}, "Wow! Yes!", "Wow!"),
    "bullet_list": ({"min_items": 2}, "- a\n* b", "- a\nb"),
    "numbered_list": ({"min_items": 2}, "1. a\n2) b", "1. a"),
    "ends_with_question": ({}, "Ready?  ", "Ready? Go."),
    "starts_with": ({"text": "Sure thing"}, "  sure thing, here", "Sure, thing"),
    "ends_with": ({"text": "Cheers."}, "Bye. cheers.", "Cheers. Bye."),
    "all_lowercase": ({}, "all small 1", "Not small"),
    "contains_digit": ({}, "Drink 2 glasses", "Drink two glasses"),
    "valid_json": ({}, '```json\n{"a": 1}\n```', "{a: 1}"),
    "regex": ({"pattern": r"^Step \d"}, "Intro\nStep 1 go", "step one"),
}


def test_every_registered_check_has_a_case():
    assert set(CASES) == set(CHECKS) - {"ifeval", "ifbench"}  # IFEval's own checkers: tests/test_ifeval.py


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_passes_and_fails(name):
    params, good, bad = CASES[name]
    params = check_params(name, params)
    assert run_check(name, params, good) is True
    assert run_check(name, params, bad) is False


def test_word_matching_is_whole_word_and_case_insensitive():
    assert run_check("contains_any", {"words": ["cat"]}, "A CAT sat")
    assert not run_check("contains_any", {"words": ["cat"]}, "concatenate")


def test_short_forms_fill_the_first_parameter():
    assert check_params("max_words", 50) == {"n": 50}
    assert check_params("contains_any", ["a", "b"]) == {"words": ["a", "b"]}
    assert check_params("ends_with_question", None) == {}


@pytest.mark.parametrize("name, raw, message", [
    ("max_wordz", 3, "unknown check 'max_wordz': did you mean 'max_words'?; valid checks: all_lowercase"),
    ("max_words", {"m": 3}, "check 'max_words' has no parameter 'm'; write `check: {max_words: <integer >= 0>}`"),
    ("max_count", {"text": "!"}, "check 'max_count' is missing its parameter 'n'; "
                                 "write `check: {max_count: {text: <non-empty text>, n: <integer >= 0>}}`"),
    ("ends_with_question", 3, "check 'ends_with_question' takes no parameters, got 3; write `check: ends_with_question`"),
    ("regex", "(", "check 'regex' parameter 'pattern' does not compile (missing ), unterminated subpattern"),
])
def test_bad_check_specs_say_the_fix(name, raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_params(name, raw)


@pytest.mark.parametrize("name, raw, message", [
    ("max_words", "ten", "check 'max_words' parameter 'n' must be an integer >= 0, got 'ten'"),
    ("max_words", True, "check 'max_words' parameter 'n' must be an integer >= 0, got True"),
    ("max_words", 5.5, "check 'max_words' parameter 'n' must be an integer >= 0, got 5.5"),
    ("max_chars", -1, "check 'max_chars' parameter 'n' must be an integer >= 0, got -1"),
    ("min_words", 0, "check 'min_words' parameter 'n' must be an integer >= 1, got 0"),  # 'at least 0' always holds
    ("bullet_list", {"min_items": 0}, "parameter 'min_items' must be an integer >= 1, got 0"),
    ("min_count", {"text": "!", "n": "2"}, "check 'min_count' parameter 'n' must be an integer >= 1, got '2'"),
    ("contains_any", "ai", "check 'contains_any' parameter 'words' must be a non-empty list of non-empty texts, "
                           "got 'ai'; write `check: {contains_any: [<non-empty text>, ...]}`"),
    ("contains_all", [], "parameter 'words' must be a non-empty list of non-empty texts, got []"),
    ("contains_all", ["sun", ""], "parameter 'words' must be a non-empty list of non-empty texts, got ['sun', '']"),
    ("contains_all", ["sun", 3], "parameter 'words' must be a non-empty list of non-empty texts, got ['sun', 3]"),
    ("starts_with", 3, "check 'starts_with' parameter 'text' must be a non-empty text, got 3"),
    ("ends_with", "", "check 'ends_with' parameter 'text' must be a non-empty text, got ''"),
    ("max_count", {"text": ["!"], "n": 0}, "check 'max_count' parameter 'text' must be a non-empty text, got ['!']"),
    ("regex", 5, "check 'regex' parameter 'pattern' must be a non-empty text, got 5"),
])
def test_param_types_and_ranges_are_checked_when_parsed(name, raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_params(name, raw)


def test_every_check_parameter_has_a_known_kind():
    for name, f in CHECKS.items():
        for p, param in inspect.signature(f).parameters.items():
            if p != "response":
                assert param.annotation in PARAM_KINDS, (name, p, param.annotation)


def test_a_check_error_keeps_problem_and_fix_apart():
    with pytest.raises(CheckError) as info:
        check_params("contains_any", "ai")
    assert info.value.problem.endswith("got 'ai'") and info.value.fix.startswith("write `check: {contains_any:")
