"""Tests over seeds for paired comparisons: what every evidence table reports.

    from focal.evaluation.stats import over_seeds, seeds_needed
    over_seeds([0.02, -0.01, 0.04])     # mean, sample std (ddof = 1), t interval, paired t p, sign-flip p
    seeds_needed(sd=0.05, delta=0.03)   # seeds for 80% power at alpha 0.05 (two-sided paired t)

The unit of replication is the training seed: per seed, one difference between two arms
trained on that seed (each a mean over the same held-out prompts). Prompts are not
independent replications of training, so a test over prompts alone overstates certainty;
`interval_seeds_prompts` resamples both for an interval that also shows prompt noise.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def sample_std(x) -> float:
    """The sample standard deviation (ddof = 1); NaN for fewer than two values."""
    x = np.asarray(x, float)
    return float(x.std(ddof=1)) if x.size > 1 else float("nan")


def sign_flip_p(d) -> float:
    """Exact two-sided sign-flip permutation p-value of mean(d) = 0 over the 2^n sign patterns
    (n <= 20; beyond, a fixed-seed sample of 2^20 patterns). p = share of patterns whose |mean| >= observed."""
    d = np.asarray(d, float)
    n = d.size
    if n == 0:
        return float("nan")
    obs = abs(d.mean())
    if n <= 20:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(1 << 20, n))
    means = np.abs(signs @ d / n)
    return float((means >= obs - 1e-12).mean())


def t_test(d) -> tuple[float, float, float]:
    """(p, low, high): two-sided one-sample t-test of mean(d) = 0 and its 95% t interval."""
    from scipy import stats

    d = np.asarray(d, float)
    if d.size < 2:
        return float("nan"), float("nan"), float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return (1.0 if d.mean() == 0 else 0.0), float(d.mean()), float(d.mean())
    half = stats.t.ppf(0.975, d.size - 1) * sd / math.sqrt(d.size)
    return float(stats.ttest_1samp(d, 0.0).pvalue), float(d.mean() - half), float(d.mean() + half)


def over_seeds(d) -> dict:
    """Everything reported for one paired difference over seeds."""
    d = np.asarray(d, float)
    p, lo, hi = t_test(d)
    return {"seeds": int(d.size), "mean": float(d.mean()) if d.size else float("nan"), "std": sample_std(d),
            "t_p": p, "t_low": lo, "t_high": hi, "sign_flip_p": sign_flip_p(d), "higher": int((d > 0).sum())}


def interval_seeds_prompts(m, n_boot: int = 2000, seed: int = 0, weights=None) -> tuple[float, float]:
    """95% bootstrap interval of the mean of a [seeds, prompts] matrix of paired differences, resampling
    seeds (rows) and prompts (columns) both, with replacement. `weights` (one per prompt): the weighted
    mean over prompts instead, e.g. each prompt's number of instructions, which makes the mean of per-prompt
    shares IFEval's instruction-level accuracy (pooled over instructions)."""
    m = np.asarray(m, float)
    if m.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    s, p = m.shape
    w = np.ones(p) if weights is None else np.asarray(weights, float)
    boots = []
    for _ in range(n_boot):
        rows, cols = rng.integers(0, s, s), rng.integers(0, p, p)
        boots.append((m[np.ix_(rows, cols)] * w[cols]).sum(1).mean() / w[cols].sum())
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def power(n: int, sd: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test over n seeds to detect a true mean difference delta.

    T = (Z + nc) / sqrt(V / df) with Z normal, V chi-square(df), nc = delta / (sd / sqrt(n)); the power
    P(|T| > t_crit) = E_V[P(Z > t_crit sqrt(V/df) - nc) + P(Z < -t_crit sqrt(V/df) - nc)], integrated over V.
    Finite for every df >= 1 (scipy's noncentral t cdf returns NaN at df = 1 for large nc). NaN for n < 2 or
    sd <= 0 (no test, or no spread to test against)."""
    from scipy import integrate, stats

    if n < 2 or not sd > 0:
        return float("nan")
    df = n - 1
    nc = delta / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)

    def rejects(v):
        s = crit * math.sqrt(v / df)
        return (stats.norm.sf(s - nc) + stats.norm.cdf(-s - nc)) * stats.chi2.pdf(v, df)

    # split at the chi-square's bulk so quad sees where the mass is (df = 1 has a pole at 0)
    cut = max(df, 1.0)
    value = integrate.quad(rejects, 0, cut, limit=200)[0] + integrate.quad(rejects, cut, math.inf, limit=200)[0]
    return float(min(max(value, 0.0), 1.0))


def seeds_needed(sd: float, delta: float, target: float = 0.8, alpha: float = 0.05, most: int = 1000) -> int:
    """Fewest seeds whose paired t-test has `target` power for `delta` (most + 1 if none up to `most`)."""
    for n in range(2, most + 1):
        if power(n, sd, delta, alpha) >= target:
            return n
    return most + 1


def detectable(n: int, sd: float, target: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference that n seeds detect with `target` power (bisection on power, which rises with
    the difference); NaN when there is no test (n < 2, sd not > 0)."""
    if n < 2 or not sd > 0:
        return float("nan")
    lo, hi = 0.0, 20 * sd
    for _ in range(60):
        mid = (lo + hi) / 2
        p = power(n, sd, mid, alpha)
        if math.isnan(p):
            raise ValueError(f"power({n}, {sd}, {mid}) is not a number")  # never read NaN as "power reached"
        lo, hi = (mid, hi) if p < target else (lo, mid)
    return hi
