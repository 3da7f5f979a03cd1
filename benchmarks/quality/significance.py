"""Significance of the quality benchmarks' paired differences: a paired t-test over seeds, Holm-corrected.

Each method-versus-baseline cell of a table is the mean of the per-seed differences ``d_s = method_s - baseline_s``
(same seed: same initialisation, data order and label noise). Its test is the paired t-test of ``mean(d) = 0``:
``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom, two-sided. The family that Holm's step-down
correction runs over is one table's comparisons for one metric (e.g. the accuracy deltas of every method against DPO
in setting (a)): the question a table answers, "which of these methods differ from the baseline on this metric".

With 3 seeds (2 degrees of freedom) the test has little power: a raw two-sided p < 0.05 needs |t| > 4.30, and after
Holm over 7 comparisons the smallest p must be below 0.05 / 7, i.e. |t| > 11.8. A difference that does not survive is
not shown to be zero.

Pure Python (no scipy in the stack): Student's t distribution through the regularized incomplete beta function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes, section 6.4)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}.")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a,b) = 1 - I_1-x(b,a)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}.")
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def t_test(mean: float, sd: float, n: int) -> dict[str, float] | None:
    """Two-sided one-sample t-test of mean 0 from the sample mean, the sample standard deviation and the size n;
    None with n < 2.

    Identical values (sd 0) give t = +-inf and p = 0 when they are not 0, and t = 0, p = 1 when all are 0 (two runs
    that agree exactly).
    """
    if n < 2 or not math.isfinite(mean):
        return None
    if sd == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else 0.0
    else:
        t = mean / (sd / math.sqrt(n))
        p = t_two_sided_p(t, n - 1)
    return {"n": n, "mean": mean, "sd": sd, "t": t, "df": n - 1, "p": p}


def paired_t_test(differences: Sequence[float]) -> dict[str, float] | None:
    """The paired t-test of the per-seed differences (method - baseline on the same seed)."""
    n = len(differences)
    if n < 2:
        return None
    mean = math.fsum(differences) / n
    return t_test(mean, math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1)), n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest p times (m - k + 1), made monotone
    and capped at 1. Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def from_summary(stat: dict[str, float]) -> dict[str, float] | None:
    """The paired t-test of a summary's `delta_<metric>` entry: the mean, sample std and n of the per-seed
    differences (`common.summarize`), which is all the test needs."""
    return t_test(stat.get("mean", math.nan), stat.get("std", math.nan), int(stat.get("n", 0)))


def paired_bootstrap(
    method: Sequence, baseline: Sequence, targets, metric, replicates: int = 2000, seed: int = 0
) -> dict[str, float]:
    """A paired bootstrap over seeds and pairs of ``mean_s metric(method_s) - metric(baseline_s)``.

    `method[s]` and `baseline[s]` are the per-pair predictions (margins, tensors in the order of `targets`) of seed
    `s`'s run of each; `metric(margins, targets)` is a number (ECE, accuracy, ...). Each replicate draws the seeds with
    replacement and, independently, the held-out pairs with replacement, the same draw for both methods (paired in
    both): it answers whether the difference would hold for other seeds AND other held-out pairs, where the t-test
    over seeds takes the pairs as fixed. Returns the observed difference, the 95% percentile interval and the
    two-sided bootstrap p (twice the share of replicates on the far side of 0, at least 1 / replicates).
    """
    import torch

    k, n = len(method), len(targets)
    if k != len(baseline) or k < 2:
        raise ValueError(f"paired_bootstrap needs the same >= 2 seeds for both, got {k} and {len(baseline)}.")
    observed = math.fsum(metric(a, targets) - metric(b, targets) for a, b in zip(method, baseline)) / k
    generator = torch.Generator().manual_seed(seed)
    deltas = []
    for _ in range(replicates):
        seeds = torch.randint(k, (k,), generator=generator).tolist()
        pairs = torch.randint(n, (n,), generator=generator)
        t = targets[pairs]
        per_seed = {s: metric(method[s][pairs], t) - metric(baseline[s][pairs], t) for s in set(seeds)}
        deltas.append(math.fsum(per_seed[s] for s in seeds) / k)
    deltas.sort()
    below = sum(d <= 0 for d in deltas) / replicates
    above = sum(d >= 0 for d in deltas) / replicates
    return {
        "delta": observed,
        "ci_low": deltas[int(0.025 * replicates)],
        "ci_high": deltas[min(replicates - 1, int(0.975 * replicates))],
        "p": max(1 / replicates, min(1.0, 2 * min(below, above))),
        "replicates": replicates,
    }
