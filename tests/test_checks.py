"""Programmatic checks: each registered check on a response that passes and one that fails."""

import pytest

from focal.checks import CHECKS, check_params, run_check

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
    assert set(CASES) == set(CHECKS)


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
    ("max_wordz", 3, "unknown check 'max_wordz'; valid checks: all_lowercase"),
    ("max_words", {"m": 3}, "has no parameter 'm'"),
    ("max_count", {"text": "!"}, "missing a required argument: 'n'"),
    ("ends_with_question", 3, "takes no parameters"),
    ("regex", "(", "does not compile"),
])
def test_bad_check_specs_say_the_fix(name, raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_params(name, raw)
