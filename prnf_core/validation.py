r"""Validation of a surrogate's samples of :math:`X_T` against Monte Carlo (MC) references.

For one test initial distribution :math:`p_0` the inputs are the surrogate samples ``sur`` and
*two independent* MC sets ``mc_a`` and ``mc_b`` of the same law (e.g. two halves of the
reference simulation). Every number below is plain numpy/torch; the MLflow and Prefect layers
only log what :meth:`ValidationReport.as_flat_metrics` returns.

Distances between samples
    * :func:`energy_distance`: Székely & Rizzo's energy distance
      :math:`\mathcal E(P, Q) = 2\,\mathbb E|X-Y| - \mathbb E|X-X'| - \mathbb E|Y-Y'|`
      (G. J. Székely, M. L. Rizzo, "Energy statistics: a class of statistics based on
      distances", J. Stat. Plann. Inference 143 (2013) 1249–1272). :math:`\mathcal E \ge 0`
      with equality iff P = Q; :math:`\sqrt{\mathcal E}` is a metric. The value returned is
      :math:`\mathcal E` itself (not its square root).
    * :func:`sliced_wasserstein`: :math:`\mathrm{SW}_p(P, Q) = \big(\mathbb E_θ\,
      W_p^p(θ_\#P, θ_\#Q)\big)^{1/p}` over uniform random unit directions θ, each 1-D
      :math:`W_p` computed exactly from the empirical quantile functions (N. Bonneel, J. Rabin,
      G. Peyré, H. Pfister, "Sliced and Radon Wasserstein barycenters of measures", J. Math.
      Imaging Vis. 51 (2015) 22–45).

Noise floor
    A distance between two finite samples is positive even when the laws agree. The
    :func:`noise_floor_ratio` divides :math:`D(\text{sur}, \text{mc}_a)` by
    :math:`D(\text{mc}_b, \text{mc}_a)`, the same distance between two independent MC sets of the
    same size: a ratio ≈ 1 means "indistinguishable from MC at this sample size".

Classifier two-sample test
    :func:`classifier_two_sample_test` (D. Lopez-Paz, M. Oquab, "Revisiting classifier
    two-sample tests", ICLR 2017): the held-out accuracy of a small MLP trained to tell
    surrogate from MC; 0.5 means indistinguishable, a binomial null (exact or conservative)
    gives the bound.

Moments, quantiles and quantities of interest (QoIs)
    :func:`moment_quantile_errors`, :func:`runaway_rate`, :func:`region_probability` and the
    registry :data:`QOIS` (problem name -> QoI function), each with standard errors.

Cost
    :func:`break_even`: number of initial distributions after which training plus surrogate
    sampling is cheaper than Monte Carlo.

Example (two samples of one law, a shifted surrogate):

>>> import numpy as np
>>> from prnf_core.validation import validate_samples
>>> rng = np.random.default_rng(0)
>>> mc_a, mc_b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
>>> good, bad = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2)) + [0.5, 0.0]
>>> r_good = validate_samples(None, good, mc_a, mc_b, law="same", seed=0)
>>> r_bad = validate_samples(None, bad, mc_a, mc_b, law="shifted", seed=0)
>>> bool(r_good.energy.ratio < 2.0), bool(r_bad.energy.ratio > 10.0)
(True, True)
>>> bool(r_bad.c2st.accuracy > r_bad.c2st.null_high)
True
>>> from prnf_core.validation import ValidationReport
>>> report = ValidationReport(problem="toy", results=[r_good, r_bad])
>>> sorted(k for k in report.as_flat_metrics() if k.endswith("energy_ratio"))
['val/same/energy_ratio', 'val/shifted/energy_ratio']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

ArrayLike = np.ndarray | Sequence[Sequence[float]] | torch.Tensor
QUANTILE_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.5, 0.95, 0.99)
DEFAULT_MAX_N = 20_000
RUNAWAY_P_STAR = 1.75
ABC_BOX: tuple[tuple[float, float], tuple[float, float]] = (
    (0.0, math.pi), (2.0 * math.pi, 3.0 * math.pi),
)


# -- input handling ---------------------------------------------------------------------------
def _as_2d(x: ArrayLike, name: str, allow_nonfinite: bool = False) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: need a non-empty (n, d) array, got shape {arr.shape}")
    if not allow_nonfinite and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _same_dim(*arrays: tuple[str, np.ndarray]) -> None:
    dims = {name: a.shape[1] for name, a in arrays}
    if len(set(dims.values())) != 1:
        raise ValueError(f"samples must have the same dimension d, got {dims}")


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``x`` without replacement (``x`` itself when it has at most ``n``)."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def _rng(seed: int | np.random.SeedSequence) -> np.random.Generator:
    return np.random.default_rng(seed)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads, then restore the setting.

    ``None`` leaves the setting alone. The setting is process-wide: torch work in other threads
    of the process is affected while the block runs.
    """
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- energy distance --------------------------------------------------------------------------
def _pair_sum(x: torch.Tensor, y: torch.Tensor | None, block: int) -> float:
    r""":math:`\sum_{i,j}\|x_i - y_j\|` in blocks; ``y=None``: over ordered pairs of ``x``.

    Squared distances :math:`|x|^2 + |y|^2 - 2x\cdot y` come out of one matrix product of the
    augmented rows :math:`[x, |x|^2, 1]` and :math:`[-2y, 1, |y|^2]`, in float64 on centred data
    (callers centre), so at most a ``block × block`` buffer is alive. For the within-sample sum
    only blocks on or above the diagonal are formed (symmetry) and the exact zeros of the
    diagonal are restored.
    """
    sym = y is None
    y = x if y is None else y
    ones_x = torch.ones(len(x), 1, dtype=x.dtype, device=x.device)
    ones_y = torch.ones(len(y), 1, dtype=y.dtype, device=y.device)
    xa = torch.cat([x, (x * x).sum(1, keepdim=True), ones_x], dim=1)
    ya = torch.cat([-2.0 * y, ones_y, (y * y).sum(1, keepdim=True)], dim=1)
    buf = torch.empty(block, block, dtype=x.dtype, device=x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), block):
        xi = xa[i:i + block]
        for j in range(i if sym else 0, len(y), block):
            yj = ya[j:j + block]
            out = buf[:len(xi), :len(yj)]
            torch.mm(xi, yj.T, out=out)
            out.clamp_(min=0.0).sqrt_()
            if sym and i == j:
                out.fill_diagonal_(0.0)
            total += out.sum(dtype=torch.float64) * (2.0 if sym and j != i else 1.0)
    return float(total)


class _EnergyTerms:
    """Within-sample mean distances, cached so a reference set's term is computed once."""

    def __init__(self, unbiased: bool, block: int, device: str | torch.device | None) -> None:
        self.unbiased, self.block = unbiased, block
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._within: dict[int, float] = {}

    def tensor(self, x: np.ndarray, centre: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x - centre, dtype=torch.float64, device=self.device)

    def within(self, key: int, x: torch.Tensor) -> float:
        if key not in self._within:
            n = len(x)
            denom = n * (n - 1) if self.unbiased else n * n
            self._within[key] = _pair_sum(x, None, self.block) / denom if denom else 0.0
        return self._within[key]

    def cross(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return _pair_sum(x, y, self.block) / (len(x) * len(y))


def energy_distance(a: ArrayLike, b: ArrayLike, *, unbiased: bool = False,
                    max_n: int | None = DEFAULT_MAX_N, seed: int = 0, block: int = 512,
                    device: str | torch.device | None = None,
                    num_threads: int | None = 1) -> float:
    r"""Energy distance :math:`\mathcal E(P, Q)` between samples ``a`` (n, d) and ``b`` (m, d).

    .. math::
        \hat{\mathcal E} = \frac{2}{nm}\sum_{i,j}\|a_i - b_j\|
            - \frac{1}{N_a}\sum_{i\ne i'}\|a_i - a_{i'}\|
            - \frac{1}{N_b}\sum_{j\ne j'}\|b_j - b_{j'}\|

    * ``unbiased=False`` (default): the **V-statistic**, :math:`N_a = n^2`, :math:`N_b = m^2`.
      It is the energy distance between the two empirical measures, hence **never negative**;
      under :math:`P = Q` its mean is :math:`(1/n + 1/m)\,\mathbb E\|X - X'\|` (a positive
      finite-sample bias), which is why :func:`noise_floor_ratio` uses it.
    * ``unbiased=True``: the **U-statistic**, :math:`N_a = n(n-1)`, :math:`N_b = m(m-1)`;
      unbiased for :math:`\mathcal E`, so about 0 (and possibly slightly negative) when P = Q.

    Székely & Rizzo (2013), see the module doc. Euclidean norm on the coordinates as given
    (standardize them first if their units differ; :func:`validate_samples` does).

    Cost: O(n·m·d) time with O(block²) memory; about 1.1 s per 4·10⁸ pairs on one CPU core in
    float64, so a 20k × 20k comparison (cross term plus the two halved within terms) takes about
    2 s. Sets larger than ``max_n`` are subsampled without replacement, deterministically from
    ``seed`` (``max_n=None``: never). ``num_threads``: torch intra-op threads for the
    computation (the process setting is restored afterwards; ``None``: leave it). Default 1: on
    a 2-core machine 2 threads were at best 1.6× faster, and 10–60× slower whenever another
    process held a core (spinning OpenMP threads).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1)) + 1.0
    >>> round(energy_distance(x, y, unbiased=True), 1)  # exact: 0.542 for N(0,1) vs N(1,1)
    0.5
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    _same_dim(("a", a), ("b", b))
    if max_n is not None:
        rng = _rng(seed)
        a, b = _subsample(a, max_n, rng), _subsample(b, max_n, rng)
    terms = _EnergyTerms(unbiased, block, device)
    centre = np.concatenate([a, b]).mean(axis=0)
    ta, tb = terms.tensor(a, centre), terms.tensor(b, centre)
    with torch_threads(num_threads):
        value = 2.0 * terms.cross(ta, tb) - terms.within(0, ta) - terms.within(1, tb)
    return value if unbiased else max(value, 0.0)


# -- sliced Wasserstein -----------------------------------------------------------------------
def _quantile_coupling(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights and order-statistic indices that pair the quantile functions of n and m points.

    The empirical quantile functions are step functions with jumps at i/n and j/m; on each piece
    of the merged partition of (0, 1] both are constant. Breakpoints are kept as integers over
    the common denominator n·m, so equal fractions merge exactly.
    """
    cuts = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m,
                      np.arange(1, m + 1, dtype=np.int64) * n)
    prev = np.concatenate([[0], cuts[:-1]])
    mid2 = prev + cuts  # twice the midpoint, in units of 1/(n m)
    idx_a = np.minimum(mid2 // (2 * m), n - 1)
    idx_b = np.minimum(mid2 // (2 * n), m - 1)
    return (cuts - prev) / (n * m), idx_a, idx_b


def random_directions(n_projections: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(n_projections, dim)`` unit vectors, uniform on the sphere (normalized Gaussians)."""
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    theta = _rng(seed).standard_normal((n_projections, dim))
    norms = np.linalg.norm(theta, axis=1, keepdims=True)
    return theta / np.where(norms > 0, norms, 1.0)


def sliced_wasserstein(a: ArrayLike, b: ArrayLike, n_projections: int = 128, seed: int = 0,
                       *, p: int = 2, chunk: int = 32) -> float:
    r"""Sliced Wasserstein distance :math:`\mathrm{SW}_p` between samples ``a`` and ``b``.

    .. math::
        \mathrm{SW}_p(P, Q) = \Big(\frac1L\sum_{l=1}^{L} W_p^p(θ_{l\#}P, θ_{l\#}Q)\Big)^{1/p},
        \qquad W_p^p(μ, ν) = \int_0^1 |F_μ^{-1}(t) - F_ν^{-1}(t)|^p\,dt

    with L = ``n_projections`` directions θ uniform on the unit sphere (fixed by ``seed``; in
    1-D the directions are ±1 and the result is the exact :math:`W_p`). Default **p = 2**
    (Bonneel et al. 2015); ``p=1`` gives sliced :math:`W_1`. The 1-D distances are exact for the
    empirical measures: for n = m the sorted projections are paired, for n ≠ m the two empirical
    quantile functions are integrated over the merged partition of (0, 1] (quantile matching),
    O((n + m) log(n + m)) per direction, ``chunk`` directions at a time.

    A pure shift v of the law gives :math:`\mathrm{SW}_2 = \|v\|/\sqrt d` (as
    :math:`\mathbb E_θ (θ\cdot v)^2 = \|v\|^2/d`) and, in 1-D, :math:`W_1 = W_2 = |v|`.

    >>> import numpy as np
    >>> x = np.arange(5.0)[:, None]
    >>> sliced_wasserstein(x, x + 0.25, p=1)
    0.25
    """
    a, b, theta, (weights, ia, ib) = _sw_setup(a, b, n_projections, seed, p)
    total = 0.0
    for start in range(0, len(theta), chunk):
        th = theta[start:start + chunk]
        pa = np.sort(a @ th.T, axis=0)[ia]
        pb = np.sort(b @ th.T, axis=0)[ib]
        total += float((weights @ np.abs(pa - pb) ** p).sum())
    return (total / len(theta)) ** (1.0 / p)


def _sw_setup(a: ArrayLike, b: ArrayLike, n_projections: int, seed: int, p: int):
    """What every sliced-Wasserstein computation of ``a`` against ``b`` starts from: the
    checked samples, the directions and the quantile coupling of the two sample sizes."""
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    _same_dim(("a", a), ("b", b))
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    # In 1-D every direction is ±1 and W_p is invariant under the sign: compute it once.
    theta = (np.ones((1, 1)) if a.shape[1] == 1
             else random_directions(n_projections, a.shape[1], seed))
    n, m = len(a), len(b)
    coupling = ((np.full(n, 1.0 / n), np.arange(n), np.arange(n)) if n == m
                else _quantile_coupling(n, m))
    return a, b, theta, coupling


def sliced_wasserstein_bootstrap(a: ArrayLike, b: ArrayLike, n_boot: int,
                                 n_projections: int = 128, seed: int = 0, *, p: int = 2,
                                 boot_seed: int = 0) -> np.ndarray:
    r""":math:`\mathrm{SW}_p(a^*, b)` for ``n_boot`` bootstrap resamples :math:`a^*` of ``a``.

    Rows of ``a`` are drawn with replacement (from ``boot_seed``); ``b`` and the directions
    (from ``seed``, as in :func:`sliced_wasserstein`) stay fixed. The spread of the result is the
    sampling error of :math:`\mathrm{SW}_p(a, b)` *conditional on* ``b``: what differs between
    two surrogates scored against the same MC set. ``b``'s projections are sorted once.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 2))
    >>> sliced_wasserstein_bootstrap(x, x + 1.0, n_boot=3, n_projections=16).shape
    (3,)
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    a, b, theta, (weights, ia, ib) = _sw_setup(a, b, n_projections, seed, p)
    # float32 halves the sort time of every resample; rounding at 1e-7 is far below the spread
    projected = (a @ theta.T).astype(np.float32)
    pb = np.sort(b @ theta.T, axis=0)[ib]
    rng = _rng(boot_seed)
    out = np.empty(n_boot)
    for i in range(n_boot):
        pa = np.sort(projected[rng.integers(0, len(a), len(a))], axis=0)[ia]
        out[i] = float((weights @ np.abs(pa - pb) ** p).sum()) / len(theta)
    return out ** (1.0 / p)


# -- noise floor ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseFloor:
    """A distance to MC, the same distance between two MC sets, and their ratio."""

    distance: str
    value: float  # D(sur, mc_a)
    floor: float  # D(mc_b, mc_a)
    ratio: float  # value / floor
    n: int  # rows of sur and of mc_b used (equal)
    n_ref: int  # rows of mc_a used
    ratio_stderr: float = math.nan  # bootstrap SE of the ratio given the MC sets (nan: not run)


def _ratio(value: float, floor: float) -> float:
    if floor > 0:
        return value / floor
    return math.nan if value == 0 else math.inf


def noise_floor_ratio(sur: ArrayLike, mc_a: ArrayLike, mc_b: ArrayLike,
                      distance: Literal["energy", "sliced_wasserstein"] = "energy", *,
                      seed: int = 0, max_n: int | None = DEFAULT_MAX_N, n_projections: int = 128,
                      p: int = 2, device: str | torch.device | None = None,
                      num_threads: int | None = 1, bootstrap: int = 0) -> NoiseFloor:
    r"""Distance of the surrogate to MC in units of the MC-vs-MC noise floor.

    .. math::
        r = \frac{D(\text{sur}, \text{mc}_a)}{D(\text{mc}_b, \text{mc}_a)}

    ``mc_a`` and ``mc_b`` are independent samples of the MC law. ``sur`` and ``mc_b`` are first
    subsampled (without replacement, from ``seed``) to one common size
    :math:`n = \min(|\text{sur}|, |\text{mc}_b|, \text{max\_n})` and ``mc_a`` to at most
    ``max_n`` rows, and both distances use the same reference ``mc_a`` (and, for sliced
    Wasserstein, the same directions): numerator and denominator then carry the *same*
    finite-sample bias, and under "surrogate law = MC law" they are identically distributed,
    so r scatters around 1 (r ≈ 1: indistinguishable at this sample size; r ≫ 1: the error of
    the surrogate is that many times the MC noise; r < 1 is chance).

    ``distance="energy"`` uses the **V-statistic** of :func:`energy_distance`: it is the energy
    distance of two empirical measures, so the floor is strictly positive (its null mean is
    :math:`(1/n + 1/|\text{mc}_a|)\,\mathbb E\|X - X'\|`) and the ratio is well defined; the
    U-statistic would put a quantity centred at 0 in the denominator. As
    :math:`\mathcal E` is a squared metric, a shift of the law raises r roughly quadratically.
    ``distance="sliced_wasserstein"``: :math:`\mathrm{SW}_p` (a metric; r grows linearly).

    Null distribution: when the surrogate law equals the MC law, ``sur`` and ``mc_b`` are
    exchangeable (same law, same size, compared with the same ``mc_a`` and directions), so r and
    1/r have the same distribution: the median of r is exactly 1 and P[r > 1] = 1/2. The
    spread is not small, because the numerator and the floor are each a degenerate statistic of
    relative spread O(1) (only their scale shrinks with n). Simulated with normal samples,
    n = |mc_a| = 2000 in 2-D and 3-D and 500 in 2-D, 200–300 replicates each (ranges over the
    runs; the 99 % column is itself uncertain by ±15 %):

    ==================  ==========  ==========  ==========  ===============
    distance            5 %         95 %        99 %        P[r ≤ 1.5]
    ==================  ==========  ==========  ==========  ===============
    energy (V-stat.)    0.37–0.49   2.3–2.9     2.9–4.1     0.73–0.79
    sliced W₂           0.71–0.79   1.33–1.44   1.44–1.61   0.97
    W₂ in 1-D, n=2000   0.60–0.65   1.67–1.70   2.2–2.3     0.91
    W₂ in 1-D, n=10⁴    0.63        1.54        1.95        0.93
    ==================  ==========  ==========  ==========  ===============

    In 1-D there is one direction to average over, so the ratio is noisier: a gate "r ≤ 2 for
    every law" fails a perfect 1-D sampler with probability ≈ 1–2 % per law (300 replicates).

    So an energy ratio up to ~3–4 and an SW₂ ratio up to ~1.6 are compatible with "same law",
    and a pass rule "r ≤ t for every one of K laws" fails a perfect surrogate with probability
    1 − P[r ≤ t]^K (energy, t = 1.5, K = 10: about 95 %). The SW ratio has the narrower null
    spread; the energy distance sees the full d-dimensional law rather than 1-D projections.
    Read them together, with the C2ST.

    A zero floor (identical MC sets) gives ``inf`` (or ``nan`` when the value is 0 too).
    ``num_threads``: as in :func:`energy_distance`.

    ``bootstrap=B > 0`` (sliced Wasserstein only) adds ``ratio_stderr``: the standard deviation
    of the ratio over B bootstrap resamples of the ``sur`` rows, the MC sets and directions held
    fixed (:func:`sliced_wasserstein_bootstrap`). It is the standard error of the score
    *conditional on the test sets*, which is what a comparison of two surrogates scored on the
    same test sets needs: the MC noise they share cancels from their difference.
    """
    sur, mc_a, mc_b = _as_2d(sur, "sur"), _as_2d(mc_a, "mc_a"), _as_2d(mc_b, "mc_b")
    _same_dim(("sur", sur), ("mc_a", mc_a), ("mc_b", mc_b))
    rng = _rng(seed)
    n = min(len(sur), len(mc_b), max_n or len(sur))
    sur, mc_b = _subsample(sur, n, rng), _subsample(mc_b, n, rng)
    mc_a = _subsample(mc_a, max_n or len(mc_a), rng)
    if distance == "energy":
        terms = _EnergyTerms(False, 512, device)
        centre = mc_a.mean(axis=0)
        ts, ta, tb = (terms.tensor(x, centre) for x in (sur, mc_a, mc_b))
        with torch_threads(num_threads):
            w_a = terms.within(1, ta)
            value = max(2.0 * terms.cross(ts, ta) - terms.within(0, ts) - w_a, 0.0)
            floor = max(2.0 * terms.cross(tb, ta) - terms.within(2, tb) - w_a, 0.0)
    elif distance == "sliced_wasserstein":
        value = sliced_wasserstein(sur, mc_a, n_projections, seed, p=p)
        floor = sliced_wasserstein(mc_b, mc_a, n_projections, seed, p=p)
    else:
        raise ValueError(f"distance must be 'energy' or 'sliced_wasserstein', got {distance!r}")
    stderr = math.nan
    if bootstrap:
        if distance != "sliced_wasserstein":
            raise ValueError("bootstrap: only the sliced-Wasserstein ratio has a bootstrap SE")
        if bootstrap < 2:
            raise ValueError(f"bootstrap: needs at least 2 resamples, got {bootstrap}")
        boot = sliced_wasserstein_bootstrap(sur, mc_a, bootstrap, n_projections, seed, p=p,
                                            boot_seed=int(rng.integers(2**63)))
        stderr = float(np.std(boot, ddof=1) / floor) if floor > 0 else math.inf
    return NoiseFloor(distance, float(value), float(floor), _ratio(value, floor), n, len(mc_a),
                      stderr)


# -- moments and quantiles --------------------------------------------------------------------
def _moments_and_se(x: np.ndarray, levels: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x)
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1])
    q = np.quantile(x, levels, axis=0)
    mu4 = ((x - mean) ** 4).mean(axis=0)
    var = std**2
    with np.errstate(divide="ignore", invalid="ignore"):
        std_se = np.where(std > 0, np.sqrt(np.maximum(mu4 - var**2, 0.0) / n) / (2 * std), 0.0)
    half = np.sqrt(levels * (1 - levels) / n)
    q_se = 0.5 * (np.quantile(x, np.minimum(levels + half, 1.0), axis=0)
                  - np.quantile(x, np.maximum(levels - half, 0.0), axis=0))
    return {"mean": mean, "std": std, "q": q, "mean_se": std / math.sqrt(n), "std_se": std_se,
            "q_se": q_se}


@dataclass(frozen=True)
class MomentQuantileErrors:
    r"""Per-coordinate errors of the surrogate (surrogate − MC) with standard errors.

    Arrays: ``*_diff`` and ``mc_*`` have shape (d,) for the mean and std and (k, d) for the k
    quantile levels; ``mc_*_se`` are the MC standard errors, ``diff_*_se`` the standard errors of
    the differences (surrogate and MC errors combined, the samples being independent).
    """

    coord_names: tuple[str, ...]
    quantile_levels: tuple[float, ...]
    n_sur: int
    n_mc: int
    mc_mean: np.ndarray
    mc_std: np.ndarray
    mc_quantiles: np.ndarray
    mean_diff: np.ndarray
    std_diff: np.ndarray
    quantile_diff: np.ndarray
    mc_mean_se: np.ndarray
    mc_std_se: np.ndarray
    mc_quantile_se: np.ndarray
    diff_mean_se: np.ndarray
    diff_std_se: np.ndarray
    diff_quantile_se: np.ndarray

    def rows(self) -> list[tuple[str, str, float, float, float]]:
        """``(statistic, coordinate, MC value, surrogate − MC, SE of the difference)`` rows."""
        out = []
        for i, c in enumerate(self.coord_names):
            out.append(("mean", c, self.mc_mean[i], self.mean_diff[i], self.diff_mean_se[i]))
            out.append(("std", c, self.mc_std[i], self.std_diff[i], self.diff_std_se[i]))
            for k, lev in enumerate(self.quantile_levels):
                out.append((quantile_label(lev), c, self.mc_quantiles[k, i],
                            self.quantile_diff[k, i], self.diff_quantile_se[k, i]))
        return [(s, c, float(v), float(d), float(e)) for s, c, v, d, e in out]

    def max_abs_z(self) -> float:
        """Largest |difference| / SE over all statistics and coordinates (nan if none defined)."""
        z = [abs(d) / e for *_, d, e in self.rows() if e > 0]
        return max(z) if z else math.nan


def quantile_label(level: float) -> str:
    """``0.05 -> 'q05'``, ``0.5 -> 'q50'``, ``0.995 -> 'q99.5'``."""
    pct = 100 * level
    return f"q{round(pct):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"


def moment_quantile_errors(sur: ArrayLike, mc: ArrayLike,
                           quantiles: Sequence[float] = QUANTILE_LEVELS,
                           coord_names: Sequence[str] | None = None) -> MomentQuantileErrors:
    r"""Mean, standard deviation and quantile errors per coordinate, surrogate minus MC.

    Estimators: sample mean; sample standard deviation with ``ddof=1``; quantiles with numpy's
    default linear interpolation (Hyndman–Fan type 7).

    Standard errors (asymptotic, computed for each sample from its own data):

    * mean: :math:`s/\sqrt n`;
    * standard deviation (delta method): :math:`\sqrt{(m_4 - s^4)/n}\,/\,(2s)` with
      :math:`m_4` the fourth central sample moment (:math:`s/\sqrt{2n}` for a normal law);
    * q-quantile (distribution-free, order statistics): half the distance between the sample
      quantiles at :math:`q \pm \sqrt{q(1-q)/n}`, which converges to the asymptotic
      :math:`\sqrt{q(1-q)/n}\,/\,f(ξ_q)` without estimating the density f.

    The SE of each difference is :math:`\sqrt{SE_{sur}^2 + SE_{MC}^2}`.

    >>> import numpy as np
    >>> e = moment_quantile_errors(np.arange(1.0, 6.0), np.zeros(5))
    >>> float(e.mean_diff[0]), float(e.quantile_diff[1, 0])  # mean 3; 5 % quantile 1 + 0.05*4
    (3.0, 1.2)
    """
    sur, mc = _as_2d(sur, "sur"), _as_2d(mc, "mc")
    _same_dim(("sur", sur), ("mc", mc))
    levels = np.asarray(quantiles, dtype=float)
    if levels.ndim != 1 or np.any((levels < 0) | (levels > 1)):
        raise ValueError(f"quantiles must be levels in [0, 1], got {quantiles}")
    names = _coord_names(coord_names, sur.shape[1])
    s, m = _moments_and_se(sur, levels), _moments_and_se(mc, levels)
    return MomentQuantileErrors(
        coord_names=names, quantile_levels=tuple(float(v) for v in levels),
        n_sur=len(sur), n_mc=len(mc),
        mc_mean=m["mean"], mc_std=m["std"], mc_quantiles=m["q"],
        mean_diff=s["mean"] - m["mean"], std_diff=s["std"] - m["std"],
        quantile_diff=s["q"] - m["q"],
        mc_mean_se=m["mean_se"], mc_std_se=m["std_se"], mc_quantile_se=m["q_se"],
        diff_mean_se=np.hypot(s["mean_se"], m["mean_se"]),
        diff_std_se=np.hypot(s["std_se"], m["std_se"]),
        diff_quantile_se=np.hypot(s["q_se"], m["q_se"]),
    )


def _coord_names(names: Sequence[str] | None, dim: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"x{i}" for i in range(dim))
    if len(names) != dim:
        raise ValueError(f"coord_names needs {dim} names, got {list(names)}")
    return tuple(str(n) for n in names)


# -- classifier two-sample test ---------------------------------------------------------------
@dataclass(frozen=True)
class C2STResult:
    """Held-out accuracy of a surrogate-vs-MC classifier and its binomial null."""

    accuracy: float
    stderr: float  # sqrt(acc (1 - acc) / n_test)
    n_test: int
    n_train: int
    null_low: float  # exact binomial central (1 - alpha) range of the accuracy under H0
    null_high: float
    p_value: float  # P[Binomial(n_test, 1/2) >= correct], one-sided
    chance: float = 0.5

    @property
    def null_std(self) -> float:
        return 0.5 / math.sqrt(self.n_test)

    @property
    def indistinguishable(self) -> bool:
        return self.accuracy <= self.null_high


def classifier_two_sample_test(sur: ArrayLike, mc: ArrayLike, seed: int = 0, *,
                               test_fraction: float = 0.5, hidden: int = 64, epochs: int = 20,
                               batch_size: int = 256, lr: float = 3e-3,
                               weight_decay: float = 1e-4, max_n: int | None = DEFAULT_MAX_N,
                               alpha: float = 0.05, num_threads: int | None = 1) -> C2STResult:
    r"""Classifier two-sample test (Lopez-Paz & Oquab 2017) of surrogate vs MC samples.

    1. Balance: both sets are subsampled (without replacement, from ``seed``) to
       :math:`n = \min(|\text{sur}|, |\text{mc}|, \text{max\_n})` rows, so chance accuracy is
       exactly 1/2. Labels: surrogate 1, MC 0.
    2. Split: a stratified random ``test_fraction`` of each class is held out.
    3. Classifier: MLP d → ``hidden`` → ``hidden`` → 1 (SiLU), on coordinates standardized
       with the training split's mean and std; Adam (``lr``, ``weight_decay``), binary
       cross-entropy, ``epochs`` passes of minibatches of ``batch_size``; weights and batch
       order fixed by ``seed``.
    4. Held-out accuracy of the rule "predict surrogate iff P > 1/2".

    Null distribution: under H0 (same law) the held-out points are i.i.d. whatever their label,
    so given the trained classifier, which calls a point "surrogate" with some probability π,
    the number of correct predictions is Binomial(k, π) + Binomial(k, 1 − π) with k = n_test/2
    per class: mean n_test/2 and variance 2kπ(1 − π) ≤ n_test/4. The Binomial(n_test, 1/2)
    law used here is therefore exact when π = 1/2 and conservative otherwise. ``null_low`` /
    ``null_high`` is its central 1 − ``alpha`` range divided by n_test
    (≈ 0.5 ± 1.96·0.5/√n_test for ``alpha=0.05``), ``p_value`` the one-sided binomial p-value of
    the observed count, ``stderr`` the binomial standard error
    :math:`\sqrt{\hat a(1-\hat a)/n_{test}}` of the observed accuracy. An accuracy above
    ``null_high`` means the classifier tells the samples apart; how far above measures how
    easily (1.0: perfectly separable).

    Cost: about 1–3 s for 2 × 10k points in 3-D. The network is tiny, so it trains on
    ``num_threads`` torch threads (default 1; the process-wide setting is restored afterwards,
    ``None`` leaves it alone): more threads only add synchronization, and on a busy machine
    2 spinning threads were 15× slower per step than 1.
    """
    sur, mc = _as_2d(sur, "sur"), _as_2d(mc, "mc")
    _same_dim(("sur", sur), ("mc", mc))
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = _rng(seed)
    n = min(len(sur), len(mc), max_n or len(sur))
    sur, mc = _subsample(sur, n, rng), _subsample(mc, n, rng)
    n_test_each = min(max(1, round(test_fraction * n)), n - 1)
    if n_test_each < 1:
        raise ValueError(f"need at least 2 samples of each kind, got {n}")
    perm_s, perm_m = rng.permutation(n), rng.permutation(n)
    x_test = np.concatenate([sur[perm_s[:n_test_each]], mc[perm_m[:n_test_each]]])
    x_train = np.concatenate([sur[perm_s[n_test_each:]], mc[perm_m[n_test_each:]]])
    y_test = np.repeat([1.0, 0.0], n_test_each)
    y_train = np.repeat([1.0, 0.0], n - n_test_each)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def to_t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32)

    xt, yt = to_t((x_train - mean) / std), to_t(y_train)
    xv = to_t((x_test - mean) / std)
    torch_seed = int(rng.integers(2**62))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        d = xt.shape[1]
        net = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(), torch.nn.Linear(hidden, 1),
        )
    gen = torch.Generator().manual_seed(torch_seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with torch_threads(num_threads):
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), batch_size):
                idx = perm[start:start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(net(xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
        with torch.no_grad():
            pred = (net(xv).squeeze(1) > 0).numpy()
    n_test = len(y_test)
    correct = int((pred == (y_test > 0.5)).sum())
    acc = correct / n_test
    null = stats.binom(n_test, 0.5)
    return C2STResult(
        accuracy=acc, stderr=math.sqrt(acc * (1 - acc) / n_test), n_test=n_test,
        n_train=len(y_train),
        null_low=float(null.ppf(alpha / 2)) / n_test,
        null_high=float(null.isf(alpha / 2)) / n_test,
        p_value=float(null.sf(correct - 1)),
    )


# -- quantities of interest -------------------------------------------------------------------
def _binomial_qoi(name: str, hits: np.ndarray) -> dict[str, Any]:
    n = len(hits)
    value = float(hits.mean())
    return {"name": name, "value": value, "stderr": math.sqrt(value * (1 - value) / n)}


def runaway_rate(samples: ArrayLike, p_star: float = RUNAWAY_P_STAR) -> dict[str, Any]:
    r"""Runaway production rate: fraction of particles with momentum :math:`p > p^*` (column 0).

    Returns ``{"name": "runaway_rate", "value": f, "stderr": sqrt(f (1 - f) / n)}`` (binomial
    standard error; 0 when no or every particle runs away, where it understates the
    uncertainty: the one-sided 95 % bound for zero hits is ≈ 3/n).

    >>> runaway_rate([[1.0, 0.0], [2.0, 0.5], [1.75, 0.1], [3.0, -1.0]])["value"]
    0.5
    """
    x = _as_2d(samples, "samples")
    return _binomial_qoi("runaway_rate", x[:, 0] > p_star)


def region_probability(samples: ArrayLike,
                       box: Sequence[Sequence[float]] = ABC_BOX,
                       coords: Sequence[int] = (0, 2),
                       name: str = "region_probability") -> dict[str, Any]:
    r"""Probability that the ``coords`` of a sample lie in the closed ``box``, with its SE.

    Default (abc3d): :math:`P[(X_T, Z_T) \in [0, π] × [2π, 3π]]` (coordinates 0 and 2). The
    flow has no boundary, so :math:`Z_T` is unwrapped and can leave :math:`[0, 2π]`.
    Binomial standard error :math:`\sqrt{P(1-P)/n}`.

    >>> region_probability([[1.0, 0.0, 7.0], [1.0, 0.0, 1.0], [4.0, 0.0, 7.0], [0.0, 9.0, 6.5]])
    {'name': 'region_probability', 'value': 0.5, 'stderr': 0.25}
    """
    x = _as_2d(samples, "samples")
    if len(box) != len(coords):
        raise ValueError(f"box needs one (low, high) per coordinate in {tuple(coords)}, got {box}")
    inside = np.ones(len(x), dtype=bool)
    for (lo, hi), c in zip(box, coords, strict=True):
        inside &= (x[:, c] >= lo) & (x[:, c] <= hi)
    return _binomial_qoi(name, inside)


QoIFunction = Callable[[np.ndarray], dict[str, Any]]
QOIS: dict[str, QoIFunction] = {
    "runaway2d": runaway_rate,
    "abc3d": region_probability,
}
"""Problem name -> quantity of interest ``f(samples) -> {"name", "value", "stderr"}``."""


@dataclass(frozen=True)
class QoIComparison:
    """A quantity of interest on the surrogate and on MC samples."""

    name: str
    sur: float
    sur_stderr: float
    mc: float
    mc_stderr: float

    @property
    def diff(self) -> float:
        return self.sur - self.mc

    @property
    def z(self) -> float:
        """Difference in units of its standard error (independent samples)."""
        se = math.hypot(self.sur_stderr, self.mc_stderr)
        if se > 0:
            return self.diff / se
        return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)


def compare_qoi(fn: QoIFunction, sur: ArrayLike, mc: ArrayLike) -> QoIComparison:
    s, m = fn(_as_2d(sur, "sur")), fn(_as_2d(mc, "mc"))
    return QoIComparison(s["name"], s["value"], s["stderr"], m["value"], m["stderr"])


# -- cost -------------------------------------------------------------------------------------
def break_even(train_seconds: float, surrogate_samples_per_s: float, mc_samples_per_s: float,
               n_samples_per_distribution: int) -> float:
    r"""Number of initial distributions K* beyond which the surrogate is cheaper than MC.

    With N = ``n_samples_per_distribution``, Monte Carlo costs :math:`K N / r_{MC}` for K
    distributions and the surrogate :math:`T_{train} + K N / r_{sur}`, so

    .. math::
        K^* = \frac{T_{train}}{N\,(1/r_{MC} - 1/r_{sur})}

    and the surrogate is cheaper for every :math:`K > K^*` (a real number: round up for a count).
    ``inf`` when the surrogate samples no faster than MC (:math:`r_{sur} \le r_{MC}`).
    For an honest count, ``train_seconds`` includes simulating the training pairs.

    >>> break_even(100.0, 1e6, 1e3, 20_000)  # 100 / (20 - 0.02)
    5.005005005005005
    """
    if train_seconds < 0 or n_samples_per_distribution <= 0:
        raise ValueError("need train_seconds >= 0 and n_samples_per_distribution > 0")
    if mc_samples_per_s <= 0 or surrogate_samples_per_s <= 0:
        raise ValueError("sampling rates must be > 0")
    if surrogate_samples_per_s <= mc_samples_per_s:
        return math.inf
    per_dist_saving = n_samples_per_distribution * (1 / mc_samples_per_s
                                                    - 1 / surrogate_samples_per_s)
    return train_seconds / per_dist_saving


def cost_summary(train_seconds: float, surrogate_samples_per_s: float, mc_samples_per_s: float,
                 n_samples_per_distribution: int) -> dict[str, float]:
    """The inputs of :func:`break_even`, per-distribution costs and K*, as plain floats."""
    n = n_samples_per_distribution
    return {
        "train_seconds": float(train_seconds),
        "surrogate_samples_per_s": float(surrogate_samples_per_s),
        "mc_samples_per_s": float(mc_samples_per_s),
        "n_samples_per_distribution": float(n),
        "surrogate_seconds_per_distribution": n / surrogate_samples_per_s,
        "mc_seconds_per_distribution": n / mc_samples_per_s,
        "break_even_distributions": break_even(train_seconds, surrogate_samples_per_s,
                                               mc_samples_per_s, n),
    }


# -- one test distribution and the report -----------------------------------------------------
@dataclass(frozen=True)
class DistributionValidation:
    """Every validation number for one test initial distribution (``law``)."""

    law: str
    coord_names: tuple[str, ...]
    n_sur: int
    n_mc_a: int
    n_mc_b: int
    energy: NoiseFloor
    sliced_w: NoiseFloor
    c2st: C2STResult | None
    moments: MomentQuantileErrors
    qoi: QoIComparison | None = None
    param: float | None = None
    n_sur_nonfinite: int = 0

    def flat_metrics(self) -> dict[str, float]:
        """This law's metrics, keys relative to ``val/<law>/``."""
        out: dict[str, float] = {
            "n_sur": self.n_sur, "n_mc": self.n_mc_a + self.n_mc_b,
            "nonfinite_frac": self.n_sur_nonfinite / (self.n_sur + self.n_sur_nonfinite),
        }
        for key, nf in (("energy", self.energy), ("sw", self.sliced_w)):
            out[key], out[f"{key}_floor"], out[f"{key}_ratio"] = nf.value, nf.floor, nf.ratio
        if math.isfinite(self.sliced_w.ratio_stderr):
            out["sw_ratio_stderr"] = self.sliced_w.ratio_stderr
        if self.c2st is not None:
            out.update({"c2st_acc": self.c2st.accuracy, "c2st_stderr": self.c2st.stderr,
                        "c2st_null_high": self.c2st.null_high,
                        "c2st_pvalue": self.c2st.p_value})
        if self.qoi is not None:
            q = self.qoi
            out.update({f"{q.name}_sur": q.sur, f"{q.name}_sur_stderr": q.sur_stderr,
                        f"{q.name}_mc": q.mc, f"{q.name}_mc_stderr": q.mc_stderr,
                        f"{q.name}_z": q.z})
        for stat, coord, _, diff, se in self.moments.rows():
            out[f"{stat}_diff/{coord}"] = diff
            out[f"{stat}_diff_se/{coord}"] = se
        out["moments_max_abs_z"] = self.moments.max_abs_z()
        if self.param is not None:
            out["param"] = self.param
        return {k: float(v) for k, v in out.items()}


_METRIC_SAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(name: str) -> str:
    """``name`` with characters MLflow rejects in metric keys replaced by ``_``."""
    return _METRIC_SAFE.sub("_", name)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


@dataclass
class ValidationReport:
    """Validation results of one surrogate on several test initial distributions."""

    problem: str
    results: list[DistributionValidation] = field(default_factory=list)
    cost: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, result: DistributionValidation) -> None:
        if any(r.law == result.law for r in self.results):
            raise ValueError(f"law {result.law!r} is already in the report")
        self.results.append(result)

    def as_flat_metrics(self) -> dict[str, float]:
        """``{"val/<law>/<metric>": float}`` for MLflow (law names made key-safe), plus
        ``cost/<name>`` when a cost summary is attached."""
        out: dict[str, float] = {}
        for r in self.results:
            law = metric_key(r.law)
            out.update({f"val/{law}/{k}": v for k, v in r.flat_metrics().items()})
        for k, v in (self.cost or {}).items():
            out[f"cost/{metric_key(k)}"] = float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (arrays as lists) for an artifact."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [plain(x) for x in v]
            if isinstance(v, np.generic):
                return v.item()
            return v

        return plain({"problem": self.problem, "results": [asdict(r) for r in self.results],
                      "cost": self.cost, "meta": self.meta})

    def to_markdown(self) -> str:
        """A summary table (one row per law), the moment/quantile table and the cost table."""
        lines = [f"# Validation: {_cell(self.problem)}", "",
                 "Ratios: distance to MC divided by the MC-vs-MC noise floor (≈ 1: "
                 "indistinguishable at this sample size). C2ST: held-out accuracy of a "
                 "surrogate-vs-MC classifier (0.5: indistinguishable; null range in brackets).",
                 ""]
        qoi_names = sorted({r.qoi.name for r in self.results if r.qoi is not None})
        head = ["law", "param", "n_sur", "n_mc", "energy", "energy floor", "energy ratio",
                "SW", "SW floor", "SW ratio", "C2ST acc", "C2ST null"]
        for q in qoi_names:
            head += [f"{q} (surrogate)", f"{q} (MC)", f"{q} z"]
        head.append("moments max abs z")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.results:
            row = [_cell(r.law), _fmt(r.param), str(r.n_sur), str(r.n_mc_a + r.n_mc_b),
                   _fmt(r.energy.value), _fmt(r.energy.floor), _fmt(r.energy.ratio, 2),
                   _fmt(r.sliced_w.value), _fmt(r.sliced_w.floor), _sw_ratio_cell(r.sliced_w)]
            if r.c2st is not None:
                row += [f"{r.c2st.accuracy:.3f} ± {r.c2st.stderr:.3f}",
                        f"[{r.c2st.null_low:.3f}, {r.c2st.null_high:.3f}]"]
            else:
                row += ["–", "–"]
            for q in qoi_names:
                if r.qoi is not None and r.qoi.name == q:
                    row += [f"{_fmt(r.qoi.sur, 4)} ± {_fmt(r.qoi.sur_stderr, 2)}",
                            f"{_fmt(r.qoi.mc, 4)} ± {_fmt(r.qoi.mc_stderr, 2)}",
                            _fmt(r.qoi.z, 2)]
                else:
                    row += ["–", "–", "–"]
            row.append(_fmt(r.moments.max_abs_z(), 2))
            lines.append("| " + " | ".join(row) + " |")
        if self.results:
            lines += ["", "## Moments and quantiles (surrogate − MC, ± SE of the difference)", ""]
            stats_ = [s for s, c, *_ in self.results[0].moments.rows()
                      if c == self.results[0].coord_names[0]]
            lines += ["| law | coordinate | " + " | ".join(stats_) + " |",
                      "|" + "---|" * (len(stats_) + 2)]
            for r in self.results:
                table: dict[str, dict[str, str]] = {}
                for s, c, _, d, e in r.moments.rows():
                    table.setdefault(c, {})[s] = f"{_fmt(d)} ± {_fmt(e, 2)}"
                for c in r.coord_names:
                    lines.append(f"| {_cell(r.law)} | {_cell(c)} | "
                                 + " | ".join(table[c].get(s, "–") for s in stats_) + " |")
        if self.cost:
            lines += ["", "## Cost", "", "| quantity | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_fmt(v, 4)} |" for k, v in self.cost.items()]
        return "\n".join(lines) + "\n"


def _sw_ratio_cell(nf: NoiseFloor) -> str:
    if math.isfinite(nf.ratio_stderr):
        return f"{_fmt(nf.ratio, 3)} ± {_fmt(nf.ratio_stderr, 2)}"
    return _fmt(nf.ratio, 2)


def _problem_coord_names(problem: str | None, dim: int) -> tuple[str, ...]:
    if problem is not None:
        from prnf_core.problems import list_problems

        factory = list_problems().get(problem)
        if factory is not None:
            try:
                names = tuple(factory().coord_names)
            except Exception:  # a user problem with required parameters
                names = ()
            if len(names) == dim:
                return names
    return _coord_names(None, dim)


def validate_samples(problem: str | None, sur_samples: ArrayLike, mc_a: ArrayLike,
                     mc_b: ArrayLike, *, law: str = "test",
                     coord_names: Sequence[str] | None = None, param: float | None = None,
                     seed: int = 0, max_n: int | None = DEFAULT_MAX_N,
                     n_projections: int = 128, standardize: bool = True, c2st: bool = True,
                     c2st_options: Mapping[str, Any] | None = None,
                     qoi: QoIFunction | None = None, bootstrap: int = 0
                     ) -> DistributionValidation:
    r"""All validation numbers for one test initial distribution.

    Args:
        problem: Registered problem name: selects the QoI in :data:`QOIS` and the coordinate
            names; ``None`` or an unknown name: no QoI, names ``x0, x1, ...``.
        sur_samples: Surrogate samples of :math:`X_T`, (n, d). Non-finite rows (a failure of
            the surrogate) are dropped and counted in ``n_sur_nonfinite``.
        mc_a, mc_b: Two independent MC sets of the same law (finite).
        law: Name of the test distribution (a key of the report and of the metric names).
        param: The distribution's parameter, if any (e.g. the temperature), for plots.
        standardize: Compute the distances after z-scoring every set with ``mc_a``'s
            per-coordinate mean and standard deviation, so coordinates in different units
            weigh alike (the C2ST standardizes on its own).
        qoi: Overrides the registry's QoI function.
        bootstrap: Resamples for the standard error of the sliced-Wasserstein ratio
            (:func:`noise_floor_ratio`); 0: none.

    What is computed: energy and sliced-W₂ noise-floor ratios
    (:func:`noise_floor_ratio`: sur vs ``mc_a``, floor ``mc_b`` vs ``mc_a``); the C2ST of the
    surrogate against the pooled MC set (``mc_a`` ∪ ``mc_b``); moment/quantile errors and the
    QoI against the pooled MC set (the more precise reference). Seeds of the parts derive from
    ``seed``.
    """
    sur = _as_2d(sur_samples, "sur_samples", allow_nonfinite=True)
    a, b = _as_2d(mc_a, "mc_a"), _as_2d(mc_b, "mc_b")
    _same_dim(("sur_samples", sur), ("mc_a", a), ("mc_b", b))
    finite = np.isfinite(sur).all(axis=1)
    n_bad = int((~finite).sum())
    sur = sur[finite]
    if len(sur) < 2:
        raise ValueError(f"sur_samples: fewer than 2 finite rows (of {len(finite)})")
    names = (_coord_names(coord_names, sur.shape[1]) if coord_names is not None
             else _problem_coord_names(problem, sur.shape[1]))
    s_energy, s_sw, s_c2st = (int(s.generate_state(1)[0])
                              for s in np.random.SeedSequence(seed).spawn(3))
    if standardize:
        loc, scale = a.mean(axis=0), a.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        zs, za, zb = ((x - loc) / scale for x in (sur, a, b))
    else:
        zs, za, zb = sur, a, b
    energy = noise_floor_ratio(zs, za, zb, "energy", seed=s_energy, max_n=max_n)
    sw = noise_floor_ratio(zs, za, zb, "sliced_wasserstein", seed=s_sw, max_n=max_n,
                           n_projections=n_projections, bootstrap=bootstrap)
    pooled = np.concatenate([a, b])
    c2st_result = (classifier_two_sample_test(sur, pooled, s_c2st, max_n=max_n,
                                              **dict(c2st_options or {})) if c2st else None)
    moments = moment_quantile_errors(sur, pooled, coord_names=names)
    qoi_fn = qoi if qoi is not None else QOIS.get(problem or "")
    qoi_result = compare_qoi(qoi_fn, sur, pooled) if qoi_fn is not None else None
    return DistributionValidation(
        law=law, coord_names=names, n_sur=len(sur), n_mc_a=len(a), n_mc_b=len(b),
        energy=energy, sliced_w=sw, c2st=c2st_result, moments=moments, qoi=qoi_result,
        param=None if param is None else float(param), n_sur_nonfinite=n_bad,
    )


__all__ = [
    "ABC_BOX",
    "QOIS",
    "QUANTILE_LEVELS",
    "C2STResult",
    "DistributionValidation",
    "MomentQuantileErrors",
    "NoiseFloor",
    "QoIComparison",
    "ValidationReport",
    "break_even",
    "classifier_two_sample_test",
    "compare_qoi",
    "cost_summary",
    "energy_distance",
    "metric_key",
    "moment_quantile_errors",
    "noise_floor_ratio",
    "quantile_label",
    "random_directions",
    "region_probability",
    "runaway_rate",
    "sliced_wasserstein",
    "sliced_wasserstein_bootstrap",
    "torch_threads",
    "validate_samples",
]
