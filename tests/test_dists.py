"""TruncNorm and CondTruncNormHist against scipy, and the closed-form variance against quadrature."""
import numpy as np
import pytest
from scipy import integrate, stats

from nuq.dists import CondTruncNormHist, Histogram, TruncNorm

TRUNCNORMS = [(0.0, 0.1, -1.0, 1.0), (0.03, 0.011, -1.0, 1.0), (-0.2, 0.5, -0.5, 1.0), (0.4, 0.2, -1.0, 0.6)]


@pytest.mark.parametrize("mean,sigma,begin,end", TRUNCNORMS)
def test_truncnorm_matches_scipy(mean, sigma, begin, end):
    ref = stats.truncnorm((begin - mean) / sigma, (end - mean) / sigma, loc=mean, scale=sigma)
    d = TruncNorm(mean, sigma, begin, end)
    x = np.linspace(begin, end, 101)
    q = np.linspace(0.0, 1.0, 101)
    # both evaluate the same normal formulas in float64: agreement to ~1e-12 relative is expected
    np.testing.assert_allclose(d.pdf(x), ref.pdf(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d.cdf(x), ref.cdf(x), rtol=1e-9, atol=1e-12)
    # ppf goes through ndtri of a sum; near q = 0 or 1 the slope is steep, hence a looser atol
    np.testing.assert_allclose(d.ppf(q[1:-1]), ref.ppf(q[1:-1]), rtol=1e-7, atol=1e-9)
    assert d.ppf(0.0) == pytest.approx(begin) and d.ppf(1.0) == pytest.approx(end)
    # outside the truncation interval the density is 0 and the cdf is 0 / 1
    assert d.pdf(begin - 0.1) == 0.0 and d.cdf(begin - 0.1) == 0.0 and d.cdf(end + 0.1) == 1.0


@pytest.mark.parametrize("mean,sigma,begin,end", TRUNCNORMS)
def test_truncnorm_partial_moments_match_quadrature(mean, sigma, begin, end):
    d = TruncNorm(mean, sigma, begin, end)
    rng = np.random.default_rng(0)
    for a, b in np.sort(rng.uniform(-1.1, 1.1, size=(10, 2)), axis=1):
        m0, p1, p2 = d.interval_moments(np.array([a]), np.array([b]))
        for k, got in enumerate((m0, p1, p2)):
            inside = [p for p in (mean, begin, end) if a < p < b] or None  # kinks quad must see
            want = integrate.quad(lambda r: (r - a) ** k * d.pdf(r), a, b, points=inside,
                                  epsabs=1e-14, epsrel=1e-12, limit=200)[0]
            assert got[0] == pytest.approx(want, rel=1e-8, abs=1e-14)


def brute_variance(dist, levels, points=()):
    """sum_j int (r - l_j)(l_{j+1} - r) f(r) dr by adaptive quadrature (test-only reference)."""
    total = 0.0
    for a, b in zip(levels[:-1], levels[1:]):
        inside = [p for p in points if a < p < b]
        total += integrate.quad(lambda r: (r - a) * (b - r) * dist.pdf(r), a, b, points=inside or None,
                                epsabs=1e-15, epsrel=1e-10, limit=500)[0]
    return total


def random_levels(rng, n):
    inner = np.sort(rng.uniform(-1.0, 1.0, n - 2))
    return np.concatenate([[-1.0], inner, [1.0]])


@pytest.mark.parametrize("mean,sigma,begin,end", TRUNCNORMS)
def test_truncnorm_variance_matches_quadrature(mean, sigma, begin, end):
    d = TruncNorm(mean, sigma, begin, end)
    rng = np.random.default_rng(1)
    for n in (3, 8, 16):
        levels = random_levels(rng, n)
        want = brute_variance(d, levels, points=[mean, begin, end])
        assert d.variance(levels) == pytest.approx(want, rel=1e-4)


def test_histogram_variance_matches_quadrature():
    # a coarse histogram so quad can be told every density jump (bin edge) as a breakpoint
    rng = np.random.default_rng(2)
    d = CondTruncNormHist(rng.normal(0.05, 0.1, 6), rng.uniform(0.05, 0.3, 6), rng.lognormal(0, 1, 6),
                          -1.0, 1.0, nbins=60)
    for n in (3, 8, 16):
        levels = random_levels(rng, n)
        want = brute_variance(d, levels, points=list(d.edges))
        assert d.variance(levels) == pytest.approx(want, rel=1e-4)


def test_histogram_cdf_ppf_round_trip():
    rng = np.random.default_rng(3)
    d = CondTruncNormHist(rng.normal(0.0, 0.02, 50), rng.uniform(0.005, 0.03, 50), rng.lognormal(0, 1, 50),
                          -1.0, 1.0, nbins=50000)
    q = np.linspace(0.001, 0.999, 999)
    np.testing.assert_allclose(d.cdf(d.ppf(q)), q, atol=1e-12)
    # x -> cdf -> ppf is the identity wherever the density is positive (inside the bulk here)
    x = np.linspace(-0.05, 0.05, 201)
    assert np.all(d.pdf(x) > 0)
    np.testing.assert_allclose(d.ppf(d.cdf(x)), x, atol=1e-10)
    assert d.cdf(-1.0) == 0.0 and d.cdf(1.0) == pytest.approx(1.0, abs=1e-12)
    # the pdf integrates to the cdf: sum of bin masses is one
    assert d.masses.sum() == pytest.approx(1.0, abs=1e-12)


def test_one_component_mixture_equals_truncnorm():
    mean, sigma = 0.02, 0.05
    t = TruncNorm(mean, sigma, -1.0, 1.0)
    h = CondTruncNormHist([mean], [sigma], [3.7], -1.0, 1.0, nbins=50000)
    # at bin edges the histogram cdf is the exact truncated-normal cdf (masses are cdf differences)
    np.testing.assert_allclose(h.cdf(h.edges), t.cdf(h.edges), atol=1e-12)
    # the variance integrand (r - a)(b - r) f is smooth inside intervals: replacing f by its bin
    # averages errs by O(h^2 f'') per unit mass with h = 4e-5, sigma = 0.05: relative ~(h/sigma)^2 < 1e-6
    rng = np.random.default_rng(4)
    for _ in range(5):
        levels = random_levels(rng, 8)
        assert h.variance(levels) == pytest.approx(t.variance(levels), rel=1e-5)


def test_mixture_weights_follow_norms():
    # two far-apart components with norms 3:1 put 3/4 of the mass on the first
    h = CondTruncNormHist([-0.5, 0.5], [0.01, 0.01], [3.0, 1.0], -1.0, 1.0, nbins=2000)
    assert h.cdf(0.0) == pytest.approx(0.75, abs=1e-12)


def test_symmetrized_keeps_variance_of_symmetric_levels():
    rng = np.random.default_rng(5)
    h = CondTruncNormHist(rng.normal(0.1, 0.05, 5), rng.uniform(0.02, 0.2, 5), rng.lognormal(0, 1, 5),
                          nbins=4000)
    t = TruncNorm(0.1, 0.2)
    pos = np.sort(rng.uniform(0, 1, 3))
    levels = np.concatenate([[-1.0], -pos[::-1], pos, [1.0]])
    assert h.symmetrized().variance(levels) == pytest.approx(h.variance(levels), rel=1e-9)
    # the truncated normal's symmetrisation is a 2-component histogram (relative error O((h/sigma)^2))
    assert t.symmetrized().variance(levels) == pytest.approx(t.variance(levels), rel=1e-6)
    assert np.allclose(h.symmetrized().masses, h.symmetrized().masses[::-1])


def test_variance_is_zero_when_levels_match_a_point_mass():
    # rounding never happens when every value sits on a level: variance 0
    h = Histogram(np.r_[np.zeros(10), 1.0, np.zeros(9)], -1.0, 1.0)  # all mass in [0, 0.1]
    assert h.variance([-1.0, 0.0, 0.1, 1.0]) == pytest.approx(
        brute_variance(h, [-1.0, 0.0, 0.1, 1.0], points=list(h.edges)), rel=1e-6)
    assert h.variance([-1.0, 1.0]) > h.variance([-1.0, 0.0, 0.1, 1.0])


@pytest.mark.parametrize("make,match", [
    (lambda: TruncNorm(0.0, 0.0), "sigma > 0"),
    (lambda: TruncNorm(0.0, 0.1, 1.0, -1.0), "begin < end"),
    (lambda: CondTruncNormHist([0.0, 0.1], [0.1], [1.0, 1.0]), "same non-zero length"),
    (lambda: CondTruncNormHist([0.0], [0.1], [0.0]), "positive sum"),
    (lambda: CondTruncNormHist([0.0], [0.1], [1.0], nbins=0), "nbins"),
])
def test_bad_input_is_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unsorted_levels_and_bad_probabilities_are_rejected():
    d = TruncNorm(0.0, 0.1)
    with pytest.raises(ValueError, match="sorted"):
        d.variance([-1.0, 0.5, 0.2, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.ppf([1.5])
