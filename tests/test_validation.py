"""Validation metrics: distances, noise floors, C2ST, moments, QoIs, cost, report.

Every stochastic check has a fixed seed and a tolerance derived from the sample size (standard
errors from batch means or binomial counts, or a known bound on the empirical Wasserstein
distance), stated next to the assertion.
"""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.spatial.distance import cdist

from prnf_core import problems
from prnf_core.problems import get_problem, problem_qoi
from prnf_core.problems.abc3d import ABC_BOX, abc_region_probability
from prnf_core.problems.runaway2d import RUNAWAY_P_STAR, runaway_rate
from prnf_core.sde import SDE
from prnf_core.validation import (
    ValidationReport,
    as_2d,
    binomial_qoi,
    break_even,
    classifier_two_sample_test,
    cost_summary,
    energy_distance,
    exceedance_probability,
    metric_key,
    moment_quantile_errors,
    noise_floor_ratio,
    region_probability,
    sliced_wasserstein,
    validate_samples,
)


# -- energy distance --------------------------------------------------------------------------
def brute_energy(a: np.ndarray, b: np.ndarray, unbiased: bool) -> float:
    n, m = len(a), len(b)
    daa, dbb, dab = cdist(a, a).sum(), cdist(b, b).sum(), cdist(a, b).mean()
    na, nb = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return 2 * dab - daa / na - dbb / nb


@pytest.mark.parametrize("unbiased", [False, True])
def test_energy_matches_brute_force_with_partial_blocks(unbiased):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)) + 10.0, rng.normal(size=(70, 3)) * 2 + 10.0
    # block=16: partial blocks at the edges, symmetric off-diagonal and diagonal blocks.
    got = energy_distance(a, b, unbiased=unbiased, block=16)
    assert got == pytest.approx(brute_energy(a, b, unbiased), rel=1e-10)


def exact_energy_normal_shift(delta: float) -> float:
    r"""Energy distance of N(0,1) and N(δ,1): 2 E|N(δ,2)| - 2 E|N(0,2)|."""
    s = math.sqrt(2.0)

    def abs_mean(mu: float) -> float:  # E|N(mu, s^2)|
        return s * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * s * s)) + mu * (
            1 - 2 * stats.norm.cdf(-mu / s))

    return 2 * abs_mean(delta) - 2 * abs_mean(0.0)


def batch_energy(delta: float, seed: int, batches: int = 16, size: int = 500
                 ) -> tuple[float, float]:
    """Mean and standard error of the unbiased estimate over independent batches."""
    rng = np.random.default_rng(seed)
    vals = [energy_distance(rng.normal(size=(size, 1)), rng.normal(size=(size, 1)) + delta,
                            unbiased=True) for _ in range(batches)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1) / math.sqrt(batches))


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
def test_energy_closed_form_normal_shift(delta):
    # The U-statistic is unbiased: the batch mean is within 4 standard errors of the truth.
    mean, se = batch_energy(delta, seed=int(10 * delta))
    assert abs(mean - exact_energy_normal_shift(delta)) < 4 * se
    assert exact_energy_normal_shift(1.0) == pytest.approx(0.5418, abs=1e-4)


def test_energy_same_law_small_shifted_larger_and_monotone():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3000, 3)), rng.normal(size=(3000, 3))
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    vals = [energy_distance(a, b + np.array([d, 0, 0]), unbiased=True) for d in shifts]
    v_stat = energy_distance(a, b)
    # Null: the V-statistic's mean is (1/n + 1/m) E|X-X'|; E|X-X'| <= sqrt(2 d) for N(0, I_d).
    assert 0 <= v_stat < 3 * (2 / 3000) * math.sqrt(6)
    assert abs(vals[0]) < 3 * (2 / 3000) * math.sqrt(6)
    assert all(x < y for x, y in itertools.pairwise(vals))
    assert vals[2] > 20 * v_stat


def test_energy_v_statistic_never_negative_u_statistic_can_be():
    rng = np.random.default_rng(3)
    u_vals, v_vals = [], []
    for _ in range(20):
        a, b = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
        u_vals.append(energy_distance(a, b, unbiased=True))
        v_vals.append(energy_distance(a, b))
    assert min(v_vals) >= 0 and min(u_vals) < 0


def test_energy_subsample_cap_is_deterministic():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(600, 2)), rng.normal(size=(500, 2)) + 0.3
    one = energy_distance(a, b, max_n=100, seed=7)
    assert one == energy_distance(a, b, max_n=100, seed=7)
    assert one != energy_distance(a, b, max_n=100, seed=8)
    assert energy_distance(a, b, max_n=None) == energy_distance(a, b, max_n=600)


def test_energy_rejects_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        energy_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))


# -- sliced Wasserstein -----------------------------------------------------------------------
def expanded_wp(x: np.ndarray, y: np.ndarray, p: int) -> float:
    """W_p of 1-D empirical measures by repeating points to a common count (brute force)."""
    lcm = math.lcm(len(x), len(y))
    xs, ys = np.sort(np.repeat(x, lcm // len(x))), np.sort(np.repeat(y, lcm // len(y)))
    return float(np.mean(np.abs(xs - ys) ** p) ** (1 / p))


@pytest.mark.parametrize(("n", "m"), [(4, 2), (6, 4), (7, 5), (30, 30)])
@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_1d_exact_for_unequal_sizes(n, m, p):
    rng = np.random.default_rng(n * m + p)
    x, y = rng.normal(size=n), rng.exponential(size=m)
    got = sliced_wasserstein(x[:, None], y[:, None], n_projections=3, p=p)
    assert got == pytest.approx(expanded_wp(x, y, p), rel=1e-12)
    if p == 1:
        assert got == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-12)


def test_sliced_wasserstein_hand_computed():
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.0], [2.0]])
    # Quantile functions differ by 1 on half of (0, 1]: W1 = 0.5, W2 = sqrt(0.5).
    assert sliced_wasserstein(x, y, p=1) == pytest.approx(0.5)
    assert sliced_wasserstein(x, y, p=2) == pytest.approx(math.sqrt(0.5))


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_sliced_wasserstein_1d_normal_shift(delta):
    n, m = 20_000, 15_000
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(n, 1)), rng.normal(size=(m, 1)) + delta
    # E W1(F_n, F) <= J / sqrt(n) with J = ∫ sqrt(F (1 - F)) dx (Bobkov & Ledoux 2019); by the
    # triangle inequality |W1(F_n, G_m) - δ| <= W1(F_n, F) + W1(G_m, G): allow 3× the bound.
    J = integrate.quad(lambda t: math.sqrt(stats.norm.cdf(t) * stats.norm.sf(t)),
                       -np.inf, np.inf)[0]
    tol = 3 * J * (1 / math.sqrt(n) + 1 / math.sqrt(m))
    assert abs(sliced_wasserstein(x, y, p=1) - delta) < tol
    assert abs(sliced_wasserstein(x, y, p=2) - delta) < 2 * tol


def test_sliced_w2_of_a_shift_is_norm_over_sqrt_d():
    d, n, L = 3, 4000, 1000
    v = np.array([2.0, -1.0, 0.5])
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + v
    sw2 = sliced_wasserstein(x, y, n_projections=L, seed=1) ** 2
    vv = float(v @ v)
    # SW2^2 ≈ mean over directions of (θ·v)^2, mean |v|^2/d, Var = |v|^4 (3/(d(d+2)) - 1/d^2);
    # sampling adds about 2|θ·v|·|mean difference| ~ 2|v| sqrt(2/n). Allow 4 sd of each.
    sd_dir = vv * math.sqrt(3 / (d * (d + 2)) - 1 / d**2) / math.sqrt(L)
    tol = 4 * sd_dir + 4 * 2 * math.sqrt(vv) * math.sqrt(2 / n)
    assert abs(sw2 - vv / d) < tol


# -- noise floor ------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["energy", "sliced_wasserstein"])
def test_noise_floor_ratio_swaps_exactly(distance):
    # Design check: value and floor are the same function of (sur, mc_a) and (mc_b, mc_a).
    rng = np.random.default_rng(7)
    s, a, b = (rng.normal(size=(300, 2)) for _ in range(3))
    r1 = noise_floor_ratio(s, a, b, distance, seed=3)
    r2 = noise_floor_ratio(b, a, s, distance, seed=3)
    assert r1.value == pytest.approx(r2.floor, rel=1e-12)
    assert r1.floor == pytest.approx(r2.value, rel=1e-12)
    assert r1.floor > 0 and r1.n == 300 and r1.n_ref == 300


@pytest.mark.parametrize("distance", ["energy", "sliced_wasserstein"])
def test_noise_floor_ratio_is_one_in_median_for_same_law(distance):
    # Under the null sur and mc_b are exchangeable, so P[r > 1] = 1/2 exactly: the count over
    # R replicates is Binomial(R, 1/2); accept its central 99.9 % range.
    R = 40
    above = []
    logs = []
    for r in range(R):
        rng = np.random.default_rng(100 + r)
        s, a, b = (rng.normal(size=(300, 2)) for _ in range(3))
        ratio = noise_floor_ratio(s, a, b, distance, seed=r, n_projections=64).ratio
        above.append(ratio > 1)
        logs.append(math.log(ratio))
    lo, hi = stats.binom(R, 0.5).ppf([0.0005, 0.9995])
    assert lo <= sum(above) <= hi
    # log r is symmetric about 0: its mean is within 4 standard errors of 0.
    assert abs(np.mean(logs)) < 4 * np.std(logs, ddof=1) / math.sqrt(R)


def test_noise_floor_ratio_large_for_shifted_surrogate():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3))
    s = rng.normal(size=(2000, 3)) + np.array([0.5, 0.0, 0.0])
    # Null 99 % quantiles (documented): energy ≤ 4.1, SW2 ≤ 1.61.
    assert noise_floor_ratio(s, a, b, "energy").ratio > 20
    assert noise_floor_ratio(s, a, b, "sliced_wasserstein").ratio > 3


def test_noise_floor_ratio_matches_sizes():
    rng = np.random.default_rng(9)
    s, a, b = rng.normal(size=(500, 2)), rng.normal(size=(800, 2)), rng.normal(size=(300, 2))
    r = noise_floor_ratio(s, a, b, "energy", max_n=600)
    assert (r.n, r.n_ref) == (300, 600)
    with pytest.raises(ValueError, match="distance"):
        noise_floor_ratio(s, a, b, "kl")  # type: ignore[arg-type]


# -- C2ST -------------------------------------------------------------------------------------
def test_c2st_same_law_within_binomial_bound():
    rng = np.random.default_rng(10)
    s, m = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    res = classifier_two_sample_test(s, m, seed=0, alpha=0.001)
    assert res.n_test == 4000 and res.n_train == 4000
    assert res.null_low <= res.accuracy <= res.null_high
    assert res.indistinguishable and res.p_value > 0.001
    assert res.null_std == pytest.approx(0.5 / math.sqrt(4000))
    assert res.stderr == pytest.approx(math.sqrt(res.accuracy * (1 - res.accuracy) / 4000))


def test_c2st_detects_different_laws():
    rng = np.random.default_rng(11)
    s = rng.normal(size=(4000, 3)) + np.array([2.0, 0, 0])  # Bayes accuracy Φ(1) = 0.84
    m = rng.normal(size=(6000, 3))
    res = classifier_two_sample_test(s, m, seed=0)
    assert res.accuracy >= 0.7 and res.accuracy > res.null_high and res.p_value < 1e-10
    assert not res.indistinguishable
    # Balanced: both classes subsampled to 4000, half held out.
    assert res.n_test == 4000
    again = classifier_two_sample_test(s, m, seed=0)
    assert again.accuracy == res.accuracy


# -- moments and quantiles --------------------------------------------------------------------
def test_moment_quantile_errors_hand_computed():
    sur = np.column_stack([np.arange(1.0, 6.0), 2 * np.arange(1.0, 6.0)])
    mc = np.zeros((4, 2))
    e = moment_quantile_errors(sur, mc, coord_names=["p", "xi"])
    assert e.coord_names == ("p", "xi") and (e.n_sur, e.n_mc) == (5, 4)
    np.testing.assert_allclose(e.mean_diff, [3.0, 6.0])
    np.testing.assert_allclose(e.std_diff, [math.sqrt(2.5), 2 * math.sqrt(2.5)])
    # Linear interpolation on 1..5: Q(q) = 1 + 4q.
    np.testing.assert_allclose(e.quantile_diff[:, 0], [1.04, 1.2, 3.0, 4.8, 4.96])
    np.testing.assert_allclose(e.quantile_diff[:, 1], 2 * np.array([1.04, 1.2, 3.0, 4.8, 4.96]))
    # MC is constant: its standard errors are 0 and the differences carry the surrogate's.
    assert not e.mc_mean_se.any() and not e.mc_std_se.any() and not e.mc_quantile_se.any()
    np.testing.assert_allclose(e.diff_mean_se[0], math.sqrt(2.5 / 5))
    m4 = np.mean((np.arange(1.0, 6.0) - 3) ** 4)  # 6.8
    std_se = math.sqrt((m4 - 2.5**2) / 5) / (2 * math.sqrt(2.5))
    np.testing.assert_allclose(e.diff_std_se[0], std_se)
    # Order-statistic SE: (Q(q + h) - Q(q - h)) / 2 = 4 h with h = sqrt(q (1-q) / n), in range.
    np.testing.assert_allclose(e.diff_quantile_se[2, 0], 4 * math.sqrt(0.25 / 5))
    rows = e.rows()
    assert len(rows) == 2 * 7
    assert rows[0] == ("mean", "p", 0.0, 3.0, pytest.approx(e.diff_mean_se[0]))
    assert [r[0] for r in rows[:7]] == ["mean", "std", "q01", "q05", "q50", "q95", "q99"]


def test_moment_standard_errors_match_normal_theory():
    n = 40_000
    rng = np.random.default_rng(12)
    e = moment_quantile_errors(rng.normal(size=(10, 1)), rng.normal(size=(n, 1)))
    assert e.mc_mean_se[0] == pytest.approx(1 / math.sqrt(n), rel=0.03)
    assert e.mc_std_se[0] == pytest.approx(1 / math.sqrt(2 * n), rel=0.05)
    # Median of N(0,1): sqrt(1/4 / n) / φ(0) = sqrt(π/2) / sqrt(n).
    assert e.mc_quantile_se[2, 0] == pytest.approx(math.sqrt(math.pi / 2 / n), rel=0.1)


# -- quantities of interest -------------------------------------------------------------------
def test_runaway_rate_exact_counts():
    p = np.array([0.5, 1.0, 1.75, 1.7501, 3.0, 10.0, 1.2, 2.0])
    x = np.column_stack([p, np.zeros_like(p)])
    q = runaway_rate(x)
    assert q == {"name": "runaway_rate", "value": 4 / 8, "stderr": math.sqrt(0.25 / 8)}
    assert runaway_rate(x, p_star=5.0)["value"] == 1 / 8
    assert runaway_rate(x, p_star=20.0) == {"name": "runaway_rate", "value": 0.0, "stderr": 0.0}


def test_region_probability_exact_counts():
    pi = math.pi
    x = np.array([
        [0.0, 5.0, 2 * pi],       # corners: closed box, inside
        [pi, -3.0, 3 * pi],       # inside
        [1.0, 0.0, 7.0],          # inside
        [pi + 1e-9, 0.0, 7.0],    # x just outside
        [1.0, 0.0, 6.0],          # z below 2π
        [-0.1, 0.0, 7.0],         # x below 0
        [1.0, 0.0, 3 * pi + 0.1], # z above 3π
        [2.0, 100.0, 8.0],        # inside (y is free)
        [1.0, 0.0, 1.0],
        [3.0, 0.0, 9.0],          # inside
    ])
    q = abc_region_probability(x)
    assert q["name"] == "region_probability"
    assert q["value"] == 5 / 10 and q["stderr"] == pytest.approx(math.sqrt(0.25 / 10))
    assert region_probability(x, box=((0, 2.5),), coords=(0,))["value"] == 6 / 10
    with pytest.raises(ValueError, match="box"):
        region_probability(x, box=ABC_BOX, coords=(0,))


def test_problems_declare_their_qois():
    assert {n: list(get_problem(n).qois) for n in ("abc3d", "bm1d", "ou", "runaway2d")} == {
        "abc3d": ["region_probability"], "bm1d": [], "ou": [], "runaway2d": ["runaway_rate"]}
    assert RUNAWAY_P_STAR == 1.75
    x = np.array([[1.0, 0.0, 7.0], [2.0, 0.0, 0.0]])
    assert problem_qoi("abc3d")(x)["value"] == 0.5
    assert problem_qoi("runaway2d")(x)["value"] == 0.5
    assert problem_qoi("ou") is None and problem_qoi("no-such") is None
    assert problem_qoi(None) is None
    assert get_problem("runaway2d", p_min=0.1).primary_qoi is runaway_rate


def test_user_sde_declares_a_qoi_that_validation_reports(monkeypatch):
    def tail(samples):
        return binomial_qoi("tail", samples[:, 0] > 1.0)

    def make(*, scale: float = 1.0) -> SDE:
        return SDE(name="user_qoi", dim=1, drift=lambda x, t, p: -x,
                   diffusion=lambda x, t, p: p["scale"] * x.new_ones(x.shape),
                   params={"scale": scale},
                   domain=([-2.0], [2.0]), qois={"tail": tail})

    monkeypatch.setitem(problems._REGISTRY, "user_qoi", make)  # registered for this test only
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 1))
    r = validate_samples("user_qoi", x, x[::-1].copy(), x + 0.1, c2st=False)
    assert r.qoi is not None and r.qoi.name == "tail"
    assert r.qoi.sur == float((x[:, 0] > 1.0).mean())
    assert validate_samples("user_qoi", x, x, x, c2st=False, qoi=lambda s: binomial_qoi(
        "neg", s[:, 0] < 0)).qoi.name == "neg"
    with pytest.raises(ValueError, match="qois"):
        SDE(name="bad", dim=1, drift=lambda x, t, p: x, diffusion=lambda x, t, p: x,
            domain=([0.0], [1.0]), qois={"tail": 0.5})


def test_generic_qoi_helpers_and_array_checker():
    assert binomial_qoi("h", np.array([True, True, False, False])) == {
        "name": "h", "value": 0.5, "stderr": 0.25}
    assert exceedance_probability([[0.0], [2.0], [3.0], [1.0]], 1.0, name="above") == {
        "name": "above", "value": 0.5, "stderr": 0.25}
    assert as_2d([[1.0, np.inf], [0.0, 1.0]], "x", nonfinite="keep").shape == (2, 2)
    assert as_2d([[1.0, np.inf], [0.0, 1.0]], "x", nonfinite="drop").tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="x: contains NaN"):
        as_2d([[1.0, np.nan]], "x")
    with pytest.raises(ValueError, match="non-empty"):
        as_2d(np.zeros((0, 2)), "x", nonfinite="drop")


# -- cost -------------------------------------------------------------------------------------
def test_break_even_formula():
    # MC 1000/s, surrogate 1e6/s, N = 20000: saving per distribution 20 - 0.02 = 19.98 s.
    assert break_even(100.0, 1e6, 1e3, 20_000) == pytest.approx(100 / 19.98)
    assert break_even(0.0, 1e6, 1e3, 20_000) == 0.0
    assert break_even(100.0, 1e3, 1e3, 20_000) == math.inf
    assert break_even(100.0, 10.0, 1e3, 20_000) == math.inf
    k = break_even(3600.0, 5e5, 2e3, 20_000)
    mc_cost = lambda K: K * 20_000 / 2e3  # noqa: E731
    sur_cost = lambda K: 3600 + K * 20_000 / 5e5  # noqa: E731
    assert sur_cost(k) == pytest.approx(mc_cost(k))
    assert sur_cost(math.ceil(k) + 1) < mc_cost(math.ceil(k) + 1)
    with pytest.raises(ValueError):
        break_even(-1.0, 1e6, 1e3, 100)
    with pytest.raises(ValueError):
        break_even(1.0, 1e6, 0.0, 100)
    c = cost_summary(100.0, 1e6, 1e3, 20_000)
    assert c["mc_seconds_per_distribution"] == 20.0
    assert c["break_even_distributions"] == pytest.approx(100 / 19.98)


# -- validate_samples and the report ----------------------------------------------------------
@pytest.fixture(scope="module")
def abc_report() -> ValidationReport:
    rng = np.random.default_rng(13)
    centre = np.array([1.5, 0.0, 7.0])
    a, b = (rng.normal(size=(1500, 3)) + centre for _ in range(2))
    good = rng.normal(size=(1500, 3)) + centre
    bad = rng.normal(size=(1500, 3)) * [1.0, 1.6, 1.0] + centre
    bad[:7] = np.nan  # a surrogate failure: dropped and counted
    report = ValidationReport(problem="abc3d")
    report.add(validate_samples("abc3d", good, a, b, law="centre A", param=1.0, seed=1))
    report.add(validate_samples("abc3d", bad, a, b, law="T0=2|wide", param=2.0, seed=1))
    report.cost = cost_summary(100.0, 1e6, 1e3, 20_000)
    return report


def test_validate_samples_contents(abc_report):
    good, bad = abc_report.results
    assert good.coord_names == ("x", "y", "z")
    assert good.qoi is not None and good.qoi.name == "region_probability"
    assert (bad.n_sur, bad.n_sur_nonfinite, bad.n_mc_a, bad.n_mc_b) == (1493, 7, 1500, 1500)
    # Null 99 % quantiles (documented): energy ≤ 4.1, SW2 ≤ 1.61.
    assert good.energy.ratio < 4.1 and good.sliced_w.ratio < 1.61
    assert bad.energy.ratio > 5 and bad.sliced_w.ratio > 2
    assert good.c2st is not None and bad.c2st is not None
    assert good.c2st.accuracy < bad.c2st.accuracy and bad.c2st.accuracy > bad.c2st.null_high
    assert abs(good.qoi.z) < 4
    # Moments against the pooled MC set (3000 rows).
    assert good.moments.n_mc == 3000
    assert abs(good.moments.mean_diff[2]) < 4 * good.moments.diff_mean_se[2]
    assert bad.moments.std_diff[1] > 10 * bad.moments.diff_std_se[1]
    with pytest.raises(ValueError, match="already"):
        abc_report.add(good)


def test_validate_samples_problem_names_and_errors():
    rng = np.random.default_rng(14)
    x = np.abs(rng.normal(size=(300, 2))) + 0.5
    r = validate_samples("runaway2d", x, x[::-1].copy(), x + 0.01, c2st=False, law="t")
    assert r.coord_names == ("p", "xi") and r.qoi is not None and r.qoi.name == "runaway_rate"
    assert r.c2st is None
    assert validate_samples(None, x, x, x + 1, c2st=False).coord_names == ("x0", "x1")
    with pytest.raises(ValueError, match="mc_a"):
        validate_samples(None, x, np.full_like(x, np.nan), x, c2st=False)
    with pytest.raises(ValueError, match="same dimension"):
        validate_samples(None, x, x[:, :1], x, c2st=False)


def test_report_markdown_and_flat_metrics(abc_report):
    md = abc_report.to_markdown()
    for law in ("centre A", "T0=2\\|wide"):
        assert law in md
    for header in ("energy", "energy floor", "energy ratio", "SW", "SW floor", "SW ratio",
                   "C2ST acc", "C2ST null", "region_probability (surrogate)",
                   "region_probability (MC)", "moments max abs z", "break_even_distributions"):
        assert f"| {header} |" in md or f"| {header}" in md
    for stat in ("mean", "std", "q01", "q05", "q50", "q95", "q99"):
        assert f" {stat} |" in md
    for coord in ("x", "y", "z"):
        assert f"| {coord} |" in md
    # Every table row has as many cells as its header (no stray '|' from names).
    for table in md.split("\n\n"):
        rows = [ln for ln in table.splitlines() if ln.startswith("|")]
        if rows:
            widths = {len(re.split(r"(?<!\\)\|", ln)) for ln in rows}
            assert len(widths) == 1, table
    flat = abc_report.as_flat_metrics()
    assert all(type(v) is float for v in flat.values())
    for law in ("centre A", "T0_2_wide"):
        for key in ("energy", "energy_floor", "energy_ratio", "sw", "sw_floor", "sw_ratio",
                    "c2st_acc", "c2st_stderr", "c2st_pvalue", "region_probability_sur",
                    "region_probability_mc", "region_probability_z", "mean_diff/x",
                    "q99_diff_se/z", "moments_max_abs_z", "param", "nonfinite_frac"):
            assert f"val/{law}/{key}" in flat, key
    assert flat["val/T0_2_wide/nonfinite_frac"] == 7 / 1500
    assert flat["cost/break_even_distributions"] == pytest.approx(100 / 19.98)
    assert metric_key("a=b (c)/d") == "a_b _c_/d"
    json.dumps(abc_report.to_dict())  # JSON-able artifact
