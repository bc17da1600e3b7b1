"""Reliability and damage against the number of facts: a logistic curve in log n per method and rank.

The model, for a share y (reliability on the packed facts, or the negative shift) measured at n facts::

    y(n) = 1 / (1 + exp(-(a + b · ln n)))

fitted by least squares on y over every run of that method and rank (all seeds), with |a| ≤ 50 and |b| ≤ 20 so
that a flat or perfectly separated series stays finite. Two parameters, monotone in n, bounded in [0, 1]: the
simplest curve with the shape both shares take as n grows (reliability falls from 1, the shift rises from 0). The
residuals (observed − fitted) are kept per run and shown, so a curve that does not describe the runs is seen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

LIMITS = ((-50.0, -20.0), (50.0, 20.0))  # (a, b) lower and upper bounds
MAX_EVALUATIONS = 2000  # of the curve by least squares: no random series of ≤ 8 sizes needed more


@dataclass(frozen=True)
class Fit:
    """``y = σ(a + b·ln n)`` over ``points`` runs, with the root-mean-square residual."""

    a: float
    b: float
    rmse: float
    points: int

    def predict(self, sizes) -> np.ndarray:
        return logistic(self.a + self.b * np.log(np.asarray(sizes, dtype=float)))

    def crossing(self, level: float) -> float | None:
        """The n where the curve equals ``level`` (None when it never does)."""
        if self.b == 0 or not 0 < level < 1:
            return None
        return math.exp((math.log(level / (1 - level)) - self.a) / self.b)


def logistic(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=float)))


def fit_logistic(sizes, values) -> Fit | None:
    """The least-squares curve through (n, y); None with fewer than two distinct sizes (a curve needs a slope)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    sizes, values = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    sizes, values = sizes[keep], values[keep]
    if len(np.unique(sizes)) < 2:
        return None
    logs = np.log(sizes)
    clipped = np.clip(values, 0.02, 0.98)  # a start from the empirical logits' straight line
    slope, intercept = np.polyfit(logs, np.log(clipped / (1 - clipped)), 1)
    start = np.clip([intercept, slope], np.array(LIMITS[0]) + 1e-6, np.array(LIMITS[1]) - 1e-6)
    with warnings.catch_warnings():  # the covariance, unused here, cannot be estimated for a flat series
        warnings.simplefilter("ignore", OptimizeWarning)
        # a near-step series ends at the bounds only after many steps: scipy's default stop (100 per parameter)
        # gave up on a real search's 0, 0, 0, 0.25
        (a, b), _ = curve_fit(lambda x, a, b: logistic(a + b * x), logs, values, p0=start, bounds=LIMITS,
                              max_nfev=MAX_EVALUATIONS)
    residuals = values - logistic(a + b * logs)
    return Fit(float(a), float(b), float(np.sqrt(np.mean(residuals ** 2))), len(values))


def largest_size_within(fits: list[tuple[Fit, float, bool]]) -> float | None:
    """The largest n ≥ 1 at which every fitted curve meets its bound (``(fit, bound, at_least)``): each holds on a
    half-line of n since the curves are monotone. ``math.inf`` when nothing limits n; None when no n ≥ 1 meets
    them all."""
    low, high = 1.0, math.inf
    for fit, bound, at_least in fits:
        crossing = fit.crossing(bound)
        if crossing is None:  # flat, or the bound out of the curve's reach: it holds for every n or for none
            at_one = fit.predict([1.0])[0]
            if not (at_one >= bound if at_least else at_one <= bound):
                return None
            continue
        falling = fit.b < 0
        if falling == at_least:  # holds below the crossing
            high = min(high, crossing)
        else:  # holds above it
            low = max(low, crossing)
    return high if low <= high else None
