r"""Euler–Maruyama particle simulation.

.. math::
    X_{k+1} = X_k + b(X_k, t_k)\,Δt + σ(X_k, t_k)\,\sqrt{Δt}\,ξ_k,\qquad ξ_k \sim N(0, I_m),

followed by the SDE's boundary rules. Strong order 1/2, weak order 1 (Kloeden & Platen 1992,
§14.1); exact in law for constant coefficients (``bm1d``).

Design for speed (see ``benchmarks/``): the state lives coordinate-major, a ``(d, n)`` tensor
exposed to the coefficients as its ``(n, d)`` transpose, so per-coordinate operations run over
contiguous memory; every update is in place; the noise buffer is reused. Normals come from the
fastest generator for the dtype on CPU (numpy ``SFC64`` for float64, torch's vectorized generator
for float32, measured in ``benchmarks/bench_simulate.py``) and from torch's generator on CUDA.
Each generator has a name (:func:`noise_generator`): with the seed it fixes the noise bits, so
datasets record it and their id covers it.
Memory is a few ``(d, n)`` buffers: bounded by the number of particles simulated at once.

Per-particle parameters: ``param_values={"mu": array (n,)}`` for parameters the SDE declares in
``SDE.varying`` hands the coefficients ``(n, 1)`` tensors instead of scalars (see
:mod:`prnf_core.sde`); the noise stream is the same, so particles whose parameters equal the
defaults follow the paths of the fixed-parameter run (bit-identical in float64 for the built-in
problems). Without ``param_values`` nothing changes.

>>> import numpy as np
>>> from prnf_core import get_problem, simulate
>>> out = simulate(get_problem("bm1d"), np.zeros((1000, 1)), seed=1)
>>> out.xT.shape, abs(float(out.xT.mean()) - 0.5) < 0.1
((1000, 1), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from prnf_core.errors import ConfigError, NonFiniteStateError
from prnf_core.sde import SDE

DType = Literal["float64", "float32"]
DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}
NoiseGenerator = Literal["numpy-sfc64", "torch-cpu", "torch-cuda"]
NOISE_GENERATORS: tuple[str, ...] = ("numpy-sfc64", "torch-cpu", "torch-cuda")


@dataclass(frozen=True)
class SimulationResult:
    """Final states ``xT (n, d)`` and, if asked, ``snapshots (len(save_times), n, d)``."""

    xT: np.ndarray
    snapshots: np.ndarray | None = None
    save_times: np.ndarray | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _positive_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}: must be a finite number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: must be a finite number > 0, got {value!r}")
    return value


def step_count(t_end: float, dt: float) -> int:
    """Number of steps; ``t_end`` must be a positive multiple of ``dt``."""
    dt = _positive_real("dt", dt)
    t_end = _positive_real("t_end", t_end)
    steps = round(t_end / dt)
    if steps < 1 or abs(steps * dt - t_end) > 1e-9 * max(t_end, 1.0):
        raise ConfigError(f"t_end: {t_end} is not a whole multiple of dt={dt}")
    return steps


def save_steps(save_times: np.ndarray | list[float] | None, t_end: float, dt: float) -> list[int]:
    """Step indices of snapshot times; each must lie in [0, t_end] on the dt grid."""
    if save_times is None:
        return []
    steps = []
    for t in np.asarray(save_times, dtype=float).reshape(-1):
        if not (math.isfinite(t) and 0 <= t <= t_end * (1 + 1e-12)):
            raise ConfigError(f"save_times: {t} must lie in [0, t_end={t_end}]")
        k = round(t / dt)
        if abs(k * dt - t) > 1e-9 * max(t_end, 1.0):
            raise ConfigError(
                f"save_times: {t} must lie in [0, t_end={t_end}] on the dt={dt} grid"
            )
        steps.append(k)
    if sorted(set(steps)) != steps:
        raise ConfigError(f"save_times: must be strictly increasing, got {list(save_times)}")
    return steps


def noise_generator(device: str | torch.device | None, dtype: DType | torch.dtype
                    ) -> NoiseGenerator:
    """The name of the normal generator :class:`NoiseSource` uses on ``device`` in ``dtype``.

    The one place that decides it, because the same seed gives other bits on another generator:
    ``numpy-sfc64`` (CPU, float64), ``torch-cpu`` (CPU, float32), ``torch-cuda`` (CUDA, either
    dtype; it also fixes that the arithmetic runs on a GPU). ``device=None`` means the default
    device (CUDA when present).

    Raises:
        ConfigError: ``device`` is not a cpu or cuda device.
    """
    try:
        dev = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {device!r} is not a torch device; use cpu or cuda") from None
    double = dtype in ("float64", torch.float64)
    if dev.type == "cpu":
        return "numpy-sfc64" if double else "torch-cpu"
    if dev.type == "cuda":
        return "torch-cuda"
    raise ConfigError(f"device: simulation runs on cpu or cuda, got {str(dev)!r}")


def generator_device(generator: NoiseGenerator) -> str:
    """The device type a noise generator runs on (``cpu`` or ``cuda``)."""
    return "cuda" if generator == "torch-cuda" else "cpu"


class NoiseSource:
    """Fills ``(m, n)`` buffers with standard normals from one reproducible stream.

    ``generator`` is the stream's generator (:func:`noise_generator`), recorded by datasets.
    """

    def __init__(self, seed: int | np.random.SeedSequence, dtype: torch.dtype,
                 device: torch.device) -> None:
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self.generator: NoiseGenerator = noise_generator(device, dtype)
        self._numpy = None
        self._torch = None
        if self.generator == "numpy-sfc64":
            self._numpy = np.random.Generator(np.random.SFC64(seq))
        else:
            state = int(seq.generate_state(1, np.uint64)[0]) & (2**63 - 1)
            self._torch = torch.Generator(device=device).manual_seed(state)

    def fill_(self, buf: torch.Tensor) -> None:
        if self._numpy is not None:
            self._numpy.standard_normal(out=buf.numpy())
        else:
            buf.normal_(generator=self._torch)


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], sde: SDE,
                 what: str) -> None:
    if tuple(tensor.shape) != expected:
        raise ConfigError(
            f"{name}: problem {sde.name!r} with noise={sde.noise!r} must return shape "
            f"{what} = {expected}, got {tuple(tensor.shape)}"
        )


def simulate(
    sde: SDE,
    x0: np.ndarray,
    t_end: float | None = None,
    dt: float | None = None,
    seed: int | np.random.SeedSequence = 0,
    save_times: np.ndarray | list[float] | None = None,
    dtype: DType = "float64",
    device: str | torch.device | None = None,
    check_every: int | None = None,
    param_values: Mapping[str, np.ndarray] | None = None,
) -> SimulationResult:
    """Simulate one Euler–Maruyama trajectory per row of ``x0`` and return the end states.

    Args:
        sde: The problem.
        x0: Initial states, shape ``(n, d)``.
        t_end: Horizon T (default ``sde.t_end``); must be a multiple of ``dt``.
        dt: Step (default ``sde.dt``).
        seed: Integer or ``SeedSequence``: the whole noise stream is a function of it.
        save_times: Times in ``[0, T]`` on the dt grid at which to keep snapshots.
        dtype: ``"float64"`` (default) or ``"float32"`` (faster; see benchmarks/README.md for
            where it is accurate enough).
        device: Torch device; CUDA when present by default.
        check_every: Steps between non-finite checks (1 on CPU, 50 on CUDA by default, where each
            check synchronizes the device).
        param_values: Per-particle values ``name -> (n,) array`` of parameters in
            ``sde.varying``; the coefficients get them as ``(n, 1)`` tensors on the simulation
            device in ``dtype``, the other parameters as in ``sde.params``. ``None`` (default):
            every particle uses ``sde.params``.

    Raises:
        ConfigError: bad shapes, steps, dtype or ``param_values`` (a ``ValueError``), each
            naming the field.
        NonFiniteStateError: a NaN/inf state, naming the step and the number of bad particles.
    """
    t_end = sde.t_end if t_end is None else t_end
    dt = sde.dt if dt is None else dt
    n_steps = step_count(t_end, dt)
    snap_steps = save_steps(save_times, t_end, dt)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: must be one of {list(DTYPES)}, got {dtype!r}")
    x0 = np.asarray(x0)
    if x0.ndim != 2 or x0.shape[1] != sde.dim:
        raise ConfigError(f"x0: must have shape (n, {sde.dim}) for {sde.name!r}, got {x0.shape}")
    if x0.shape[0] == 0:
        raise ConfigError("x0: needs at least one particle")
    if not np.issubdtype(x0.dtype, np.floating) and not np.issubdtype(x0.dtype, np.integer):
        raise ConfigError(f"x0: must be a real array, got dtype {x0.dtype}")
    if not np.isfinite(x0).all():
        raise ConfigError(f"x0: {int((~np.isfinite(x0)).any(axis=1).sum())} rows are not finite")

    dev = torch.device(device) if device is not None else default_device()
    tdtype = DTYPES[dtype]
    check_every = check_every or (1 if dev.type == "cpu" else 50)
    n, d, m = x0.shape[0], sde.dim, sde.noise_dim
    state = torch.empty((d, n), dtype=tdtype, device=dev)
    xs = state.T  # (n, d) view handed to the coefficients
    xs.copy_(torch.from_numpy(np.ascontiguousarray(x0)).to(tdtype))
    params = _particle_params(sde, param_values, n, tdtype, dev)
    per_particle_noise = False
    noise_buf = torch.empty((m, n), dtype=tdtype, device=dev)
    noise = NoiseSource(seed, tdtype, dev)
    sqrt_dt = math.sqrt(dt)
    snapshots = []
    if 0 in snap_steps:
        snapshots.append(xs.cpu().numpy().copy())

    for k in range(n_steps):
        t = k * dt
        b, s = sde.coefficients(xs, t, params)
        if k == 0:
            per_particle_noise = _validate_coefficients(sde, b, s, n, params is not None, xs)
        if s.untyped_storage().data_ptr() == state.untyped_storage().data_ptr():
            s = s.clone()  # σ must be evaluated at X_k, before the drift update below
        noise.fill_(noise_buf)
        dw = noise_buf.T
        xs.add_(b, alpha=dt)
        if sde.noise == "diagonal":
            xs.addcmul_(s, dw, value=sqrt_dt)
        elif sde.noise == "additive" and (s.ndim == 1 or per_particle_noise):
            # same operand order for a (d,) and a per-particle (n, d) σ: same rounding
            xs.addcmul_(dw, s, value=sqrt_dt)
        elif sde.noise == "additive":
            state.addmm_(s, noise_buf, alpha=sqrt_dt)
        else:
            xs.add_(torch.einsum("ndm,nm->nd", s, dw), alpha=sqrt_dt)
        sde.apply_boundaries_(xs)
        if (k + 1) % check_every == 0 or k + 1 == n_steps:
            _check_finite(sde, state, k + 1, (k + 1) * dt)
        if k + 1 in snap_steps:
            snapshots.append(xs.cpu().numpy().copy())

    out_dtype = np.float64 if dtype == "float64" else np.float32
    return SimulationResult(
        xT=np.ascontiguousarray(xs.cpu().numpy(), dtype=out_dtype),
        snapshots=np.stack(snapshots).astype(out_dtype) if snapshots else None,
        save_times=np.asarray(save_times, dtype=float) if snap_steps else None,
    )


def _particle_params(sde: SDE, values: Mapping[str, Any] | None, n: int, dtype: torch.dtype,
                     device: torch.device) -> dict[str, Any] | None:
    """``sde.params`` with the per-particle values as ``(n, 1)`` tensors (``None``: none)."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ConfigError(f"param_values: must map parameter names to (n,) arrays, got "
                          f"{type(values).__name__}")
    allowed = list(sde.varying)
    unknown = sorted(str(k) for k in values if k not in allowed)
    if unknown:
        raise ConfigError(
            f"param_values: problem {sde.name!r} cannot vary {unknown} per particle; allowed: "
            f"{allowed}" + ("" if allowed else " (SDE.varying is empty)")
        )
    params = dict(sde.params)
    for name, value in values.items():
        arr = np.asarray(value)
        if arr.shape != (n,):
            raise ConfigError(f"param_values: {name!r} must have shape ({n},) (one value per "
                              f"particle), got {arr.shape}")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating)
                                     or np.issubdtype(arr.dtype, np.integer)):
            raise ConfigError(f"param_values: {name!r} must be a real array, got dtype "
                              f"{arr.dtype}")
        if not np.isfinite(arr).all():
            raise ConfigError(f"param_values: {name!r} has {int((~np.isfinite(arr)).sum())} "
                              "non-finite values")
        column = np.ascontiguousarray(arr, dtype=np.float64).reshape(n, 1)
        params[name] = torch.from_numpy(column).to(device=device, dtype=dtype)
    return params


def _validate_coefficients(sde: SDE, b: torch.Tensor, s: torch.Tensor, n: int,
                           per_particle: bool = False, x: torch.Tensor | None = None) -> bool:
    """Check the coefficients' shapes at the first step.

    Returns whether σ is an ``(n, d)`` per-particle diagonal of additive noise (possible only
    with per-particle parameters, ``per_particle``).
    """
    d, m = sde.dim, sde.noise_dim
    _check_shape("drift", b, (n, d), sde, "(n, d)")
    if (per_particle and sde.noise == "additive" and s.ndim == 2 and m == d
            and tuple(s.shape) == (n, d)):
        if n != d:
            return True
        # n == d == m: an (n, d) diagonal or a (d, m) matrix? The fixed-parameter σ tells.
        fixed = sde.coefficients(x, 0.0)[1] if x is not None else s
        if fixed.ndim == 1:
            return True
    if sde.noise == "diagonal":
        _check_shape("diffusion", s, (n, d), sde, "(n, d)")
    elif sde.noise == "general":
        _check_shape("diffusion", s, (n, d, m), sde, "(n, d, m)")
    elif s.ndim == 1:
        if m != d:
            raise ConfigError(
                f"diffusion: a (d,) vector needs noise_dim == dim for {sde.name!r}; "
                f"got noise_dim={m}, dim={d}: return a (d, m) matrix instead"
            )
        _check_shape("diffusion", s, (d,), sde, "(d,)")
    else:
        _check_shape("diffusion", s, (d, m), sde,
                     "(d,) or (d, m)" + (" or (n, d)" if per_particle and m == d else ""))
    return False


def _check_finite(sde: SDE, state: torch.Tensor, step: int, t: float) -> None:
    # One reduction per step; the exact count is computed only on failure.
    if math.isfinite(float(state.sum())):
        return
    bad = int((~torch.isfinite(state)).any(dim=0).sum())
    if bad == 0:  # the sum overflowed although every value is finite
        return
    raise NonFiniteStateError(sde.name, step, t, bad, state.shape[1])
