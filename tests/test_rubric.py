"""Rubric schema: projection, validation errors that name file/item/field, importers, the shipped sets."""

import math
import shutil
from pathlib import Path

import pytest

from focal.importers import FORMATS
from focal.rubric import Criterion, RubricError, Scale, load_rubric_set

FIXTURES = Path(__file__).parent / "fixtures"
RUBRICS = Path(__file__).parents[1] / "rubrics"


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
    folder.mkdir()
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
    (GOOD.replace("max_words: 5", "max_wordz: 5"), r"prompts.yaml:4: item 'p1' criterion 'short' field 'check' unknown check 'max_wordz'; valid checks:"),
    (GOOD.replace("  prompt: Say hi.\n", "  prompt: [Say hi.\n"), r"prompts.yaml:3: invalid YAML"),
    (GOOD.replace("weight: 3", "weight: -3"), r"criterion 'rude' field 'weight' must be > 0, got -3.0; a negative weight is written as a positive weight with `category: pitfall`"),
    (GOOD.replace("      weight: 3\n", "      weight: 3\n      wieght: 1\n"), r"criterion 'rude' field 'wieght' is not a criterion field"),
    (GOOD.replace("id: rude", "id: short"), r"item 'p1' field 'criteria' has the id 'short' twice"),
    (GOOD + GOOD, r"item id 'p1' appears twice"),
])
def test_broken_rubric_files_name_file_item_and_field(tmp_path, broken, expected):
    with pytest.raises(RubricError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        load_rubric_set(write_set(tmp_path, broken))


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
    assert set(FORMATS) == {"focal", "healthbench", "rar", "chasing_the_tail", "writingbench"}


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
