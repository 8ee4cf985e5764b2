r"""Power laws for scaling experiments.

:func:`fit_power_law` fits :math:`L(N) = (N_c / N)^{\alpha}` (Kaplan et al. 2020,
eq. 1.1), a straight line :math:`\log L = \alpha \log N_c - \alpha \log N` on
log-log axes, or, with ``irreducible=True``, :math:`L(N) = E + (N_c / N)^{\alpha}`,
where :math:`E` is the loss no model size removes (the form of Henighan et al.
2020 and, with a data term added, Hoffmann et al. 2022, eq. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    n_c: float
    e: float  # irreducible loss (0 for the pure power law)
    alpha_se: float  # standard error of alpha (NaN where not defined)
    rmse_log: float  # root-mean-square error in log L

    def __call__(self, n):
        return self.e + (self.n_c / np.asarray(n, dtype=float)) ** self.alpha


def fit_power_law(n, loss, irreducible: bool = False) -> PowerLaw:
    """Least-squares fit in log space of a power law to ``(n, loss)`` points.

    The pure law is an ordinary least-squares line through ``(log n, log L)``;
    its slope is :math:`-\\alpha` and the slope's standard error is reported.
    With ``irreducible=True``, :math:`E` is chosen on a fine grid in
    ``[0, min(loss))`` to minimise the log-space error of the line fitted to
    ``log(L - E)``.
    """
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n.shape != loss.shape or n.ndim != 1 or len(n) < 3:
        raise ValueError(
            f"fit_power_law: need two 1-D arrays of the same length >= 3, got {n.shape} and {loss.shape}"
        )
    if np.any(n <= 0) or np.any(loss <= 0):
        raise ValueError("fit_power_law: sizes and losses must be positive")

    def line(e):
        x, y = np.log(n), np.log(loss - e)
        A = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        residual = y - A @ coef
        slope = coef[1]
        dof = len(x) - 2
        se = math.sqrt(residual @ residual / dof / ((x - x.mean()) @ (x - x.mean()))) if dof > 0 else math.nan
        alpha = -slope
        n_c = math.exp(coef[0] / alpha) if alpha != 0 else math.nan
        pred = np.log(e + (n_c / n) ** alpha) if alpha != 0 else np.full_like(x, np.nan)
        rmse = float(np.sqrt(np.mean((pred - np.log(loss)) ** 2)))
        return PowerLaw(float(alpha), float(n_c), float(e), float(se), rmse)

    if not irreducible:
        return line(0.0)
    grid = np.linspace(0.0, loss.min() * 0.999, 400)
    return min((line(e) for e in grid), key=lambda fit: fit.rmse_log)
