r"""Distances between two samples: the energy distance and the sliced Wasserstein distance.

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
  Imaging Vis. 51 (2015) 22–45), and :func:`sliced_wasserstein_bootstrap`, its sampling
  spread given the second set.

A distance between two finite samples is positive even when the laws agree: read it against
the MC-vs-MC noise floor (:mod:`prnf_core.validation.noise_floor`).

>>> import numpy as np
>>> x = np.arange(5.0)[:, None]
>>> sliced_wasserstein(x, x + 0.25, p=1), energy_distance(x, x)
(0.25, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prnf_core.arrays import (
    DEFAULT_MAX_N,
    ArrayLike,
    as_samples,
    subsample,
    torch_threads,
)


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

    Cost: O(n·m·d) time with O(block²) memory (measured times: ``benchmarks/README.md``). Sets
    larger than ``max_n`` are subsampled without replacement, deterministically from ``seed``
    (``max_n=None``: never). ``num_threads``: torch intra-op threads for the computation (the
    process setting is restored afterwards; ``None``: leave it). Default 1: more threads gain
    little and lose much whenever another process holds a core (spinning OpenMP threads).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1)) + 1.0
    >>> round(energy_distance(x, y, unbiased=True), 1)  # exact: 0.542 for N(0,1) vs N(1,1)
    0.5
    """
    a, b = as_samples(a=a, b=b)
    if max_n is not None:
        rng = np.random.default_rng(seed)
        a, b = subsample(a, max_n, rng), subsample(b, max_n, rng)
    terms = _EnergyTerms(unbiased, block, device)
    centre = np.concatenate([a, b]).mean(axis=0)
    ta, tb = terms.tensor(a, centre), terms.tensor(b, centre)
    with torch_threads(num_threads):
        value = 2.0 * terms.cross(ta, tb) - terms.within(0, ta) - terms.within(1, tb)
    return value if unbiased else max(value, 0.0)

def energy_distances_to(ref: np.ndarray, samples: Sequence[np.ndarray], *,
                        device: str | torch.device | None = None,
                        num_threads: int | None = 1) -> list[float]:
    """V-statistic energy distances (:func:`energy_distance`, ``unbiased=False``) of each of
    ``samples`` to the one reference ``ref``, all centred on ``ref``'s mean: the reference's
    within-sample term is computed once. No subsampling (the caller's)."""
    terms = _EnergyTerms(False, 512, device)
    centre = ref.mean(axis=0)
    t_ref = terms.tensor(ref, centre)
    tensors = [terms.tensor(x, centre) for x in samples]
    with torch_threads(num_threads):
        w_ref = terms.within(-1, t_ref)
        return [max(2.0 * terms.cross(t, t_ref) - terms.within(i, t) - w_ref, 0.0)
                for i, t in enumerate(tensors)]


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
    theta = np.random.default_rng(seed).standard_normal((n_projections, dim))
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
    a, b = as_samples(a=a, b=b)
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
    rng = np.random.default_rng(boot_seed)
    out = np.empty(n_boot)
    for i in range(n_boot):
        pa = np.sort(projected[rng.integers(0, len(a), len(a))], axis=0)[ia]
        out[i] = float((weights @ np.abs(pa - pb) ** p).sum()) / len(theta)
    return out ** (1.0 / p)


__all__ = ["energy_distance", "energy_distances_to", "random_directions", "sliced_wasserstein",
           "sliced_wasserstein_bootstrap"]
