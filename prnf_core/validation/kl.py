r"""Exact Kullback–Leibler divergence of a surrogate, for problems with an exact transition density
(``bm1d``, ``ou``), and a check of the surrogate's sampler against exact draws.

.. math::
    \mathrm{KL}(p_T \,\|\, q_T) = \mathbb{E}_{y\sim p_T}\big[\log p_T(y) - \log q_T(y)\big],

    p_T(y) = \mathbb{E}_{x_0\sim p_0}\,p(y\mid x_0),\quad
    q_T(y) = \mathbb{E}_{x_0\sim p_0}\,q(y\mid x_0)

estimated with ``n_y`` exact draws :math:`y \sim p_T` and one shared set of ``n_x0`` draws of
:math:`x_0` for both mixtures (their Monte Carlo errors largely cancel; S. Kullback,
R. A. Leibler, "On information and sufficiency", Ann. Math. Stat. 22 (1951) 79–86).

The standard error has both sources: the spread over y, and the error of the shared x0 set,
which every y sees and which the spread over y therefore misses (alone it was 1.3× to 2.3×
too small in replicate runs).
The second is the delta method: a draw :math:`x_0^{(k)}` moves :math:`\log p_T(y)` by its
influence :math:`K w^p_k(y) - 1`, :math:`w^p_k(y) = p(y\mid x_0^{(k)}) / \sum_j p(y\mid x_0^{(j)})`
(and :math:`\log q_T` likewise), so

.. math::
    \mathrm{SE}^2 = \frac{\mathrm{Var}_y[\log \hat p_T(y) - \log \hat q_T(y)]}{n_y}
    + \frac{\mathrm{Var}_k[h_k]}{n_{x_0}}, \qquad
    h_k = \frac{n_{x_0}}{n_y} \sum_y \big(w^p_k(y) - w^q_k(y)\big).

>>> import numpy as np
>>> from prnf_core.problems import get_problem
>>> ou = get_problem("ou", dim=1)
>>> x0 = np.zeros((3, 1))
>>> lp = exact_mixture_log_prob(ou, sample_exact(ou, x0, 0.5, np.random.default_rng(0)), x0, 0.5)
>>> lp.shape
(3,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import ks_2samp

from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.sde import SDE
from prnf_core.validation.noise_floor import noise_floor_ratio

if TYPE_CHECKING:
    from prnf_core.models.base import ConditionalSampler


#: Exact draws of X_T, and draws of x0 for both mixtures, of an exact KL by default.
KL_SAMPLES = 2000


@dataclass(frozen=True)
class KLEstimate:
    kl: float
    stderr: float
    n_y: int
    n_x0: int


def exact_mixture_log_prob(sde: SDE, y: np.ndarray, x0_samples: np.ndarray, t: float,
                           block: int = 2**20, with_shares: bool = False
                           ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r""":math:`\log \frac1K\sum_k p(y\mid x_0^{(k)})` with the exact transition, shape ``(n,)``;
    ``with_shares`` as in :meth:`ConditionalSampler.mixture_log_prob
    <prnf_core.models.base.ConditionalSampler.mixture_log_prob>`."""
    k = len(x0_samples)
    rows = max(1, block // k)
    out = []
    shares = np.zeros(k)
    for start in range(0, len(y), rows):
        yb = y[start:start + rows]
        lp = sde.transition_logpdf(np.repeat(yb, k, axis=0), np.tile(x0_samples, (len(yb), 1)), t)
        lp = lp.reshape(len(yb), k)
        norm = logsumexp(lp, axis=1, keepdims=True)
        out.append(norm[:, 0] - math.log(k))
        if with_shares:
            shares += np.exp(lp - norm).sum(axis=0)
    return (np.concatenate(out), shares) if with_shares else np.concatenate(out)


def sample_exact(sde: SDE, x0: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """Exact draws of ``X_t`` given each row of ``x0`` (Gaussian transitions)."""
    mean, cov = sde.transition_mean_cov(x0, t)
    return mean + rng.standard_normal(mean.shape) @ np.linalg.cholesky(cov).T


def exact_kl(sde: SDE, model: ConditionalSampler, initial: InitialSpec | dict | str,
             t: float | None = None, n_y: int = KL_SAMPLES, n_x0: int = KL_SAMPLES,
             seed: int = 0) -> KLEstimate:
    """KL(p_T || q_T) of ``model`` against the exact law under ``initial`` (module doc).

    A model conditioned on time and SDE parameters (``model.conditioning``) is asked for the
    law at this ``t`` and at ``sde``'s own values of its conditioned parameters: pass the SDE
    at the parameters to check (``get_problem("ou1d_rate", mu=1.3)``).
    """
    spec = parse_initial(initial)
    t = sde.t_end if t is None else t
    rng = np.random.default_rng(seed)
    x0_mix = spec.sample(n_x0, rng)
    y = sample_exact(sde, spec.sample(n_y, rng), t, rng)
    log_p, shares_p = exact_mixture_log_prob(sde, y, x0_mix, t, with_shares=True)
    with torch.no_grad():
        log_q, shares_q = model.mixture_log_prob(y, x0_mix, **condition_of(model, sde, t),
                                                 with_shares=True)
        log_q, shares_q = log_q.double().cpu().numpy(), shares_q.cpu().numpy()
    diff = log_p - log_q
    # the influence of each shared x0 draw on the estimate (module doc): mean 0 by construction
    influence = n_x0 / n_y * (shares_p - shares_q)
    variance = diff.var(ddof=1) / n_y + influence.var(ddof=1) / n_x0
    return KLEstimate(float(diff.mean()), float(math.sqrt(variance)), n_y, n_x0)


def condition_of(model: ConditionalSampler, sde: SDE, t: float) -> dict[str, Any]:
    """The keyword condition (``t=``, ``params=``) under which a conditioned ``model`` gives
    the law of ``sde`` at time ``t``; empty for a model of one horizon and fixed parameters."""
    box = getattr(model, "conditioning", None)
    if box is None:
        return {}
    condition: dict[str, Any] = {"t": float(t)} if box.time is not None else {}
    if box.params:
        condition["params"] = {name: float(sde.params[name]) for name in box.params}
    return condition


@dataclass(frozen=True)
class SampleCheck:
    """How the samples of ``g`` compare with exact draws of :math:`X_T` (1-D and up)."""

    sw_ratio: float
    """Sliced-W₂ of (g samples, exact set A) over that of (exact set B, exact set A)."""
    ks_statistic: float
    """Largest 1st-coordinate KS distance between g samples and exact set A."""
    ks_pvalue: float
    n: int


def exact_sample_check(sde: SDE, model: ConditionalSampler, initial: InitialSpec | dict | str,
                       n: int = 10_000, seed: int = 0, t: float | None = None) -> SampleCheck:
    """Check the sampler ``g`` (not the density ``f``) against exact draws of :math:`X_T`.

    The exact KL scores the density of ``f``; a pseudo-reversible flow samples with ``g``, and
    the two can disagree when the reversibility weight is too small. This compares ``n``
    samples of ``g`` with two independent sets of ``n`` exact draws: the sliced-Wasserstein
    ratio to the exact-vs-exact noise floor (≈ 1 for a perfect sampler) and a two-sample KS
    test on the first coordinate.
    """
    spec = parse_initial(initial)
    t = sde.t_end if t is None else t
    s_model, s_a, s_b, s_ratio = np.random.SeedSequence(seed).spawn(4)
    with torch.no_grad():
        _, y_g = model.sample_initial(spec, n, seed=int(s_model.generate_state(1)[0]),
                                      **condition_of(model, sde, t))
    exact = []
    for s in (s_a, s_b):
        rng = np.random.default_rng(s)
        exact.append(sample_exact(sde, spec.sample(n, rng), t, rng))
    ratio = noise_floor_ratio(y_g, exact[0], exact[1], "sliced_wasserstein",
                              seed=int(s_ratio.generate_state(1)[0]))
    ks = ks_2samp(y_g[:, 0], exact[0][:, 0])
    return SampleCheck(float(ratio.ratio), float(ks.statistic), float(ks.pvalue), n)


__all__ = ["KLEstimate", "SampleCheck", "condition_of", "exact_kl", "exact_mixture_log_prob",
           "exact_sample_check", "sample_exact"]
