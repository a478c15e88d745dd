"""IFEval-format rubric sets through the benchmark's own checkers (focal/rubrics/ifeval.py, the ifeval importer)."""

import json
import math
import os
from pathlib import Path

import pytest

from focal.rubrics.checks import run_check
from focal.rubrics.ifeval import (Scored, available, compatible, follows, generate_prompts, registry, rows_of,
                          score_response, summarise)
from focal.rubrics.formats import load_ifeval
from focal.rubrics.types import RubricError

FIXTURE = Path(__file__).parent / "fixtures" / "ifeval" / "handmade.jsonl"


def test_importer_on_a_handmade_file():
    items = load_ifeval(FIXTURE, eval_fraction=0.0)
    assert [it.id for it in items] == ["1", "2", "3"]
    first = items[0]
    assert [c.id for c in first.criteria] == ["punctuation:no_comma", "change_case:english_lowercase"]
    assert [c.category for c in first.criteria] == ["punctuation", "change_case"]
    assert first.criteria[0].check.name == "ifeval"
    assert first.criteria[0].text.startswith("In your entire response, refrain from the use of any commas")
    assert items[1].split == "eval" and items[0].split == "train"  # a row's split is kept; eval_fraction 0 -> train
    assert items[1].criteria[0].check.params["kwargs"] == {"keywords": ["whiskers", "nap"]}  # nulls dropped
    registry, rows = rows_of(items)
    assert registry == "ifeval" and rows[2]["instruction_id_list"] == ["startend:end_checker"]


def test_importer_names_the_line_and_field_of_a_bad_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1, "prompt": "hi", "instruction_id_list": ["keywords:nope"], "kwargs": [{}]}\n')
    with pytest.raises(RubricError, match=r"bad.jsonl:1:.*'keywords:nope'.*instruction_id_list"):
        load_ifeval(bad, 0.0)
    bad.write_text('{"key": 1, "prompt": "hi", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}\n')
    with pytest.raises(RubricError, match=r"bad.jsonl:1:.*'kwargs' must be a list of 1 mappings"):
        load_ifeval(bad, 0.0)
    bad.write_text('{"key": 1, "prompt": "hi", "instruction_id_list": ["keywords:existence"], '
                   '"kwargs": [{"colour": "red"}]}\n')
    with pytest.raises(RubricError, match="does not take the arguments"):
        load_ifeval(bad, 0.0)


# (response, instruction, kwargs, strict, loose) worked out by hand from IFEval's definitions: loose also
# tries the response without its first line, its last line, both, and without markdown asterisks.
CASES = [
    ("no commas at all here", "punctuation:no_comma", {}, True, True),
    ("Sure, here it is:\nno commas at all here", "punctuation:no_comma", {}, False, True),  # first line dropped
    ("all lowercase words here", "change_case:english_lowercase", {}, True, True),
    ("All lowercase words here", "change_case:english_lowercase", {}, False, False),
    ("the cat has whiskers and takes a nap", "keywords:existence", {"keywords": ["whiskers", "nap"]}, True, True),
    ("the cat has whiskers", "keywords:existence", {"keywords": ["whiskers", "nap"]}, False, False),
    ("Tea is nice. Is there anything else I can help with?", "startend:end_checker",
     {"end_phrase": "Is there anything else I can help with?"}, True, True),
    ("Tea is nice. Is there anything else I can help with?\n**Enjoy**", "startend:end_checker",
     {"end_phrase": "Is there anything else I can help with?"}, False, True),  # last line dropped
    ("*one*\n* two", "detectable_format:number_highlighted_sections", {"num_highlights": 1}, True, True),
    ("", "punctuation:no_comma", {}, False, False),  # an empty response follows nothing
]


@pytest.mark.parametrize("response,iid,kwargs,strict,loose", CASES)
def test_registry_checks_agree_with_check_following_by_hand(response, iid, kwargs, strict, loose):
    assert follows("ifeval", iid, kwargs, response) == (strict, loose)
    # the rubric criterion's check is the strict one, through the same registry
    assert run_check("ifeval", {"id": iid, "kwargs": kwargs}, response) is strict


def ifeval_loose(checker, response: str) -> bool:
    """IFEval's loose test, written out as its evaluation_lib defines it: the response, or it without its first
    line, its last line or both, each also without markdown asterisks, follows the instruction."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return any(r.strip() and checker.check_following(r) for r in cut + [r.replace("*", "") for r in cut])


def test_follows_matches_the_checker_class_itself_strict_and_loose():
    INSTRUCTION_DICT = registry("ifeval")  # the registry itself, imported as focal.rubrics.ifeval does (nothing downloaded)

    for response, iid, kwargs, strict, loose in CASES:
        if not response:
            continue
        checker = INSTRUCTION_DICT[iid](iid)
        checker.build_description(**kwargs)
        assert (bool(checker.check_following(response)), ifeval_loose(checker, response)) == (strict, loose), (iid, response)


IFBENCH_CASES = [  # (response, instruction, kwargs, strict, loose), by hand
    ("helloworld", "format:no_whitespace", {}, True, True),
    ("hello world", "format:no_whitespace", {}, False, False),
    ("Sure:\nhelloworld", "format:no_whitespace", {}, False, True),  # loose drops the first line
    ("I have 3 cats and 4 dogs", "count:numbers", {"N": 2}, True, True),
    ("I have 3 cats", "count:numbers", {"N": 2}, False, False),
]


@pytest.mark.parametrize("response,iid,kwargs,strict,loose", IFBENCH_CASES)
def test_ifbench_registry_checks_by_hand(response, iid, kwargs, strict, loose):
    INSTRUCTION_DICT = registry("ifbench")  # imported as focal.rubrics.ifeval does: if-verifiable's nltk.download is a no-op

    assert follows("ifbench", iid, kwargs, response) == (strict, loose)
    assert run_check("ifbench", {"id": iid, "kwargs": kwargs}, response) is strict
    checker = INSTRUCTION_DICT[iid](iid)
    checker.build_description(**kwargs)
    assert (bool(checker.check_following(response)), ifeval_loose(checker, response)) == (strict, loose)


def test_four_metrics_and_groups_by_hand():
    s1 = Scored("a", (("punctuation:no_comma", True, True), ("change_case:english_lowercase", False, True)))
    s2 = Scored("b", (("keywords:existence", True, True),))
    s3 = Scored("c", (), ("length_constraints:number_sentences",))  # nothing checkable: left out, counted
    s4 = Scored("d", (("punctuation:no_comma", False, False),), ("length_constraints:number_sentences",))  # part
    m = summarise([s1, s2, s3, s4])
    assert m["prompt_strict"] == 0.5  # a: one instruction failed strict; b: all followed
    assert m["prompt_loose"] == 1.0
    assert m["instruction_strict"] == pytest.approx(2 / 3)  # over all instructions: 2 of 3
    assert m["instruction_loose"] == 1.0
    assert m["group_pass_rates"] == {"change_case": 0.0, "keywords": 1.0, "punctuation": 1.0}
    assert m["min_group"] == 0.0
    assert m["unavailable"] == ["length_constraints:number_sentences"] and m["unavailable_prompts"] == 2


def without_punkt():
    """Skip unless IFEval's sentence counter cannot run here (NLTK's data is missing, as on the project's
    machine): what these tests are about."""
    from focal.rubrics.ifeval import available

    if available("ifeval", "length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, "p"):
        pytest.skip("NLTK's sentence data is installed here")


NEEDS_PUNKT = {"key": "x", "prompt": "p", "instruction_id_list": ["length_constraints:number_sentences",
                                                                   "punctuation:no_comma"],
               "kwargs": [{"num_sentences": 2, "relation": "at least"}, {}]}


@pytest.mark.parametrize("response", ["One. Two.", ""])
def test_an_instruction_needing_missing_nltk_data_is_unavailable_for_every_response(response):
    # decided once per instruction, not by the path one response takes: an empty response is not "checked"
    without_punkt()
    s = score_response("ifeval", NEEDS_PUNKT, response)
    assert s.instructions == (("punctuation:no_comma", bool(response), bool(response)),)
    assert s.unavailable == ("length_constraints:number_sentences",)
    assert summarise([s])["unavailable_prompts"] == 1 and summarise([s])["responses"] == 0  # graded on part: left out


def test_an_unknown_instruction_id_is_an_error_not_a_failure():
    with pytest.raises(ValueError, match="unknown ifeval instruction 'punctuation:no_coma'"):
        follows("ifeval", "punctuation:no_coma", {}, "no commas")


def test_the_importer_leaves_out_rows_that_cannot_be_checked_here_and_says_so(tmp_path):
    without_punkt()
    path = tmp_path / "input_data.jsonl"
    only = {"key": 2, "prompt": "q", "instruction_id_list": ["length_constraints:number_sentences"],
            "kwargs": [{"num_sentences": 2, "relation": "at least"}]}
    fine = {"key": 3, "prompt": "r", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path.write_text("\n".join(json.dumps(r) for r in (NEEDS_PUNKT, only, fine)) + "\n")
    with pytest.warns(UserWarning, match="2 rows left out") as w:
        items = load_ifeval(path, eval_fraction=0.0)
    assert "length_constraints:number_sentences x2" in str(w[0].message)
    assert [it.id for it in items] == ["3"]  # a row graded on part of its instructions would look easier: left out


def test_a_check_that_cannot_run_here_decides_nothing_and_pays_nothing():
    from focal.judging.prompts import Request, check_judgment
    from focal.rubrics.types import Check, Criterion, Item

    without_punkt()
    c = Criterion("n", "two sentences", 1.0, check=Check("ifeval", {"id": "length_constraints:number_sentences",
                                                                   "kwargs": {"num_sentences": 2, "relation": "at least"}}))
    j = check_judgment(Request(Item("p", "q", (c,)), c, "One. Two.", "r"))
    assert math.isnan(j.score) and j.failure == "unavailable"


def test_loading_the_registries_downloads_nothing(tmp_path):
    # if-verifiable's IFBench module calls nltk.download at import for data it cannot find; in a fresh interpreter
    # with an empty NLTK data path and nltk.download replaced by a recorder, the registries must not call it
    import subprocess
    import sys

    code = ("import json, nltk, sys\n"
            f"nltk.data.path[:] = [{str(tmp_path)!r}]\n"
            "calls = []\n"
            "nltk.download = lambda *a, **k: calls.append(a) or False\n"
            "from focal.rubrics.ifeval import registry\n"
            "registry('ifbench'); registry('ifeval')\n"
            "print(json.dumps(calls))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parents[1], env={**os.environ, "NLTK_DATA": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_checker_that_fails_on_a_response_has_not_seen_it_followed_and_bad_arguments_are_errors():
    assert follows("ifbench", "format:quote_unquote", {}, 'He said ""hi"".\n\n1.') == (False, False)  # IndexError inside
    with pytest.raises(ValueError, match="does not take the arguments"):
        follows("ifeval", "keywords:existence", {"kw": ["a"]}, "a")


def test_availability_takes_long_responses_into_account():
    # IFBench's keywords_specific_position tokenizes only its n-th sentence: a short probe never gets there
    without_punkt()
    assert not available("ifbench", "words:keywords_specific_position", {"keyword": "giggle", "m": 33, "n": 22}, "p")


def test_generated_prompts_respect_the_conflict_table_and_are_deterministic():
    tasks = [{"id": "t1", "text": "Describe a cat.", "split": "train"}, {"id": "e1", "text": "Describe a dog.", "split": "eval"}]
    pool = ["detectable_format:json_format", "keywords:existence", "punctuation:no_comma", "detectable_format:title",
            "change_case:english_lowercase", "change_case:english_capital"]
    rows = generate_prompts(tasks, pool, per_task=6, min_instructions=1, max_instructions=3, seed=0)
    assert rows == generate_prompts(tasks, pool, per_task=6, min_instructions=1, max_instructions=3, seed=0)
    assert len(rows) == 12 and {r["split"] for r in rows} == {"train", "eval"}
    for r in rows:
        ids = r["instruction_id_list"]
        assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
        assert all(compatible("ifeval", [a], b) for i, a in enumerate(ids) for b in ids[i + 1:])
        assert not {"change_case:english_lowercase", "change_case:english_capital"} <= set(ids)
        assert r["prompt"].startswith("Describe a")
        load_ifeval_row_ok = score_response("ifeval", r, "x")  # every generated row is checkable
        assert len(load_ifeval_row_ok.instructions) == len(ids)


def test_the_committed_ifeval_set_is_what_its_tasks_file_generates():
    import json

    from benchmarks.ifeval_prompts import build

    folder = Path(__file__).resolve().parents[1] / "rubrics" / "ifeval"
    committed = [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines()]
    assert build(folder / "tasks.yaml") == committed
    train = {r["key"].split("-")[0] for r in committed if r["split"] == "train"}
    evals = {r["key"].split("-")[0] for r in committed if r["split"] == "eval"}
    assert train and evals and not train & evals  # different base tasks for train and eval


def test_loose_follows_ifevals_original_definition_on_a_trailing_newline():
    """IFEval's original loose variants are built from the response as written: "without the last line" of
    'all lowercase here\\nSHOUT\\n' drops the empty line after SHOUT, so no variant is all lowercase. if-verifiable
    strips the response first and drops SHOUT instead (loose True). Without the trailing newline both drop SHOUT."""
    from if_verifiable import common

    from focal.rubrics.ifeval import follows, registry

    lower = "change_case:english_lowercase"
    assert follows("ifeval", lower, {}, "all lowercase here\nSHOUT\n") == (False, False)
    assert follows("ifeval", lower, {}, "all lowercase here\nSHOUT") == (False, True)
    results, _ = common.evaluate_instructions("all lowercase here\nSHOUT\n", [lower], [{}], "", registry("ifeval"))
    assert results[0].loose_pass  # the library's definition, which the project does not follow
