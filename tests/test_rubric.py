"""Rubric schema: projection, validation errors that name file/item/field, importers, the shipped sets."""

import ast
import math
import re
import shutil
from pathlib import Path

import pytest

from focal.rubrics.sets import (FORMATS, REQUIRED_MARKERS, TEMPLATE_MARKERS, Check, Criterion, Item, RubricError, Scale,
                          check_template, criterion_from_dict, criterion_to_dict, load_rubric_set)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parents[1]
RUBRICS = ROOT / "rubrics"


def test_satisfaction_projection():
    assert Criterion("a", "t").satisfaction(True) == 1.0
    assert Criterion("a", "t").satisfaction(False) == 0.0
    assert Criterion("a", "t", pitfall=True).satisfaction(True) == 0.0  # present = bad
    lik = Criterion("a", "t", scale=Scale("likert", 1, 5))
    assert lik.satisfaction(4) == 0.75
    assert Criterion("a", "t", pitfall=True, scale=Scale("likert", 1, 5)).satisfaction(4) == 0.25
    assert math.isnan(Criterion("a", "t").satisfaction(None))  # a failed judgment is NaN, never 0


def write_set(tmp_path, prompts: str, meta: str = "format: focal\n") -> Path:
    folder = tmp_path / "myset"
    folder.mkdir(parents=True)
    (folder / "set.yaml").write_text(meta)
    (folder / "prompts.yaml").write_text(prompts)
    return folder


GOOD = """\
- id: p1
  prompt: Say hi.
  criteria:
    - id: short
      text: At most 5 words.
      weight: 2
      check: {max_words: 5}
    - id: rude
      text: The response is rude.
      weight: 3
      category: pitfall
"""


def test_load_focal_format(tmp_path):
    rs = load_rubric_set(write_set(tmp_path, GOOD))
    (item,) = rs.items
    short, rude = item.criteria
    assert short.check.name == "max_words" and short.check.params == {"n": 5}
    assert rude.pitfall and rude.category == "pitfall" and rude.key == "rude"
    assert item.chat() == [{"role": "user", "content": "Say hi."}]


@pytest.mark.parametrize("broken, expected", [
    (GOOD.replace("      weight: 2\n", ""), r"prompts.yaml:4: item 'p1' criterion 'short' field 'weight' is missing; add `weight: <number>`"),
    (GOOD.replace("max_words: 5", "max_wordz: 5"), r"prompts.yaml:4: item 'p1' criterion 'short' field 'check' unknown check 'max_wordz': did you mean 'max_words'\?; valid checks:"),
    (GOOD.replace("  prompt: Say hi.\n", "  prompt: [Say hi.\n"), r"prompts.yaml:3: invalid YAML"),
    (GOOD.replace("weight: 3", "weight: -3"), r"criterion 'rude' field 'weight' must be > 0, got -3.0; a negative weight is written as a positive weight with `category: pitfall`"),
    (GOOD.replace("      weight: 3\n", "      weight: 3\n      wieght: 1\n"), r"criterion 'rude' field 'wieght' is not a criterion field"),
    (GOOD.replace("id: rude", "id: short"), r"item 'p1' field 'criteria' has the id 'short' twice"),
    (GOOD + GOOD, r"item id 'p1' appears twice"),
])
def test_broken_rubric_files_name_file_item_and_field(tmp_path, broken, expected):
    with pytest.raises(RubricError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        load_rubric_set(write_set(tmp_path, broken))


@pytest.mark.parametrize("check, expected", [
    ('{max_words: "ten"}', "prompts.yaml:4: item 'p1' criterion 'short' field 'check' check 'max_words' parameter 'n' "
                           "must be an integer >= 0, got 'ten'; write `check: {max_words: <integer >= 0>}`"),
    ("{max_words: -5}", "criterion 'short' field 'check' check 'max_words' parameter 'n' must be an integer >= 0, got -5"),
    ("{contains_any: ai}", "prompts.yaml:4: item 'p1' criterion 'short' field 'check' check 'contains_any' parameter "
                           "'words' must be a non-empty list of non-empty texts, got 'ai'; "
                           "write `check: {contains_any: [<non-empty text>, ...]}`"),
    ("{max_count: {text: '!', n: true}}", "field 'check' check 'max_count' parameter 'n' must be an integer >= 0, got True"),
    ("{regex: '[a-'}", "field 'check' check 'regex' parameter 'pattern' does not compile"),
])
def test_check_params_are_type_checked_when_the_set_loads(tmp_path, check, expected):
    with pytest.raises(RubricError, match=re.escape(expected)):
        load_rubric_set(write_set(tmp_path, GOOD.replace("{max_words: 5}", check)))


def test_a_check_is_validated_wherever_it_is_built():
    with pytest.raises(ValueError, match=re.escape("check 'contains_any' parameter 'words' must be a non-empty list")):
        Check("contains_any", {"words": "ai"})
    row = criterion_to_dict(Criterion("c", "t", check=Check("max_words", {"n": 5})))
    row["check"]["params"] = {"n": "5"}  # a hand-edited prompt table
    with pytest.raises(ValueError, match=re.escape("check 'max_words' parameter 'n' must be an integer >= 0, got '5'")):
        criterion_from_dict(row)


TEMPLATE = ("Grade it.\n<<conversation>>\n<<fence_open>>\n<<response>>\n<<fence_close>>\n"
            "Rubric item: <<rubric_item>>\n<<answer_format>>\n")


def set_with_template(tmp_path, template: str) -> Path:
    folder = write_set(tmp_path, GOOD, "format: focal\njudge_template: judge.md\n")
    (folder / "judge.md").write_text(template)
    return folder


def test_a_sets_judge_template_is_loaded(tmp_path):
    assert load_rubric_set(set_with_template(tmp_path, TEMPLATE)).judge_template == TEMPLATE


@pytest.mark.parametrize("template, expected", [
    (TEMPLATE.replace("<<rubric_item>>", "<<rubric>>"),
     r"judge.md:6: judge template marker <<rubric>> is unknown; use only <<conversation>>, <<response>>"),
    (TEMPLATE.replace("<<fence_open>>", "BEGIN").replace("<<fence_close>>", "END"),
     r"judge.md: judge template lacks <<fence_open>>, <<fence_close>>; add them"),
    (TEMPLATE.replace("<<response>>\n", ""), r"judge.md: judge template lacks <<response>>"),
    (TEMPLATE.replace("<<response>>\n", "") + "<<response>>\n",
     r"judge.md: judge template must put <<response>> between <<fence_open>> and <<fence_close>>"),
    ("Rubric item: <<rubric_item>>\n" + TEMPLATE.replace("Rubric item: <<rubric_item>>\n", ""),
     r"judge.md: judge template puts <<rubric_item>> before the response; move it after <<fence_close>>"),
])
def test_judge_template_markers_are_checked_at_load(tmp_path, template, expected):
    with pytest.raises(RubricError, match=re.escape(expected)) as info:
        load_rubric_set(set_with_template(tmp_path, template))
    assert str(info.value).startswith(str(tmp_path / "myset" / "judge.md"))


def test_template_markers_agree_with_the_judge():
    from focal.judging.prompts import DEFAULT_TEMPLATE, render_prompt

    assert check_template(DEFAULT_TEMPLATE, "focal/judging/template.md") == DEFAULT_TEMPLATE
    every = " ".join(f"<<{n}>>" for n in TEMPLATE_MARKERS)
    c = Criterion("c", "Is short.")
    assert "<<" not in render_prompt(every, Item("p", "hi", (c,)), c, "ok")  # the judge fills every marker
    assert set(REQUIRED_MARKERS) <= set(TEMPLATE_MARKERS)


@pytest.mark.parametrize("name, meta", [
    ("prompts.yaml", "format: focal\n"),
    ("set.yaml", "format: focal\n"),
    ("judge.md", "format: focal\njudge_template: judge.md\n"),
])
def test_a_file_that_is_not_utf8_is_named(tmp_path, name, meta):
    folder = write_set(tmp_path, GOOD, meta)
    (folder / "judge.md").write_text(TEMPLATE)
    target = folder / name
    target.write_bytes(target.read_bytes().replace(b"\n", "\n# caf\u00e9\n".encode("latin-1"), 1))
    with pytest.raises(RubricError, match=re.escape(f"{target}:2: is not UTF-8 text (byte 0xe9 at offset")
                       + r".*; save the file as UTF-8"):
        load_rubric_set(folder)


def test_a_jsonl_file_that_is_not_utf8_is_named(tmp_path):
    folder = tmp_path / "hb"
    folder.mkdir()
    (folder / "set.yaml").write_text("format: healthbench\nfile: x.jsonl\n")
    (folder / "x.jsonl").write_bytes('{"prompt_id": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(RubricError, match=re.escape(f"{folder / 'x.jsonl'}:1: is not UTF-8 text")):
        load_rubric_set(folder)


def test_a_missing_file_is_named_with_the_field_that_names_it(tmp_path):
    folder = write_set(tmp_path, GOOD, "format: focal\nfile: items.yaml\n")
    with pytest.raises(RubricError, match=re.escape(f"set.yaml: field 'file' names {folder / 'items.yaml'}, "
                                                    "which does not exist; create it or fix the name")):
        load_rubric_set(folder)
    (folder / "prompts.yaml").unlink()
    (folder / "set.yaml").write_text("format: focal\n")
    with pytest.raises(RubricError, match=re.escape(f"field 'file' names {folder / 'prompts.yaml'}, which does not exist")):
        load_rubric_set(folder)
    (folder / "set.yaml").unlink()
    with pytest.raises(RubricError, match=re.escape(f"{folder / 'set.yaml'}: file not found")):
        load_rubric_set(folder)


def test_bad_set_yaml_names_the_field(tmp_path):
    with pytest.raises(RubricError, match=r"set.yaml: field 'format' is 'csv', not a known format; use one of"):
        load_rubric_set(write_set(tmp_path, GOOD, "format: csv\n"))
    with pytest.raises(RubricError, match="no such rubric set folder"):
        load_rubric_set(tmp_path / "nope")


def load_fixture(fmt, tmp_path, name):
    folder = tmp_path / fmt
    folder.mkdir()
    shutil.copy(FIXTURES / name, folder / name)
    (folder / "set.yaml").write_text(f"format: {fmt}\nfile: {name}\nsaturation_key: category\neval_fraction: 0\n")
    return load_rubric_set(folder)


def test_healthbench_importer(tmp_path):
    rs = load_fixture("healthbench", tmp_path, "healthbench.jsonl")
    burn, neck = rs.items
    assert burn.id == "hb-1" and burn.prompt.startswith("I burned")
    assert [(c.weight, c.pitfall, c.category) for c in burn.criteria] == [
        (7, False, "accuracy"), (6, True, "accuracy"), (2, False, "communication_quality")]
    assert burn.criteria[0].key == "accuracy"  # saturation_key: category
    assert len(neck.chat()) == 3 and neck.prompt.startswith("Two days")  # multi-turn kept


def test_rar_importer(tmp_path):
    (item,) = load_fixture("rar", tmp_path, "rar.jsonl").items
    assert item.prompt == "Why is the sky blue?"
    assert [(c.category, c.weight, c.pitfall) for c in item.criteria] == [
        ("essential", 5, False), ("important", 3, False), ("optional", 1, False), ("pitfall", 2, True)]
    assert item.criteria[0].text == "Identifies Rayleigh scattering as the cause."


def test_chasing_the_tail_importer(tmp_path):
    (item,) = load_fixture("chasing_the_tail", tmp_path, "chasing_the_tail.jsonl").items
    assert [(c.text, c.weight, c.category) for c in item.criteria] == [
        ("Has three lines.", 3, "essential"), ("Follows a 5-7-5 syllable pattern.", 2, "important"),
        ("Uses a seasonal word.", 1, "optional")]


def test_writingbench_importer(tmp_path):
    (item,) = load_fixture("writingbench", tmp_path, "writingbench.jsonl").items
    assert item.id == "wb7" and item.prompt == "Outline a short paper on solar panels."
    first = item.criteria[0]
    assert first.scale == Scale("likert", 1, 10) and first.text.startswith("Structure: Is the outline")
    assert "9-10: Excellent structure." in first.text
    assert first.satisfaction(10) == 1.0 and first.satisfaction(1) == 0.0


def test_importer_errors_name_line_and_field(tmp_path):
    folder = tmp_path / "hb"
    folder.mkdir()
    (folder / "set.yaml").write_text("format: healthbench\nfile: x.jsonl\n")
    (folder / "x.jsonl").write_text('{"prompt_id": "a", "prompt": [{"role": "user", "content": "q"}], "rubrics": [{"criterion": "c", "points": 0}]}\n')
    with pytest.raises(RubricError, match=r"x.jsonl:1: item 'a' criterion 'c1' field 'points' must be a non-zero number"):
        load_rubric_set(folder)
    (folder / "x.jsonl").write_text("{not json\n")
    with pytest.raises(RubricError, match=r"x.jsonl:1: invalid JSON"):
        load_rubric_set(folder)


def test_every_format_is_registered():
    assert set(FORMATS) == {"focal", "healthbench", "rar", "chasing_the_tail", "writingbench", "ifeval", "ifbench"}


@pytest.mark.parametrize("name", ["default", "health"])
def test_shipped_sets_load(name):
    rs = load_rubric_set(RUBRICS / name)
    assert rs.split("train") and rs.split("eval")
    for item in rs.items:
        assert any(c.pitfall for c in item.criteria), item.id


def test_default_set_matches_its_brief():
    rs = load_rubric_set(RUBRICS / "default")
    assert len(rs.items) >= 60
    assert all(4 <= len(it.criteria) <= 8 for it in rs.items)
    crits = [c for it in rs.items for c in it.criteria]
    checked = sum(c.check is not None for c in crits)
    assert 0.25 < checked / len(crits) < 0.75  # both checks and judged criteria
    assert len({c.category for c in crits}) >= 4


THREE_MISTAKES = {  # three unrelated mistakes in three places: one run reports each with its line and fix
    "set.yaml": "format: focal\nsaturation_key: ids\n",
    "prompts.yaml": GOOD.replace("      weight: 2\n", "      wieght: 2\n")
    + "- id: p2\n  criteria:\n    - {id: polite, text: Verify the address, then reply, weight: 1}\n",
}


def test_every_mistake_of_a_set_is_reported_in_one_pass(tmp_path):
    folder = write_set(tmp_path, THREE_MISTAKES["prompts.yaml"], THREE_MISTAKES["set.yaml"])
    with pytest.raises(RubricError) as info:
        load_rubric_set(folder)
    errors = info.value.errors
    assert [e.split(": ", 1)[0] for e in errors] == [
        f"{folder / 'set.yaml'}", f"{folder / 'prompts.yaml'}:4", f"{folder / 'prompts.yaml'}:12",
        f"{folder / 'prompts.yaml'}:14"], errors
    assert "field 'saturation_key' must be `id` or `category`, got 'ids'" in errors[0]
    assert "item 'p1' criterion 'short' field 'wieght' is not a criterion field: did you mean 'weight'?" in errors[1]
    assert "item 'p2' field 'prompt' is missing or empty" in errors[2]
    assert "item 'p2' criterion 'polite' field 'then reply'" in errors[3]
    assert str(info.value) == "\n".join(errors)


def test_a_misspelt_field_gets_did_you_mean_and_nothing_else(tmp_path):
    cases = [(GOOD.replace("      weight: 2\n", "      wieght: 2\n"), "criterion 'short' field 'wieght' is not a "
              "criterion field: did you mean 'weight'?; write `weight:`"),
             (GOOD.replace("  prompt:", "  promt:"), "item 'p1' field 'promt' is not an item field: did you mean "
              "'prompt'?; write `prompt:`"),
             (GOOD.replace("  criteria:", "  critera:"), "item 'p1' field 'critera' is not an item field: did you "
              "mean 'criteria'?")]
    for i, (text, expected) in enumerate(cases):
        with pytest.raises(RubricError) as info:
            load_rubric_set(write_set(tmp_path / str(i), text))
        (error,) = info.value.errors  # the misspelt field only: not also "'weight' is missing"
        assert expected in error, error
    with pytest.raises(RubricError, match=re.escape("field 'fromat' is not a set.yaml field: did you mean 'format'?")):
        load_rubric_set(write_set(tmp_path / "meta", GOOD, "fromat: focal\n"))


def test_an_unquoted_comma_in_braces_says_to_quote_the_text(tmp_path):
    text = GOOD + "- id: p2\n  prompt: Hi.\n  criteria:\n    - {id: polite, text: Verify the email address, then reply, weight: 2}\n"
    with pytest.raises(RubricError) as info:
        load_rubric_set(write_set(tmp_path, text))
    (error,) = info.value.errors
    assert error.endswith("item 'p2' criterion 'polite' field 'then reply' is not a criterion field: it looks like "
                          "the rest of field 'text' after an unquoted comma (in `{...}`, a comma ends a field); "
                          'quote the text: `text: "Verify the email address, then reply"`'), error


def test_a_rubric_set_prints_as_a_short_summary():
    rs = load_rubric_set(RUBRICS / "default")
    assert repr(rs) == ("RubricSet('default': 64 items (48 train, 16 eval), 386 criteria (183 checked, 203 judged), "
                        "saturation_key='id')")
    assert str(rs) == repr(rs)


def test_a_bare_name_is_a_folder_here_else_a_shipped_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no rubrics/ folder here
    assert load_rubric_set("default").name == "default" and len(load_rubric_set("health").items) == 28
    write_set(tmp_path, GOOD)
    (tmp_path / "default").mkdir()
    shutil.copy(tmp_path / "myset" / "set.yaml", tmp_path / "default")
    shutil.copy(tmp_path / "myset" / "prompts.yaml", tmp_path / "default")
    assert [it.id for it in load_rubric_set("default").items] == ["p1"]  # a folder of that name here wins
    with pytest.raises(RubricError, match=re.escape("rubrics/default: no such rubric set folder; give a folder with a "
                                                    "set.yaml (`focal new NAME` writes one), or a shipped set by its "
                                                    "bare name: default, health, ifeval")):
        load_rubric_set("rubrics/default")  # a path is a path: only a bare name finds a shipped set


def test_the_starter_set_is_valid_and_never_overwrites(tmp_path):
    from focal.rubrics.sets import new_rubric_set

    folder = new_rubric_set(tmp_path / "rubrics" / "support")
    rs = load_rubric_set(folder)
    assert rs.name == "support" and [(it.id, it.split) for it in rs.items] == [("p001", "train"), ("p002", "eval")]
    for it in rs.items:  # one checked and one judged criterion per prompt
        assert sorted(c.check is None for c in it.criteria) == [False, True], it.id
    text = (folder / "prompts.yaml").read_text()
    assert "support" in text and "{name}" not in text and text.count("#") >= 10  # commented, named
    (folder / "prompts.yaml").write_text("# mine\n")
    with pytest.raises(RubricError, match="already exists"):
        new_rubric_set(folder)
    assert (folder / "prompts.yaml").read_text() == "# mine\n"
    with pytest.raises(RubricError, match="a rubric set's name is letters, digits"):
        new_rubric_set(tmp_path / "rubrics" / "two words")


def test_a_stage_prints_each_mistake_of_a_set_on_its_own_error_line(tmp_path, capsys):
    from focal.core.stage import run_stage

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")

    def run(p):
        load_rubric_set(write_set(tmp_path, THREE_MISTAKES["prompts.yaml"], THREE_MISTAKES["set.yaml"]))

    with pytest.raises(SystemExit) as exit:
        run_stage(run, "a stage", (), argv=["--params", str(params)])
    lines = capsys.readouterr().err.splitlines()
    assert exit.value.code == 1 and len(lines) == 4 and all(line.startswith("error: ") for line in lines), lines
