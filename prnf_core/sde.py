r"""Stochastic differential equations :math:`dX_t = b(X_t, t)\,dt + \sigma(X_t, t)\,dW_t`.

An :class:`SDE` bundles the coefficients with everything the rest of prnf needs to know about a
problem: the dimension, the noise kind, boundary rules applied after each step, coordinate names,
the default horizon and step, and the training domain (the box training :math:`x_0` are drawn from).

Coefficients are written with ``torch`` operations and are vectorized over particles: ``x`` is an
``(n, d)`` tensor (a view, do not modify it in place), ``t`` a float and ``params`` the SDE's
parameter mapping. The shape ``diffusion`` must return depends on ``noise``:

===========  ===========================  =======================================================
noise        diffusion returns            update
===========  ===========================  =======================================================
additive     ``(d,)`` or ``(d, m)``        σ does not depend on x (it may depend on t);
                                         with per-particle parameters also ``(n, d)``: a
                                         per-particle diagonal σ (m = d)
diagonal     ``(n, d)``                   :math:`X^i \mathrel{+}= σ^i(X)\,ΔW^i`, m = d
general      ``(n, d, m)``                :math:`X^i \mathrel{+}= \sum_j σ^{ij}(X)\,ΔW^j`
===========  ===========================  =======================================================

Per-particle parameters. The parameters named in ``SDE.varying`` may take one value per particle:
``simulate(sde, x0, param_values={"mu": mu})`` with ``mu`` an ``(n,)`` array hands the coefficients
``params`` in which ``params["mu"]`` is a torch tensor of shape ``(n, 1)`` (simulation device and
dtype) that broadcasts against the ``(n, d)`` state; the other entries stay as they are. The
coefficients of such an SDE must therefore work with a scalar *or* an ``(n, 1)`` tensor for each
varying parameter (and derive any constants from it, not from a value fixed when the SDE was
built). Without ``param_values`` the coefficients get ``SDE.params`` unchanged: the fixed-θ path
is exactly the one of an SDE without varying parameters. An additive-noise σ that depends on a
varying parameter returns an ``(n, d)`` per-particle diagonal (above); the simulator reads an
``(n, d)`` result as such, and only when ``n == d == m`` asks the fixed-parameter σ's shape to
tell it from a ``(d, m)`` matrix.

Compiled simulation. ``simulate(sde, x0, compile=True)`` (or ``SDE(..., compile=True)``, the
problem's default) fuses one whole Euler–Maruyama step (coefficients, update, boundary rules)
into one kernel with ``torch.compile`` (inductor: C++ on CPU, Triton on CUDA). The coefficients
must then be traceable torch code: ``torch`` operations of ``x``, ``t`` and ``params``, no numpy
or ``.item()``, no Python branching on tensor values; ``t`` is handed to them as a 0-d tensor
(write ``torch.sin(t)``, not ``math.sin(t)``). Results agree with the uncompiled path up to
floating-point rounding (the kernel rounds differently), not bit for bit. A problem may give a
form written for the fused kernel, ``compiled_drift_and_diffusion`` (e.g. shared reciprocals
instead of repeated divisions); the compiled step then traces it instead of the fused or separate
coefficients. See :func:`prnf_core.simulate.simulate`.

Example:
    >>> import torch
    >>> from prnf_core import SDE, Boundary
    >>> gbm = SDE(
    ...     name="gbm", dim=1,
    ...     drift=lambda x, t, p: p["mu"] * x,
    ...     diffusion=lambda x, t, p: p["sigma"] * x,
    ...     noise="diagonal", params={"mu": 0.05, "sigma": 0.2},
    ...     boundaries=(Boundary("clamp", low=0.0),),
    ...     t_end=1.0, dt=0.01, domain=([0.5], [2.0]),
    ... )
    >>> gbm.dim, gbm.noise_dim
    (1, 1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

NoiseKind = Literal["additive", "diagonal", "general"]
NOISE_KINDS: tuple[str, ...] = ("additive", "diagonal", "general")
BoundaryKind = Literal["reflect", "clamp", "periodic"]
BOUNDARY_KINDS: tuple[str, ...] = ("reflect", "clamp", "periodic")

Coefficient = Callable[[torch.Tensor, float, Mapping[str, Any]], torch.Tensor]
GaussianTransition = Callable[[np.ndarray, float, Mapping[str, Any]], tuple[np.ndarray, np.ndarray]]
QoIFunction = Callable[[np.ndarray], dict[str, Any]]
"""A quantity of interest: ``f(samples (n, d) float array) -> {"name", "value", "stderr"}``."""


@dataclass(frozen=True)
class Boundary:
    """A rule applied to one coordinate after every Euler–Maruyama step.

    * ``reflect``: mirror at ``low`` and/or ``high`` (repeatedly, so any overshoot lands inside).
    * ``clamp``: values beyond a bound are set to the bound.
    * ``periodic``: wrap into ``[low, high)``; needs both bounds.

    A missing bound (``None``) means unbounded on that side.
    """

    kind: BoundaryKind
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in BOUNDARY_KINDS:
            raise ValueError(f"Boundary.kind must be one of {BOUNDARY_KINDS}, got {self.kind!r}")
        if self.low is None and self.high is None:
            raise ValueError("Boundary needs at least one of low/high")
        if self.kind == "periodic" and (self.low is None or self.high is None):
            raise ValueError("Boundary.kind='periodic' needs both low and high")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"Boundary needs low < high, got low={self.low}, high={self.high}")

    def apply_(self, x: torch.Tensor) -> None:
        """Apply the rule in place to a 1-D tensor of one coordinate."""
        lo, hi = self.low, self.high
        if self.kind == "clamp":
            x.clamp_(min=lo, max=hi)
        elif self.kind == "periodic":
            x.sub_(lo).remainder_(hi - lo).add_(lo)
            # Rounding can land on hi itself (e.g. lo - 1e-20 -> hi): that point is lo.
            x.masked_fill_(x >= hi, lo)
        elif lo is not None and hi is not None:
            # Reflection on an interval is a triangle wave of period 2L: fold into [0, 2L),
            # then mirror the upper half. Exact for any overshoot, not only one bounce.
            length = hi - lo
            x.sub_(lo).remainder_(2 * length)
            x.copy_(length - (x - length).abs()).add_(lo)
        elif lo is not None:
            x.sub_(lo).abs_().add_(lo)
        else:
            x.sub_(hi).abs_().neg_().add_(hi)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The rule as a new tensor: the form the compiled step traces (:meth:`apply_` in place).

        The same map as :meth:`apply_` up to rounding: the wrap uses ``floor`` (cheap in a fused
        kernel) where :meth:`apply_` uses ``remainder``, and results are clamped into the
        interval, so a rounding error never leaves a particle outside it.
        """
        lo, hi = self.low, self.high
        if self.kind == "clamp":
            return x.clamp(min=lo, max=hi)
        if self.kind == "periodic":
            length = hi - lo
            y = x - lo
            y = y - torch.floor(y * (1.0 / length)) * length + lo
            return torch.where(y >= hi, lo, y).clamp(min=lo)
        if lo is not None and hi is not None:
            length = hi - lo
            y = x - lo
            y = y - torch.floor(y * (0.5 / length)) * (2.0 * length)
            return (length - (y - length).abs() + lo).clamp(min=lo, max=hi)
        if lo is not None:
            return (x - lo).abs() + lo
        return hi - (x - hi).abs()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high}


def _as_box(domain: Any, dim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    low, high = (np.asarray(v, dtype=float).reshape(-1) for v in domain)
    if low.shape != (dim,) or high.shape != (dim,):
        raise ValueError(
            f"SDE.domain must be (low, high) with {dim} values each, got shapes "
            f"{low.shape} and {high.shape}"
        )
    if not np.all(low < high):
        raise ValueError(f"SDE.domain needs low < high in every coordinate, got {low} and {high}")
    return tuple(low.tolist()), tuple(high.tolist())


@dataclass(frozen=True)
class SDE:
    r"""An Itô SDE :math:`dX = b(X,t)\,dt + σ(X,t)\,dW` in :math:`\mathbb{R}^d` (see module doc).

    Attributes:
        name: Identifier (the registry name for built-in problems).
        dim: State dimension d.
        drift: ``b(x, t, params) -> (n, d)``.
        diffusion: ``σ(x, t, params)``, shape by ``noise`` (module doc).
        noise: ``"additive"``, ``"diagonal"`` or ``"general"``.
        noise_dim: Brownian dimension m (``d`` for diagonal; required for general).
        params: Parameters passed to the coefficients; recorded with every dataset.
        boundaries: One :class:`Boundary` or ``None`` per coordinate, or ``None`` for none.
        coord_names: Names of the coordinates (defaults ``x0, x1, ...``).
        t_end: Default horizon T.
        dt: Default Euler–Maruyama step.
        domain: ``(low, high)`` box from which training initial states are drawn.
        gaussian_transition: For problems with an exact Gaussian transition,
            ``(x0 (n, d), t, params) -> (mean (n, d), cov (d, d))``.
        drift_and_diffusion: Optional fused ``(x, t, params) -> (b, σ)`` for coefficients that
            share work; the simulator prefers it when given.
        compile: Whether :func:`~prnf_core.simulate.simulate` compiles the step by default
            (``simulate(..., compile=None)``); ``False`` by default and for every built-in
            problem, so results stay those of the uncompiled path unless asked (module doc).
            Declare ``True`` for a problem whose coefficients are traceable torch code.
        compiled_drift_and_diffusion: Optional ``(x, t, params) -> (b, σ)`` that the compiled
            step traces instead of the other coefficient functions: the same coefficients
            (equal up to rounding; tests should check it), written for one fused kernel. It may
            return b, and for diagonal noise σ, as tuples of the d coordinate rows ``(n,)``
            instead of ``(n, d)`` tensors, which spares the kernel materializing them.
        description: One line for ``prnf problems``.
        x0_period: Periods :math:`P_i` (``None`` where there is none) such that the law of
            :math:`X_T - x_0` given :math:`x_0` is invariant under :math:`x_{0,i} \to x_{0,i} +
            P_i`: domain knowledge a surrogate may use (``ModelConfig.x0_period="problem"``).
            True for a drift and diffusion that are :math:`P`-periodic in the state and no
            boundary, e.g. the ABC flow (period 2π in every coordinate).
        varying: Names of the parameters that may take one value per particle
            (``simulate(..., param_values=...)``, datasets' ``param_box``); each must be a real
            scalar entry of ``params``. The coefficients then receive it as an ``(n, 1)``
            tensor (module doc).
        qois: Quantities of interest the problem names, ``name -> f(samples)`` returning
            ``{"name", "value", "stderr"}`` (:data:`QoIFunction`; e.g. built with
            :func:`prnf_core.validation.binomial_qoi`). Validation compares the first one
            (:attr:`primary_qoi`) on surrogate and MC samples.
        regions: Named regions of the state space, ``name -> {coordinate name: (low, high)}``
            (``None``: unbounded on that side; coordinates left out are free), the targets of
            the inverse question :math:`P(X_T \in R \mid x_0)` (:mod:`prnf_core.inverse`),
            e.g. runaway2d's ``"runaway": {"p": (p*, None)}``.
    """

    name: str
    dim: int
    drift: Coefficient
    diffusion: Coefficient
    noise: NoiseKind = "diagonal"
    t_end: float = 1.0
    dt: float = 0.01
    domain: Any = None
    noise_dim: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    boundaries: Sequence[Boundary | None] | None = None
    coord_names: Sequence[str] | None = None
    gaussian_transition: GaussianTransition | None = None
    drift_and_diffusion: Callable[[torch.Tensor, float, Mapping[str, Any]],
                                  tuple[torch.Tensor, torch.Tensor]] | None = None
    description: str = ""
    x0_period: Sequence[float | None] | None = None
    qois: Mapping[str, QoIFunction] = field(default_factory=dict)
    varying: tuple[str, ...] = ()
    regions: Mapping[str, Mapping[str, tuple[float | None, float | None]]] = field(
        default_factory=dict)
    compile: bool = False
    compiled_drift_and_diffusion: Callable[[torch.Tensor, Any, Mapping[str, Any]],
                                           tuple[Any, Any]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"SDE.dim must be a positive int, got {self.dim!r}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"SDE.noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.noise == "diagonal":
            if self.noise_dim not in (None, self.dim):
                raise ValueError(
                    f"SDE.noise_dim must equal dim={self.dim} for diagonal noise, "
                    f"got {self.noise_dim}"
                )
            object.__setattr__(self, "noise_dim", self.dim)
        elif self.noise == "general" and self.noise_dim is None:
            raise ValueError("SDE.noise_dim (Brownian dimension m) is required for general noise")
        elif self.noise == "additive" and self.noise_dim is None:
            object.__setattr__(self, "noise_dim", self.dim)
        if not isinstance(self.noise_dim, int) or self.noise_dim < 1:
            raise ValueError(f"SDE.noise_dim must be an int >= 1, got {self.noise_dim!r}")
        for name in ("t_end", "dt"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"SDE.{name} must be a finite number > 0, got {value!r}")
        if self.domain is None:
            raise ValueError("SDE.domain (low, high) of the training box is required")
        object.__setattr__(self, "domain", _as_box(self.domain, self.dim))
        if self.boundaries is not None:
            if len(self.boundaries) != self.dim:
                raise ValueError(
                    f"SDE.boundaries needs one entry (Boundary or None) per coordinate: "
                    f"{self.dim}, got {len(self.boundaries)}"
                )
            object.__setattr__(self, "boundaries", tuple(self.boundaries))
        names = self.coord_names or tuple(f"x{i}" for i in range(self.dim))
        if len(names) != self.dim:
            raise ValueError(f"SDE.coord_names needs {self.dim} names, got {len(names)}")
        object.__setattr__(self, "coord_names", tuple(names))
        object.__setattr__(self, "params", dict(self.params))
        if self.x0_period is not None:
            period = tuple(None if v is None else float(v) for v in self.x0_period)
            if len(period) != self.dim or not all(v is None or v > 0 for v in period):
                raise ValueError(f"SDE.x0_period needs one period > 0 (or None) per coordinate: "
                                 f"{self.dim}, got {self.x0_period!r}")
            object.__setattr__(self, "x0_period", period)
        if not (isinstance(self.qois, Mapping)
                and all(isinstance(k, str) and callable(f) for k, f in self.qois.items())):
            raise ValueError(f"SDE.qois must map names to functions of the samples, "
                             f"got {self.qois!r}")
        object.__setattr__(self, "qois", dict(self.qois))
        object.__setattr__(self, "varying", _check_varying(self.varying, self.params))
        for region, bounds in self.regions.items():
            unknown = sorted(set(bounds) - set(names))
            if unknown:
                raise ValueError(f"SDE.regions[{region!r}]: {unknown} are not coordinates "
                                 f"{tuple(names)}")
        object.__setattr__(self, "regions", {k: dict(v) for k, v in self.regions.items()})
        if not isinstance(self.compile, bool):
            raise ValueError(f"SDE.compile must be True or False, got {self.compile!r}")
        for name in ("drift", "diffusion", "drift_and_diffusion", "compiled_drift_and_diffusion"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"SDE.{name} must be a function (x, t, params), got {value!r}")

    # -- properties declared for solvers and for later layers -------------------------------
    @property
    def has_boundaries(self) -> bool:
        return self.boundaries is not None and any(b is not None for b in self.boundaries)

    @property
    def has_exact_transition(self) -> bool:
        return self.gaussian_transition is not None

    @property
    def primary_qoi(self) -> QoIFunction | None:
        """The first declared quantity of interest (the one validation reports), or ``None``."""
        return next(iter(self.qois.values()), None)

    def coefficients(self, x: torch.Tensor, t: float, params: Mapping[str, Any] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion at ``(x, t)``, fused when the problem provides it.

        ``params`` defaults to :attr:`params`; the simulator passes a copy holding ``(n, 1)``
        tensors for per-particle parameters (module doc).
        """
        p = self.params if params is None else params
        if self.drift_and_diffusion is not None:
            return self.drift_and_diffusion(x, t, p)
        return self.drift(x, t, p), self.diffusion(x, t, p)

    def compiled_coefficients(self, x: torch.Tensor, t: Any,
                              params: Mapping[str, Any] | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion as the compiled step traces them (``t`` a 0-d tensor there):
        ``compiled_drift_and_diffusion`` when given, else :meth:`coefficients`."""
        p = self.params if params is None else params
        if self.compiled_drift_and_diffusion is not None:
            return self.compiled_drift_and_diffusion(x, t, p)
        return self.coefficients(x, t, p)

    def apply_boundaries_(self, x: torch.Tensor) -> None:
        """Apply every coordinate's boundary rule in place to ``x`` of shape ``(n, d)``."""
        if self.boundaries is None:
            return
        for i, rule in enumerate(self.boundaries):
            if rule is not None:
                rule.apply_(x[:, i])

    def transition_mean_cov(self, x0: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact Gaussian law of ``X_t | X_0 = x0``: mean ``(n, d)``, covariance ``(d, d)``."""
        if self.gaussian_transition is None:
            raise NotImplementedError(f"problem {self.name!r} has no exact transition density")
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        if x0.shape[1] != self.dim:
            raise ValueError(f"x0 must have shape (n, {self.dim}), got {x0.shape}")
        return self.gaussian_transition(x0, float(t), self.params)

    def transition_logpdf(self, y: np.ndarray, x0: np.ndarray, t: float) -> np.ndarray:
        r"""Exact :math:`\log p(X_t = y \mid X_0 = x_0)` row by row, shape ``(n,)``."""
        y = np.atleast_2d(np.asarray(y, dtype=float))
        mean, cov = self.transition_mean_cov(x0, t)
        if y.shape != mean.shape:
            raise ValueError(f"y must have the shape of x0 {mean.shape}, got {y.shape}")
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (y - mean).T).T
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        return -0.5 * (z**2).sum(axis=1) - 0.5 * log_det - 0.5 * self.dim * np.log(2 * np.pi)

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description recorded in dataset attributes."""
        return {
            "name": self.name,
            "dim": self.dim,
            "noise": self.noise,
            "noise_dim": self.noise_dim,
            "params": _jsonable(self.params),
            "boundaries": None
            if self.boundaries is None
            else [None if b is None else b.as_dict() for b in self.boundaries],
            "coord_names": list(self.coord_names),
            "t_end": self.t_end,
            "dt": self.dt,
            "domain": [list(self.domain[0]), list(self.domain[1])],
            "x0_period": None if self.x0_period is None else list(self.x0_period),
        }


def _check_varying(varying: Any, params: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(varying, str) or not isinstance(varying, Sequence):
        raise ValueError(f"SDE.varying must be a sequence of parameter names, got {varying!r}")
    names = tuple(varying)
    for name in names:
        if name not in params:
            raise ValueError(f"SDE.varying: {name!r} is not a parameter; params: {sorted(params)}")
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"SDE.varying: parameter {name!r} must be a real scalar to vary per "
                             f"particle, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"SDE.varying: names must be distinct, got {list(names)}")
    return names


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
