"""Aggregators: hand-computed numbers for each, and docs/method.md's required properties."""

import numpy as np
import pytest

from focal.rewards.aggregators import AGGREGATORS, FocalState, aggregate, floor_weights, update_state

nan = np.nan


def run(name, r, w, groups=None, categories=None, keys=None, state=None, **params):
    r = np.asarray(r, dtype=float)
    C = r.shape[1]
    return aggregate(name, r, w, groups if groups is not None else [0] * len(r),
                     categories or ["important"] * C, keys or [f"k{c}" for c in range(C)], state, **params)


def test_static_hand_computed():
    assert run("static", [[1, 0]], [3, 1]).rewards.tolist() == [0.75]
    # NaN (not judged) drops out of numerator and denominator
    assert run("static", [[1, nan]], [3, 1]).rewards.tolist() == [1.0]
    assert run("static", [[0.5, 1]], [1, 1]).rewards.tolist() == [0.75]


def test_row_with_nothing_judged_gives_none_for_every_aggregator():
    for name in AGGREGATORS:
        out = run(name, [[1, 0], [nan, nan], [0, 1]], [1, 1], groups=[0, 0, 0])
        assert out.as_list()[1] is None, name
        assert all(x is not None for i, x in enumerate(out.as_list()) if i != 1), name


def test_gdpo_hand_computed():
    # one group of 2; column 0: mean .5 std .5 -> A = +-0.5/0.5001; column 1: constant -> A = 0
    out = run("gdpo", [[1, 0], [0, 0]], [1, 1])
    a = 0.5 / (0.5 + 1e-4)
    # batch normalisation of [a, -a]: mean 0, std a
    expected = a / (a + 1e-4)
    assert out.rewards == pytest.approx([expected, -expected], abs=1e-12)


def test_gdpo_weights_and_groups():
    # two groups; in each, criterion 0 separates rollouts, weight 2
    r = [[1, 1], [0, 1], [1, 0], [1, 1]]
    out = run("gdpo", r, [2, 1], groups=[0, 0, 1, 1])
    a = 0.5 / (0.5 + 1e-4)
    raw = np.array([2 * a, -2 * a, -a, a])
    assert out.rewards == pytest.approx((raw - raw.mean()) / (raw.std() + 1e-4))


def test_pow3r_hand_computed():
    # categories k, k, j; w = 1, 2, 1; contrast a = std = .5, 0, .5
    # k: W=3, w'= [3*.5/.5, 0] = [3, 0]; j keeps W=1 -> w' = [3, 0, 1]
    r = [[1, 1, 1], [0, 1, 0]]
    out = run("pow3r", r, [1, 2, 1], categories=["k", "k", "j"])
    assert out.rewards.tolist() == [pytest.approx(1.0), pytest.approx(0.0)]
    assert out.weights[0].tolist() == pytest.approx([3, 0, 1])
    # static would give the non-contrastive criterion's points to rollout 2
    assert run("static", r, [1, 2, 1]).rewards[1] == pytest.approx(0.5)


def test_pow3r_category_without_contrast_keeps_static_weights():
    r = [[1, 0], [1, 0]]
    assert run("pow3r", r, [3, 1]).rewards.tolist() == run("static", r, [3, 1]).rewards.tolist()


def test_focal_hand_computed_first_step():
    # no prior: s = group mean = [1, .5]; alpha = [max(.1, 0), .25] = [.1, .25]
    # w' = alpha * w * 2 / .35 = [4/7, 10/7]; R = sum w' r / 2
    out = run("focal", [[1, 0], [1, 1]], [1, 1], keys=["a", "b"])
    assert out.saturation[0].tolist() == [1.0, 0.5]
    assert out.weights[0].tolist() == pytest.approx([4 / 7, 10 / 7])
    assert out.rewards.tolist() == pytest.approx([2 / 7, 1.0])
    assert out.state.m == {"a": 1.0, "b": 0.5}  # first sight: m = the observed mean


def test_focal_uses_prior_then_updates_it():
    state = FocalState({"a": 1.0, "b": 0.5})
    out = run("focal", [[0, 0], [0, 0]], [1, 1], keys=["a", "b"], state=state, kappa=4, beta=0.9)
    # s = (0 + 4 m) / (2 + 4)
    assert out.saturation[0].tolist() == pytest.approx([2 / 3, 1 / 3])
    # m <- .9 m + .1 * 0
    assert out.state.m == pytest.approx({"a": 0.9, "b": 0.45})
    assert state.m == {"a": 1.0, "b": 0.5}  # the input state is not mutated


def test_focal_state_mean_over_groups_of_group_means():
    r = np.array([[1, nan], [1, nan], [0, 1], [1, 1]])
    m = update_state(FocalState({"a": 0.0}), r, [0, 0, 1, 1], ["a", "b"], beta=0.5).m
    # a: group means 1 and .5 -> step .75; .5 * 0 + .5 * .75. b: only group 1 -> 1 (first sight)
    assert m == pytest.approx({"a": 0.375, "b": 1.0})


def test_focal_state_pools_a_keys_columns_within_a_group():
    # key "a" has two columns (0 and 2), pooled within each group
    r = np.array([[1, 0, 1], [1, nan, 0], [0, 0, 1]])
    m = update_state(FocalState(), r, ["p", "p", "q"], ["a", "b", "a"], beta=0.9).m
    # a: p pools r[0,0], r[0,2], r[1,0], r[1,2] = 1, 1, 1, 0 -> .75; q: 0, 1 -> .5; step (.75 + .5) / 2
    # b: p: 0 (r[1,1] not judged) -> 0; q: 0 -> 0
    assert m == pytest.approx({"a": 0.625, "b": 0.0})


def random_batch(seed, N=24, C=6, nan_share=0.2, binary=True):
    rng = np.random.default_rng(seed)
    r = (rng.random((N, C)) < rng.random(C)).astype(float) if binary else rng.random((N, C))
    r[rng.random((N, C)) < nan_share] = nan
    w = rng.integers(1, 6, size=C).astype(float)
    groups = np.repeat(np.arange(N // 4), 4)
    cats = [["essential", "important", "optional", "pitfall"][c % 4] for c in range(C)]
    return r, w, groups, cats


@pytest.mark.parametrize("seed", range(5))
def test_focal_gamma_zero_is_static(seed):
    r, w, g, cats = random_batch(seed)
    state = FocalState({"k0": 0.9, "k1": 0.2})
    f = run("focal", r, w, g, cats, state=state, gamma=0.0).rewards
    s = run("static", r, w, g, cats).rewards
    assert np.array_equal(np.isnan(f), np.isnan(s))
    assert f[~np.isnan(f)] == pytest.approx(s[~np.isnan(s)], abs=1e-12)


def test_focal_equal_saturation_is_static():
    # every criterion has group mean .5 in every group
    r = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    f = run("focal", r, [3, 2, 1], groups=[0, 0, 1, 1]).rewards
    s = run("static", r, [3, 2, 1], groups=[0, 0, 1, 1]).rewards
    assert f == pytest.approx(s)


@pytest.mark.parametrize("seed", range(5))
def test_focal_saturated_criterion_keeps_alpha_min_share(seed):
    r, w, g, cats = random_batch(seed, nan_share=0.0)
    r[:, 0] = 1.0  # fully saturated
    out = run("focal", r, w, g, cats, alpha_min=0.1)
    share = out.weights[:, 0] / w.sum()
    assert (share >= 0.1 * w[0] / w.sum() - 1e-12).all()


@pytest.mark.parametrize("seed", range(10))
def test_every_aggregator_finite_when_something_is_judged(seed):
    r, w, g, cats = random_batch(seed, nan_share=0.5, binary=seed % 2 == 0)
    r[0, :] = nan  # a row with nothing judged
    r[1, :] = nan
    r[1, 2] = 1.0  # a row with a single judgment
    for name in AGGREGATORS:
        out = run(name, r, w, g, cats, state=FocalState({"k3": 1.0}))
        judged = ~np.isnan(r).all(1)
        assert np.isfinite(out.rewards[judged]).all(), name
        assert np.isnan(out.rewards[~judged]).all(), name


def test_strict_and_min_hand_computed():
    r = [[1, 1], [1, 0], [nan, 1], [nan, nan], [0.5, 0.75]]
    assert run("strict", r, [1, 1]).as_list() == [1.0, 0.0, 1.0, None, 1.0]
    assert run("min", r, [1, 1]).as_list() == [1.0, 0.0, 1.0, None, 0.5]


def test_unknown_aggregator_lists_valid_names():
    with pytest.raises(ValueError, match="valid aggregators: static, gdpo, pow3r, focal, focal_proj, strict, min"):
        run("focla", [[1]], [1])


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="no parameter 'gama'"):
        run("focal", [[1]], [1], gama=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run("static", [[2.0]], [1])
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        run("static", [[1.0]], [0])
    with pytest.raises(ValueError, match="alpha_min"):
        run("focal", [[1.0]], [1], alpha_min=0)


@pytest.mark.parametrize("name", ["static", "gdpo", "pow3r", "focal", "focal_proj", "strict", "min"])
def test_a_failed_judgment_never_pays(name):
    """G = 4: c0 met by all judged, c1 met by two rollouts; rollout 3's c0 judgment failed (NaN).
    Rollout 0 met everything: the failed-judgment rollout must not be paid more (before: focal 1.43, pow3r 2.00)."""
    r = [[1, 1], [1, 0], [1, 0], [nan, 1]]
    out = aggregate(name, r, [1, 1], groups=[0, 0, 0, 0], categories=["essential", "important"], keys=["c0", "c1"],
                    state=FocalState({"c0": 0.9, "c1": 0.1}) if name == "focal" else None).rewards
    assert out[3] <= out[0] + 1e-12
    if name in ("static", "pow3r", "focal", "focal_proj", "strict", "min"):
        assert ((out >= 0) & (out <= 1)).all()


# ---- focal_proj: the authors' form (docs/method.md 4b) ---------------------------------------
# A hand case of 2 criteria x 4 rollouts, w = [1, 1] (u = [0.5, 0.5]), T = 1, gamma = 3, eps = 0.05:
#   r = [[1,0],[1,0],[1,1],[0,0]]  ->  S = [0.5, 0.5, 1, 0]
#   q = softmax(S) = [e^.5, e^.5, e^1, e^0] / (2 e^.5 + e + 1) = [0.23500, 0.23500, 0.38746, 0.14254]
#   pace = [q1 + q2 + q3, q3] = [0.85746, 0.38746]; difficulty = [0.19254, 0.66254]
#   u * difficulty^3 = [0.5 * 0.0071376, 0.5 * 0.290828] -> normalised w' = [0.023953, 0.976047]
#   R = [w'_1, w'_1, 1, 0] = [0.023953, 0.023953, 1, 0]
PROJ_R = [[1, 0], [1, 0], [1, 1], [0, 0]]


def _proj(r=PROJ_R, w=(1, 1), groups=(0, 0, 0, 0), **kw):
    return aggregate("focal_proj", r, list(w), groups=list(groups), categories=["a", "b"], keys=["x", "y"], **kw)


def test_focal_proj_hand_case():
    out = _proj()
    np.testing.assert_allclose(out.saturation[0], [0.85746, 0.38746], atol=1e-5)  # the pace is the logged saturation
    np.testing.assert_allclose(out.rewards, [0.023953, 0.023953, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(out.weights[0] / 2, [0.023953, 0.976047], atol=1e-5)  # on the static scale (sum w = 2)


def test_focal_proj_floor_and_mix_by_hand():
    # floor 0.1: [0.023953, 0.976047] -> [0.1, 0.9] (criterion 1 up to the floor, criterion 2 fills the rest);
    # the old max-then-renormalise gave [0.1, 0.976047] / 1.076047 = [0.092933, ...], below the floor
    np.testing.assert_allclose(_proj(floor=0.1).rewards, [0.1, 0.1, 1.0, 0.0], atol=1e-12)
    # mix 0.3: 0.7 * 0.023953 + 0.3 * 0.5 (static) = 0.166767
    np.testing.assert_allclose(_proj(mix=0.3).rewards, [0.166767, 0.166767, 1.0, 0.0], atol=1e-5)


def test_floor_weights_by_hand():
    # 0.06 and 0.04 are below 0.1: both go to 0.1, the first fills 1 - 2 * 0.1 = 0.8
    np.testing.assert_allclose(floor_weights([0.90, 0.06, 0.04], 0.1), [0.8, 0.1, 0.1], atol=1e-12)
    # two rounds, floor 0.14: 0.05 -> 0.14 and the rest fill 0.86 in proportion: 0.15 * 0.86 / 0.95 = 0.1358 < 0.14,
    # so it goes to the floor too; the last two fill 1 - 2 * 0.14 = 0.72 as 5 : 3 -> [0.45, 0.27]
    np.testing.assert_allclose(floor_weights([0.5, 0.3, 0.15, 0.05], 0.14), [0.45, 0.27, 0.14, 0.14], atol=1e-12)
    # nothing below the floor: unchanged
    np.testing.assert_allclose(floor_weights([0.5, 0.3, 0.2], 0.1), [0.5, 0.3, 0.2], atol=1e-12)


@pytest.mark.parametrize("floor, C", [(0.4, 3), (0.25, 4), (0.5, 2)])
def test_floor_weights_uniform_when_floor_times_criteria_reaches_one(floor, C):
    # floor * C >= 1: the only weights that sum to 1 with each >= floor (or as close as can be) are uniform
    np.testing.assert_allclose(floor_weights(np.arange(1.0, C + 1) / (C * (C + 1) / 2), floor), [1 / C] * C, atol=1e-12)


def test_focal_proj_uniform_when_floor_times_criteria_reaches_one():
    # 2 criteria, floor 0.6 (infeasible): w' = [0.5, 0.5] whatever the pace and w; on the static scale w' * sum w = [2, 2]
    out = _proj(w=(3, 1), floor=0.6)
    np.testing.assert_allclose(out.weights, np.full((4, 2), 2.0), atol=1e-12)
    np.testing.assert_allclose(out.rewards, [0.5, 0.5, 1.0, 0.0], atol=1e-12)


def test_focal_proj_floor_is_a_floor():
    """11 criteria, floor 0.03 (the authors' suggestion): every applicable criterion's share of the final weights
    is >= 0.03 and those above it keep their proportions to one another (the old max-then-renormalise left the
    easy criteria at ~0.024)."""
    rng = np.random.default_rng(0)
    C = 11
    r = (rng.random((16, C)) < np.linspace(0.98, 0.05, C)).astype(float)  # easy criteria first
    r[5, 3] = nan  # a failed judgment
    kw = dict(groups=[0] * 8 + [1] * 8, categories=["a"] * C, keys=[f"k{c}" for c in range(C)])
    free = aggregate("focal_proj", r, [1.0] * C, **kw).weights
    w = aggregate("focal_proj", r, [1.0] * C, floor=0.03, **kw).weights
    for g in (0, 8):
        share, base = w[g] / w[g].sum(), free[g] / free[g].sum()
        assert (base < 0.03).any()  # the floor has work to do here
        assert (share >= 0.03 - 1e-12).all()
        above = share > 0.03 + 1e-12
        assert above.sum() >= 2
        np.testing.assert_allclose(share[above] / share[above].sum(), base[above] / base[above].sum(), atol=1e-12)
    np.testing.assert_allclose(w.sum(1), C, atol=1e-9)  # on the static scale: the total weight is sum w


@pytest.mark.parametrize("mix", [0.0, 0.4])
def test_focal_proj_gamma_zero_is_static(mix):
    rng = np.random.default_rng(3)
    r = rng.random((8, 3))
    w = [3.0, 1.0, 2.0]
    groups = [0] * 4 + [1] * 4
    kw = dict(groups=groups, categories=["a", "b", "c"], keys=["x", "y", "z"])
    proj = aggregate("focal_proj", r, w, gamma=0.0, mix=mix, **kw).rewards
    np.testing.assert_allclose(proj, aggregate("static", r, w, **kw).rewards, atol=1e-12)


def test_focal_proj_failed_judgments():
    nan = float("nan")
    # rollout 2 has nothing judged: no reward (NaN, TRL's "could not score"), not its group's mean;
    # it also drops out of the softmax, so the pace is over rollouts 1, 3, 4 only.
    r = [[1, nan], [nan, nan], [1, 1], [0, 0]]
    out = _proj(r=r)
    assert np.isnan(out.rewards[1])
    # S = [1 (criterion 2 not judged: renormalised), -, 1, 0]; q over rows 1,3,4 = [e, e, 1] / (2e + 1)
    e = np.e
    q1, q3, q4 = e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)
    pace2 = q3 * 1 / (q3 + q4)  # criterion 2 judged on rows 3, 4 only: q renormalised over them
    np.testing.assert_allclose(out.saturation[0], [q1 + q3, pace2], atol=1e-9)
    assert out.rewards[0] == 1.0  # met everything that was judged (same rule as every aggregator)
    # a group where no rollout was judged gets no rewards and no weights, and the others are unaffected
    both = _proj(r=[[nan, nan]] * 4 + PROJ_R, groups=[0] * 4 + [1] * 4)
    assert np.isnan(both.rewards[:4]).all()
    np.testing.assert_allclose(both.rewards[4:], _proj().rewards, atol=1e-12)


def test_focal_proj_rejects_bad_knobs():
    with pytest.raises(ValueError, match="focal_proj needs T > 0"):
        _proj(T=0)
    with pytest.raises(ValueError, match="floor"):
        _proj(floor=1.0)


@pytest.mark.parametrize("name", ["static", "pow3r", "focal", "focal_proj"])
def test_one_criterion_reward_is_its_score_whatever_the_reweighting(name):
    # a prompt with one criterion: reweighting has nothing to move, every weighting aggregator pays r itself
    # (docs/evidence.md: why 29 of the IFEval protocol's 72 train prompts train every arm alike)
    r = np.array([[0.0], [1.0], [1.0], [0.0]])
    state = FocalState(m={"k": 0.9})  # a nearly saturated prior: focal would shrink this weight if it could
    out = aggregate(name, r, np.array([3.0]), np.zeros(4, int), ["c"], ["k"], state)
    assert np.asarray(out.as_list(), float).tolist() == [0.0, 1.0, 1.0, 0.0]
