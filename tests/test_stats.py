"""Tests over seeds (focal/evaluation/stats.py) against hand-computed numbers."""

import math

import pytest

from focal.evaluation.stats import detectable, interval_seeds_prompts, over_seeds, power, sample_std, seeds_needed, sign_flip_p


def test_hand_case_of_three_seeds():
    # d = [0.1, 0.2, -0.1]: mean 1/15; deviations 1/30, 4/30, -5/30 -> sample var (1 + 16 + 25) / 900 / 2 = 0.023333
    out = over_seeds([0.1, 0.2, -0.1])
    assert out["mean"] == pytest.approx(1 / 15)
    assert out["std"] == pytest.approx(math.sqrt(42 / 1800))
    # the 8 sign patterns give |sum| = .2 .4 .2 0 0 .2 .4 .2: six of eight are >= the observed 0.2
    assert out["sign_flip_p"] == pytest.approx(6 / 8)
    # t = mean / (sd / sqrt 3) = 0.0667 / 0.08819 = 0.7559 on 2 df -> two-sided p = 0.529 (t table)
    assert out["t_p"] == pytest.approx(0.529, abs=1e-3)
    half = 4.302653 * math.sqrt(42 / 1800) / math.sqrt(3)  # t_{0.975, 2} = 4.3027
    assert (out["t_low"], out["t_high"]) == pytest.approx((1 / 15 - half, 1 / 15 + half))
    assert out["higher"] == 2 and out["seeds"] == 3


def test_sample_std_is_ddof_one_and_sign_flip_of_all_positive():
    assert sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2))  # population std would be 1
    assert math.isnan(sample_std([1.0]))
    assert sign_flip_p([0.1] * 5) == pytest.approx(2 / 32)  # only all-plus and all-minus reach |mean| 0.1


def test_power_and_seeds_needed():
    # with sd = delta the standardised effect is 1: a paired t-test needs 10 seeds for 80% power (standard table)
    assert seeds_needed(sd=0.03, delta=0.03) == 10
    assert power(10, 0.03, 0.03) >= 0.8 > power(9, 0.03, 0.03)
    assert detectable(10, 0.03) == pytest.approx(0.03, abs=0.003)


@pytest.mark.parametrize("n, sd, delta, expected", [
    # Monte Carlo over 10^6 simulated experiments (normal differences, |t| > t_crit on n - 1 df), seed 1
    (2, 0.05, 1.0, 0.9733),  # df = 1, large effect: scipy's noncentral t cdf returns NaN here
    (2, 0.05, 0.5, 0.7330),
    (3, 0.05, 0.1, 0.4719),
])
def test_power_is_finite_and_right_at_two_and_three_seeds(n, sd, delta, expected):
    assert power(n, sd, delta) == pytest.approx(expected, abs=0.003)


def test_detectable_at_two_seeds_is_the_difference_with_80_percent_power():
    d = detectable(2, 0.05)
    assert math.isfinite(d) and power(2, 0.05, d) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(detectable(1, 0.05)) and math.isnan(power(1, 0.05, 0.1)) and math.isnan(power(5, 0.0, 0.1))


def test_interval_over_seeds_and_prompts_of_a_constant_matrix():
    assert interval_seeds_prompts([[0.2, 0.2], [0.2, 0.2]], n_boot=50) == pytest.approx((0.2, 0.2))
