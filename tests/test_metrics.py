import math

import pytest
import torch

from fmbook.metrics import c2st, frechet_distance, paired_bootstrap, sliced_wasserstein


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    # For diagonal covariances the trace term is sum_i (sigma_a,i - sigma_b,i)^2.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    base = torch.linalg.qr(base - base.mean(0))[0] * math.sqrt(
        len(base) - 1
    )  # zero mean, identity covariance
    a = base * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) + torch.tensor(
        [0.0, 1.0, -1.0], dtype=torch.float64
    )
    b = base * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    expected = (0 + 1 + 1) + ((1 - 3) ** 2 + 0 + (0.5 - 1) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_with_a_full_covariance_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(2)
    a = torch.randn(500, 5, generator=g, dtype=torch.float64) @ torch.randn(
        5, 5, generator=g, dtype=torch.float64
    )
    b = torch.randn(500, 5, generator=g, dtype=torch.float64) + 0.3
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    reference = float(
        ((a.mean(0) - b.mean(0)) ** 2).sum() + (ca + cb - 2 * linalg.sqrtm(ca @ cb).real).trace()
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-7)


def test_c2st_is_near_chance_for_one_distribution_and_near_one_for_separated_ones():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    assert abs(c2st(a, b) - 0.5) < 0.06
    assert c2st(a, b + 3.0) > 0.97


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="same shape"):
        c2st(torch.zeros(10, 3), torch.zeros(12, 3))
    with pytest.raises(ValueError, match="at least"):
        c2st(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="equal shape"):
        sliced_wasserstein(torch.zeros(10, 2), torch.zeros(11, 2))


def test_precision_recall_on_known_cases():
    from fmbook.metrics import precision_recall

    g = torch.Generator().manual_seed(4)
    real = torch.randn(300, 3, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    # mode collapse: every generated point is a copy of one real point -> perfect precision,
    # no recall
    collapsed = real[:1].repeat(300, 1)
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall == pytest.approx(1 / 300)
    # far away: neither
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # half the modes: a generator that only covers x > 0 keeps precision and loses recall
    half = real[real[:, 0] > 0]
    precision, recall = precision_recall(real, half[: len(half)])
    assert precision == 1.0 and 0.4 < recall < 0.75
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(real, real, k=300)


def test_metrics_compute_in_float64_on_the_cpu():
    from fmbook.metrics import _as_float64

    x = _as_float64([0.1, 0.2])  # a list is read as float64, not rounded through float32
    assert x.dtype == torch.float64 and x.device.type == "cpu" and x[0].item() == 0.1
    t = torch.ones(2, requires_grad=True)
    assert _as_float64(t).dtype == torch.float64 and not _as_float64(t).requires_grad
    a = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    b = a + 0.5
    assert sliced_wasserstein(a, b) == pytest.approx(
        sliced_wasserstein(a.double(), b.double()), abs=1e-6
    )


def test_paired_bootstrap_matches_the_normal_interval_of_a_mean_difference():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(4000, generator=g) < 0.6).double()
    b = torch.where(torch.rand(4000, generator=g) < 0.8, a, 1 - a)  # agrees with a on 80%
    est = paired_bootstrap(a, b, resamples=4000)
    d = a - b
    half = 1.96 * d.std().item() / math.sqrt(len(d))
    assert est.mean == pytest.approx(d.mean().item())
    assert est.low == pytest.approx(d.mean().item() - half, abs=0.2 * half)
    assert est.high == pytest.approx(d.mean().item() + half, abs=0.2 * half)


def test_paired_bootstrap_pairs_the_examples():
    # b is a plus a constant: every paired resample has the same difference, so the interval is
    # a point
    a = torch.linspace(0, 1, 500)
    est = paired_bootstrap(a + 0.1, a)
    assert est.low == pytest.approx(0.1) and est.high == pytest.approx(0.1) and est.excludes_zero()
    same = paired_bootstrap(a, a.flip(0))
    assert same.low < 0 < same.high and not same.excludes_zero()


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(torch.ones(5), torch.ones(6))


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 2, generator=g)
    assert sliced_wasserstein(a, a) == 0
    shifted = sliced_wasserstein(a, a + torch.tensor([1.0, 0.0]))
    assert shifted == pytest.approx(2 / math.pi, rel=0.05)  # E|cos(theta)| over random directions
    with pytest.raises(ValueError, match="equal shape"):
        sliced_wasserstein(a, a[:10])
