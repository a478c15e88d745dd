"""The rubric bandit: world files load and fail with clear errors, the sampler's probabilities by hand,
paired determinism, and smoke runs of both benchmark commands.  pytest tests/test_simulate.py (a few seconds)"""

import numpy as np
import pytest

from benchmarks.aggregators import WORLDS_DIR
from focal.rewards.aggregators import aggregate
from focal.rewards.metrics import response_scores
from focal.rewards.simulate import (SimConfig, Variant, grpo_advantages, load_world, make_bandit, paired, train,
                            unsaturated_probabilities, world_names)

TINY = SimConfig(steps=40, eval_every=10, eval_samples=8)


def small_world(tmp_path, body: str):
    path = tmp_path / "w.yaml"
    path.write_text(body)
    return path


GOOD = """
n_prompts: 8
criteria_per_prompt: [1, 2]
criteria:
  - {name: a, category: essential, bias: 0.0, always: true}
  - {name: b, category: optional, bias: 1.0, against: a}
  - {name: p, category: pitfall, bias: -1.0}
"""


def test_every_world_in_the_folder_loads():
    assert {"default", "neglected_essential"} <= set(world_names(WORLDS_DIR))
    for name in world_names(WORLDS_DIR):
        world = load_world(name, WORLDS_DIR)
        assert world.criteria and make_bandit(world, 0).applies.any(1).all()


def test_a_world_file_loads_and_draws(tmp_path):
    world = load_world(small_world(tmp_path, GOOD), WORLDS_DIR)
    bandit = make_bandit(world, seed=1)
    assert bandit.names == ["a", "b", "p"] and bandit.weights.tolist() == [4.0, 1.0, 3.0]
    assert bandit.applies[:, 0].all()  # `always`
    assert bandit.applies[:, 2].all()  # the only pitfall: every prompt has a pitfall
    assert bandit.directions[0] @ bandit.directions[1] < -0.5  # `against`: mostly opposed
    assert bandit.keys("category") == ["essential", "optional", "pitfall"]


@pytest.mark.parametrize("edit, message", [
    (("radius: 3.0\n", "radius: 0\n"), "world.radius must be > 0, got 0"),
    (("n_prompts: 8\n", "n_prompts: 8\nlr: 1\n"), "`lr` is not a world field"),
    (("bias: -1.0}", "bias: hard}"), "criteria[2] (p): `criterion.bias` must be float"),
    (("against: a", "against: z"), "criteria[1] (b): against 'z' must name an earlier criterion; earlier: a"),
    (("category: optional", "category: bonus"), "criteria[1] (b): category 'bonus' has no weight"),
    (("{name: p, category: pitfall, ", "{name: p, "), "criteria[2] (p): `category` is required"),
    (("criteria_per_prompt: [1, 2]", "criteria_per_prompt: [1, 5]"), "criteria_per_prompt max (5) exceeds"),
    (("criteria_per_prompt: [1, 2]", "criteria_per_prompt: [2, 1]"), "world.criteria_per_prompt must be [min, max]"),
    (("name: b,", "name: a,"), "criteria[1] (a): name 'a' is used twice"),
])
def test_a_bad_world_file_names_the_file_and_the_field(tmp_path, edit, message):
    body = GOOD.replace("n_prompts: 8\n", "n_prompts: 8\nradius: 3.0\n")
    assert edit[0] in body
    path = small_world(tmp_path, body.replace(*edit))
    with pytest.raises(ValueError) as e:
        load_world(path, WORLDS_DIR)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_an_unknown_world_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown world 'nope'; valid worlds: default, .*neglected_essential"):
        load_world("nope", WORLDS_DIR)
    with pytest.raises(ValueError, match="missing.yaml: world file not found"):
        load_world("missing.yaml", WORLDS_DIR)


def test_variant_errors_say_the_valid_choices():
    with pytest.raises(ValueError, match="valid aggregators: static"):
        Variant("focl")
    with pytest.raises(ValueError, match="no parameter 'gama'"):
        Variant("focal", {"gama": 1.0})
    with pytest.raises(ValueError, match="sampling must be one of uniform, unsaturated"):
        Variant("focal", sampling="hard")
    with pytest.raises(ValueError, match="simconfig.steps must be >= 1, got 0"):
        SimConfig(steps=0)


def test_unsaturated_sampling_probabilities_by_hand():
    applies = [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    # room 1 - m: a 0.5, b 0 (saturated), c 1 (never seen); u = [4*0.5 + 0, 0 + 1, 1] = [2, 1, 1]
    p = unsaturated_probabilities(applies, [4, 2, 1], ["a", "b", "c"], {"a": 0.5, "b": 1.0})
    assert p == pytest.approx([0.5, 0.25, 0.25])
    # a prompt with no room left keeps FLOOR (0.01) x the mean u: u = [0, 1] -> [0.005, 1]
    p = unsaturated_probabilities([[1, 0], [0, 1]], [1, 1], ["a", "b"], {"a": 1.0, "b": 0.0})
    assert p == pytest.approx([0.005 / 1.005, 1 / 1.005])
    assert unsaturated_probabilities([[1], [1]], [1], ["a"], {"a": 1.0}) == pytest.approx([0.5, 0.5])


def test_paired_by_hand():
    out = paired([0.5, 0.7, 0.4], [0.4, 0.7, 0.5])  # differences 0.1, 0, -0.1
    assert out["mean"] == pytest.approx(1.6 / 3) and out["diff"] == pytest.approx(0.0)
    assert out["se"] == pytest.approx(0.1 / np.sqrt(3)) and out["wins"] == 1 and out["n"] == 3


def test_simulator_is_paired_deterministic_and_learns():
    world = load_world("default", WORLDS_DIR)
    bandit = make_bandit(world, seed=4)
    a = train(bandit, Variant("static"), TINY, seed=4)
    np.testing.assert_equal(a, train(bandit, Variant("static"), TINY, seed=4))  # NaN: a key absent from a batch
    assert a[0] == train(bandit, Variant("focal"), TINY, seed=4)[0]  # same start for every variant
    assert a[-1]["rubric/score"] > a[0]["rubric/score"]
    assert 0 <= a[-1]["rubric/min_key"] <= a[-1]["rubric/min_category"] <= 1  # a category pools its keys
    # focal with gamma = 0 is static exactly, so the paired runs are identical
    g0 = train(bandit, Variant("focal", {"gamma": 0.0}), TINY, seed=4)
    assert [h["rubric/score"] for h in g0] == [h["rubric/score"] for h in a]
    u = train(bandit, Variant("focal", sampling="unsaturated"), TINY, seed=4)
    np.testing.assert_equal(u, train(bandit, Variant("focal", sampling="unsaturated"), TINY, seed=4))
    assert u[0] == a[0] and u != a  # same start, other prompts


def test_static_climbs_the_rubric_score_itself():
    """Why no reweighting can beat static's plateau in mean score here: within a prompt static's reward is
    (W_positive * score + W_pitfall) / W, an affine function of HealthBench's score, so GRPO's advantages agree."""
    # w = [4, pitfall 3]: (met, pitfall absent) -> static 7/7 = 1, score 4/4 = 1;
    # (unmet, pitfall present) -> static 0/7 = 0, score (0 - 3)/4 = -0.75; and (4 * -0.75 + 3) / 7 = 0
    r = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate("static", r, [4, 3], [0, 0], ["essential", "pitfall"], ["a", "p"]).rewards.tolist() == [1, 0]
    assert response_scores(r, [4, 3], [False, True]).tolist() == [1.0, -0.75]
    r = (np.random.default_rng(0).random((8, 5)) < 0.5).astype(float)
    w, cats = [4, 2, 1, 3, 3], ["essential", "important", "optional", "pitfall", "pitfall"]
    groups = np.zeros(8, int)
    static = aggregate("static", r, w, groups, cats, cats).rewards
    score = response_scores(r, w, [c == "pitfall" for c in cats])
    assert grpo_advantages(static, groups) == pytest.approx(grpo_advantages(score, groups), abs=1e-3)  # 1e-4 guard


def test_benchmark_commands_smoke(tmp_path, capsys):
    from benchmarks import ablation, aggregators

    aggregators.main(["--seeds", "2", "--steps", "20", "--world", "neglected_essential"])
    assert "| static |" in capsys.readouterr().out
    ablation.main(["--seeds", "2", "--steps", "20", "--long-steps", "30", "--variants", "static", "focal",
                   "focal + unsaturated sampling", "--out", str(tmp_path / "ablation")])
    text = (tmp_path / "ablation.md").read_text()
    assert "focal + unsaturated sampling" in text and "min key" in text
    assert (tmp_path / "ablation.json").exists()
