"""Round two of the evidence (docs/evidence.md): power lines at 1-3 seeds, H2 and H1' with Holm's correction, the
pre-registration's order, and the recheck evaluation end to end on the tiny model."""

import json

import pytest

from benchmarks import compare_report
from benchmarks.compare_report import hard_pass_rate, holm, power_lines, provenance_lines, round_two

HARD = ("h1", "h2")


def rec(agg, seed, strict, hard=(0.2, 0.4), **more):
    return {"aggregator": agg, "seed": seed, "protocol": "k", "samples_per_prompt": 16, "train_seconds": 1.0, "steps": 5,
            "ifeval": {"prompt_strict": strict, "instruction_strict": strict, "prompt_loose": strict,
                       "instruction_loose": strict, "min_group": 0.0, "group_pass_rates": {"g": strict},
                       "instruction_pass_rates": {"h1": hard[0], "h2": hard[1], "easy": 0.9},
                       "prompt_scores": {"prompt_strict": {"p": strict}}}, **more}


@pytest.mark.parametrize("seeds, expected", [
    (1, "- focal - static: 1 paired seed: too few seeds to test (at least 3)"),
    (2, "- focal - static: 2 paired seeds: too few seeds to test (at least 3)"),
])
def test_power_lines_need_three_seeds(seeds, expected):
    runs = {"static": [rec("static", s, 0.3) for s in range(seeds)],
            "focal": [rec("focal", s, 0.3 + 0.01 * s) for s in range(seeds)]}
    assert expected in power_lines(runs, "prompt_strict").splitlines()


def test_power_line_at_three_seeds_counts_runs_left_never_negative():
    # differences +0.00, +0.03, +0.06: sample std 0.03 (hand), 10 seeds for +0.03 at 80% (the standard table)
    runs = {"static": [rec("static", s, 0.3) for s in range(3)],
            "focal": [rec("focal", s, 0.3 + 0.03 * s) for s in range(3)]}
    line = power_lines(runs, "prompt_strict").splitlines()[-1]
    assert "std of the difference 0.030 over 3 seeds -> 10 seeds needed for +0.03 (7 more per arm)" in line
    # many seeds with a small spread: the target is reached, no negative count
    runs = {"static": [rec("static", s, 0.3) for s in range(12)],
            "focal": [rec("focal", s, 0.3 + 0.001 * (s % 3)) for s in range(12)]}
    line = power_lines(runs, "prompt_strict").splitlines()[-1]
    assert "(reached)" in line and "-" not in line.split("needed")[1].split(";")[0]


def test_holm_by_hand():
    # p = 0.01 and 0.04: sorted, 2 x 0.01 = 0.02, then max(0.02, 1 x 0.04) = 0.04
    assert holm({"H2": 0.01, "H1'": 0.04}) == pytest.approx({"H2": 0.02, "H1'": 0.04})
    # p = 0.03 and 0.02: 2 x 0.02 = 0.04 for the smaller, max(0.04, 0.03) = 0.04 for the larger
    assert holm({"H2": 0.03, "H1'": 0.02}) == pytest.approx({"H2": 0.04, "H1'": 0.04})
    assert holm({"a": 0.8, "b": 0.9}) == pytest.approx({"a": 1.0, "b": 1.0})


def test_hard_pass_rate_is_the_unweighted_mean_of_the_hard_instructions():
    assert hard_pass_rate(rec("x", 0, 0.3, (0.2, 0.5)), HARD) == pytest.approx(0.35)
    r = rec("x", 0, 0.3)
    del r["ifeval"]["instruction_pass_rates"]["h2"]
    assert hard_pass_rate(r, HARD) != hard_pass_rate(r, HARD)  # NaN: a record without one of them


def fake_git(when="2026-12-07T19:05:02+00:00", ancestors=("good",)):
    def git(*args):
        if args[0] == "show":
            return 0, when
        return (0, "") if args[-1] in ancestors else (1, "")
    return git


def test_provenance_names_records_from_before_the_preregistration_or_other_code():
    ok = {"finished_at": "2026-12-07T20:00:00+00:00", "code": {"commit": "good", "dirty": False}}
    early = {"finished_at": "2026-12-07T18:00:00+00:00", "code": {"commit": "good", "dirty": False}}
    other = {"finished_at": "2026-12-07T20:00:00+00:00", "code": {"commit": "elsewhere", "dirty": False}}
    records = [rec("static", 11, 0.3, **ok), rec("focal", 11, 0.3, **early), rec("static", 12, 0.3, **other),
               rec("static", 0, 0.3)]  # seed 0 is not confirmatory: not checked
    lines = provenance_lines(records, [11, 12], "abc", fake_git())
    assert "3 training records of the confirmatory seeds: 2 finished after it, 2 from a clean commit" in lines[0]
    assert lines[1].endswith("focal seed 11") and lines[2].endswith("static seed 12")
    assert "cannot be checked" in provenance_lines(records, [11], "abc", lambda *a: (128, ""))[0]


def round_two_text(confirm_diffs, old_diffs=(0.0, 0.01, -0.01)):
    old, new = list(range(len(old_diffs))), list(range(10, 10 + len(confirm_diffs)))
    recheck = [rec("base", None, 0.25)]
    for s, d in zip(old + new, list(old_diffs) + list(confirm_diffs)):
        recheck += [rec("static", s, 0.3, (0.2, 0.4)), rec("focal", s, 0.3 + d / 2, (0.2 + d, 0.4 + d))]
    training = [rec(a, s, 0.3, finished_at="2026-12-07T20:00:00+00:00", code={"commit": "good", "dirty": False})
                for s in new for a in ("static", "focal")]
    return round_two(recheck, training, ("static", "focal"), old, new, HARD, "abc", git=fake_git())


def test_round_two_reads_h2_and_h1_with_holm_only_when_complete():
    text = round_two_text([0.05, 0.04, 0.06, 0.05, 0.04, 0.06])
    h2 = next(line for line in text.splitlines() if line.startswith("| H2 (seeds 10-15)"))
    h1 = next(line for line in text.splitlines() if line.startswith("| H1' (seeds 0-15)"))
    # six positive differences: the exact sign-flip p is 2/64 = 0.0312, and it agrees with the t-test
    assert "| 6 | 6/6 | +0.0500 |" in h2 and "| 0.0312 |" in h2 and h2.endswith("| holds |")
    assert "Holm" in text and "| H1' (seeds 0-15) | prompt_strict | 9 |" in h1
    assert "12 training records of the confirmatory seeds: 12 finished after it" in text
    # four seeds: the t-test passes, but four signs can give a sign-flip p of 2/16 at best; the page says so
    h2 = next(line for line in round_two_text([0.05, 0.04, 0.06, 0.05]).splitlines() if line.startswith("| H2 "))
    assert h2.endswith("| holds; the sign-flip test disagrees |")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_round_two_at_one_two_three_new_seeds_is_well_formed(n):
    text = round_two_text([0.05, -0.02, 0.01][:n])
    h2 = next(line for line in text.splitlines() if line.startswith("| H2 "))
    assert h2.count("|") == 12 and "nan" not in h2
    assert "too few seeds to test" in text if n < 3 else "seeds needed" in text
    assert " -1 " not in text and "more per arm" in text or n < 3


def test_round_two_is_incomplete_until_every_seed_has_both_arms():
    old, new = [0, 1, 2], [10, 11, 12]
    rows = [rec("static", s, 0.3) for s in old + new] + [rec("focal", s, 0.32) for s in old + new[:2]]
    text = round_two(rows, [], ("static", "focal"), old, new, HARD, "abc", git=fake_git())
    h2 = next(line for line in text.splitlines() if line.startswith("| H2 "))
    assert "| 2 of 3 |" in h2 and "incomplete: not read" in h2 and "neither is read" in text


def test_the_recheck_evaluation_records_base_and_every_kept_adapter(tmp_path, monkeypatch):
    """End to end on the tiny model: two arms trained, then --recheck at 3 samples per prompt; a rerun skips them."""
    from benchmarks import compare_training
    from test_compare_training import write_params
    from tiny import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny")
    params = write_params(tmp_path, tiny, recheck_samples=3, recheck_batch=2, confirm_arms=["static", "focal"],
                          recheck_results=str(tmp_path / "recheck.json"))
    compare_training.run(params)
    new = compare_training.recheck(params)
    assert [(r["aggregator"], r["seed"]) for r in new] == [("base", None), ("static", 0), ("focal", 0)]
    for r in new:
        assert r["kind"] == "recheck" and r["samples_per_prompt"] == 3 and r["ifeval"]["responses"] == 6
        assert r["sampling"]["batch"] == 2 and r["finished_at"] and "commit" in r["code"]
        import gzip

        lines = gzip.decompress((tmp_path / r["completions"]).read_bytes()).decode().splitlines()
        assert len(lines) == 6 and {"key", "k", "response"} <= set(json.loads(lines[0]))
    training = json.loads((tmp_path / "results.json").read_text())["records"]
    assert not any(r.get("kind") == "recheck" for r in training)  # training records untouched
    assert compare_training.recheck(params) == []
    text = compare_report.report(tmp_path / "results.json", settings=params.compare)
    assert "## recheck.json" in text and "Round two: the recheck evaluation (3 samples per held-out prompt)" in text


def test_the_evidence_pages_summary_is_what_the_command_prints():
    """docs/evidence.md's round-one summary is `--summary`'s output on the committed records, byte for byte."""
    from pathlib import Path

    from benchmarks.compare_report import latest_protocol, summary
    from benchmarks.compare_training import load_records
    from focal.config import load_params

    root = Path(__file__).parents[1]
    c = load_params(root / "params.yaml").compare
    page = (root / "docs" / "evidence.md").read_text(encoding="utf-8")
    block = page.split("<!-- summary: python -m benchmarks.compare_training --summary")[1].split("-->", 1)[1]
    block = block.split("<!-- /summary -->")[0].strip()
    assert block == summary(latest_protocol(load_records(root / c.results)), c.seeds, c.primary, c.target)
