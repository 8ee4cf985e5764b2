"""Measuring how close generated samples are to real data, and how sure a comparison is.

Every metric copies its inputs to the CPU and computes in float64 there: sums over thousands of
points need the precision, and Apple's MPS has no float64. Inputs may live on any device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Interval(NamedTuple):
    """A difference of means and its bootstrap percentile interval ``[low, high]``."""

    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a, b, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    r"""Mean of ``a - b`` over paired examples, with a percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are two methods' scores on the same example ``i`` (1.0 for
    right, 0.0 for wrong, or any per-example score). Each resample draws ``n``
    examples with replacement, the same for both methods, and takes
    :math:`\bar d^{*} = \frac1n \sum_i (a_{i^*} - b_{i^*})`; the interval is the
    :math:`(1-\text{level})/2` and :math:`(1+\text{level})/2` quantiles of the
    ``resamples`` values of :math:`\bar d^{*}` (Efron & Tibshirani 1993, ch. 13).
    Pairing removes the variation of the examples' difficulty, which both
    methods share.
    """
    a, b = _as_float64(a).flatten(), _as_float64(b).flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(
            f"paired_bootstrap: a and b need the same length >= 2, got {a.numel()} and {b.numel()}"
        )
    if not 0 < level < 1 or resamples < 10:
        raise ValueError(
            f"paired_bootstrap: need 0 < level < 1 and resamples >= 10, got {level}, {resamples}"
        )
    d = a - b
    g = torch.Generator().manual_seed(seed)
    means = torch.cat(
        [
            d[torch.randint(len(d), (min(256, resamples - i), len(d)), generator=g)].mean(1)
            for i in range(0, resamples, 256)
        ]
    )
    low, high = torch.quantile(
        means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    )
    return Interval(d.mean().item(), low.item(), high.item())


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, n_projections: int = 500, seed: int = 0
) -> float:
    r"""Sliced 1-Wasserstein distance between two equally sized point clouds in
    :math:`\mathbb{R}^d`.

    Both clouds are projected onto ``n_projections`` random unit directions
    :math:`\theta`; in one dimension the Wasserstein-1 distance is the mean
    absolute difference of the sorted projections. The result is its average
    over directions, :math:`\mathbb{E}_\theta\, W_1(\theta^\top a, \theta^\top b)`.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "sliced_wasserstein: expected two (n, d) tensors of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    pa = (_as_float64(a) @ theta).sort(dim=0).values
    pb = (_as_float64(b) @ theta).sort(dim=0).values
    return (pa - pb).abs().mean().item()


def _as_float64(x) -> torch.Tensor:
    """``x`` (a tensor on any device, or an array) as a float64 tensor on the CPU: moved first, then
    converted, since MPS has no float64."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix (eigenvalues below 0 set to
    0)."""
    values, vectors = torch.linalg.eigh((m + m.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a, b) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of feature vectors
    (Heusel et al. 2017):

    .. math:: \lVert \mu_a - \mu_b \rVert^2 + \operatorname{Tr}\big(\Sigma_a + \Sigma_b
              - 2\,(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big).

    With Inception features this is the FID; here the features come from the book's own
    evaluator. The estimate is biased upwards for finite samples, so compare it only with
    distances computed from the same number of samples (a real-vs-real floor).
    """
    a, b = _as_float64(a), _as_float64(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"frechet_distance: expected two (n, d) arrays with the same d and n >= 2, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return ((mu_a - mu_b).square().sum() + torch.trace(cov_a + cov_b - 2 * cross)).item()


def c2st(a, b, folds: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): the cross-validated accuracy of a
    logistic regression (on standardised inputs) that tells rows of ``a`` from rows of ``b``.

    0.5 means the classifier cannot tell them apart; 1.0 means they are perfectly separable.
    Both sets must have the same number of rows, so that chance is exactly 0.5.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _as_float64(a).numpy(), _as_float64(b).numpy()
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "c2st: expected two (n, d) arrays of the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if len(a) < folds:
        raise ValueError(f"c2st: need at least folds = {folds} rows per set, got {len(a)}")
    import numpy as np

    inputs = np.concatenate([a, b])
    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, inputs, labels, cv=splits).mean())


def precision_recall(real, generated, k: int = 3) -> tuple[float, float]:
    r"""Improved precision and recall of Kynkäänniemi et al. (2019) for feature vectors.

    Each set stands for a manifold: the union of balls around its points, each ball reaching
    the point's ``k``-th nearest neighbour within the set. **Precision** is the fraction of
    generated points inside the real manifold (fidelity); **recall** is the fraction of real points
    inside the generated manifold (diversity: how much of the real variety is produced).
    """
    real, generated = _as_float64(real), _as_float64(generated)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"precision_recall: expected two (n, d) arrays with the same d, "
            f"got {tuple(real.shape)} and {tuple(generated.shape)}"
        )
    if not 1 <= k < min(len(real), len(generated)):
        raise ValueError(
            "precision_recall: k must be in [1, n), "
            f"got k={k} for {len(real)} and {len(generated)} points"
        )

    def radii(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # the 0 to itself is the first

    between = torch.cdist(generated, real)  # (generated, real)
    precision = (between <= radii(real)[None, :]).any(dim=1).double().mean().item()
    recall = (between.T <= radii(generated)[None, :]).any(dim=1).double().mean().item()
    return precision, recall
