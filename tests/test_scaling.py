import numpy as np
import pytest
from scipy import stats

from fmbook.scaling import fit_line, fit_power_law


def test_fit_line_recovers_an_exact_line():
    x = np.array([2017.5, 2018.2, 2019.9, 2021.0, 2024.4])
    line = fit_line(x, 3.0 - 0.7 * x)
    assert line.slope == pytest.approx(-0.7, abs=1e-12)
    assert line.intercept == pytest.approx(3.0, abs=1e-8)
    assert line.slope_se < 1e-9
    np.testing.assert_allclose(line(x), 3.0 - 0.7 * x, atol=1e-8)


def test_fit_line_agrees_with_scipy_linregress():
    rng = np.random.default_rng(0)
    x = rng.uniform(2017, 2025, 30)
    y = 0.8 * x + rng.normal(0, 2, 30)
    ours, theirs = fit_line(x, y), stats.linregress(x, y)
    assert ours.slope == pytest.approx(theirs.slope, rel=1e-10)
    assert ours.intercept == pytest.approx(theirs.intercept, rel=1e-10)
    assert ours.slope_se == pytest.approx(theirs.stderr, rel=1e-10)


def test_fit_line_bad_input():
    with pytest.raises(ValueError, match="length"):
        fit_line([1.0], [2.0])
    with pytest.raises(ValueError, match="length"):
        fit_line([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        fit_line([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="all equal"):
        fit_line([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_recovers_a_known_power_law():
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    fit = fit_power_law(n, (2e8 / n) ** 0.076)
    assert fit.alpha == pytest.approx(0.076, abs=1e-9)
    assert fit.n_c == pytest.approx(2e8, rel=1e-6)
    assert fit.rmse_log < 1e-12 and fit.e == 0


def test_recovers_an_irreducible_term():
    n = np.geomspace(1e3, 1e7, 8)
    loss = 1.2 + (1e5 / n) ** 0.3
    fit = fit_power_law(n, loss, irreducible=True)
    assert fit.e == pytest.approx(1.2, abs=0.02)
    assert fit.alpha == pytest.approx(0.3, abs=0.02)
    assert fit.rmse_log < fit_power_law(n, loss).rmse_log


def test_standard_error_grows_with_noise():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e4, 1e6, 6)
    clean = fit_power_law(n, (1e8 / n) ** 0.1)
    noisy = fit_power_law(n, (1e8 / n) ** 0.1 * np.exp(rng.normal(0, 0.02, 6)))
    assert clean.alpha_se < 1e-9 < noisy.alpha_se


def test_bad_input():
    with pytest.raises(ValueError, match="length"):
        fit_power_law([1, 2], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, -3], [1, 2, 3])
