r"""Straight lines and power laws for scaling experiments.

:func:`fit_line` is ordinary least squares, :math:`y \approx a + b x`, with the standard
error of the slope; on a log axis it measures a growth rate (the timeline's doubling time
of model size). :func:`fit_power_law` fits :math:`L(N) = (N_c / N)^{\alpha}` (Kaplan et al.
2020, eq. 1.1), a straight line :math:`\log L = \alpha \log N_c - \alpha \log N` on log-log
axes, or, with ``irreducible=True``, :math:`L(N) = E + (N_c / N)^{\alpha}`, where :math:`E`
is the loss no model size removes (the form of Henighan et al. 2020 and, with a data term
added, Hoffmann et al. 2022, eq. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Line:
    """The least-squares line :math:`y = a + b x` (``intercept`` a, ``slope`` b)."""

    intercept: float
    slope: float
    slope_se: float  # standard error of the slope (NaN with only two points)

    def __call__(self, x):
        return self.intercept + self.slope * np.asarray(x, dtype=float)


def fit_line(x, y) -> Line:
    r"""Ordinary least-squares line through the points ``(x, y)``.

    With :math:`\bar x, \bar y` the means,

    .. math::
        b = \frac{\sum_i (x_i - \bar x)(y_i - \bar y)}{\sum_i (x_i - \bar x)^2}, \qquad
        a = \bar y - b \bar x, \qquad
        \mathrm{SE}(b) = \sqrt{\frac{\sum_i r_i^2 / (n - 2)}{\sum_i (x_i - \bar x)^2}},

    where :math:`r_i = y_i - a - b x_i` are the residuals.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(
            f"fit_line: need two 1-D arrays of the same length >= 2, got {x.shape} and {y.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("fit_line: x and y must be finite")
    dx = x - x.mean()
    if not dx @ dx > 0:
        raise ValueError("fit_line: the x values are all equal, so no slope is defined")
    slope = dx @ (y - y.mean()) / (dx @ dx)
    residual = y - y.mean() - slope * dx
    dof = len(x) - 2
    se = math.sqrt(residual @ residual / dof / (dx @ dx)) if dof > 0 else math.nan
    return Line(float(y.mean() - slope * x.mean()), float(slope), se)


@dataclass(frozen=True)
class PowerLaw:
    r""":math:`L(N) = E + (N_c / N)^{\alpha}`, fitted by :func:`fit_power_law`."""

    alpha: float
    n_c: float
    e: float  # irreducible loss (0 for the pure power law)
    alpha_se: float  # standard error of alpha (NaN where not defined)
    rmse_log: float  # root-mean-square error in log L

    def __call__(self, n):
        return self.e + (self.n_c / np.asarray(n, dtype=float)) ** self.alpha


def fit_power_law(n, loss, irreducible: bool = False) -> PowerLaw:
    r"""Least-squares fit in log space of a power law to ``(n, loss)`` points.

    The pure law is the :func:`fit_line` through :math:`(\log n, \log L)`; its
    slope is :math:`-\alpha` and the slope's standard error is reported.
    With ``irreducible=True``, :math:`E` is chosen on a fine grid in
    ``[0, min(loss))`` to minimise the log-space error of the line fitted to
    :math:`\log(L - E)`.
    """
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n.shape != loss.shape or n.ndim != 1 or len(n) < 3:
        raise ValueError(
            f"fit_power_law: need two 1-D arrays of the same length >= 3, "
            f"got {n.shape} and {loss.shape}"
        )
    if np.any(n <= 0) or np.any(loss <= 0):
        raise ValueError("fit_power_law: sizes and losses must be positive")

    def fit(e: float) -> PowerLaw:
        line = fit_line(np.log(n), np.log(loss - e))
        alpha = -line.slope
        n_c = math.exp(line.intercept / alpha) if alpha != 0 else math.nan
        pred = np.log(e + (n_c / n) ** alpha) if alpha != 0 else np.full_like(n, np.nan)
        rmse = float(np.sqrt(np.mean((pred - np.log(loss)) ** 2)))
        return PowerLaw(float(alpha), float(n_c), float(e), line.slope_se, rmse)

    if not irreducible:
        return fit(0.0)
    grid = np.linspace(0.0, loss.min() * 0.999, 400)
    return min((fit(e) for e in grid), key=lambda law: law.rmse_log)
