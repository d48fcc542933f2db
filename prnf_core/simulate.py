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

Compiled step (``compile=True``, or an SDE declaring ``compile=True``): one Euler–Maruyama step
(coefficients, update and boundary rules, and the sum the non-finite check reads) is traced once
by ``torch.compile`` and runs as one fused kernel (inductor: generated C++ on CPU, Triton on
CUDA) instead of one pass over memory per torch operation; the normals come from the same stream.
For coefficients with transcendental functions (runaway2d) that is about twice the throughput
(``benchmarks/bench_simulate.py``). The kernel is built for the machine's CPU
(``-march=native``) and rounds differently from the uncompiled path, so results agree with it to
floating-point rounding, not bit for bit; the default stays uncompiled, and a dataset records
whether it was compiled (:class:`prnf_core.dataset_config.DatasetConfig`). Compiling takes
seconds (once per process, configuration and particle count; inductor also caches kernels on
disk, which makes a later process faster), so it pays for long runs: the break-even points are
in ``benchmarks/README.md``. If compilation fails (no C++ compiler, an untraceable coefficient),
``simulate`` warns and runs uncompiled.

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

import itertools
import json
import math
import numbers
import threading
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from prnf_core.errors import CompileError, ConfigError, NonFiniteStateError, PrnfError
from prnf_core.sde import SDE

DType = Literal["float64", "float32"]
DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}
NoiseGenerator = Literal["numpy-sfc64", "torch-cpu", "torch-cuda"]
NOISE_GENERATORS: tuple[str, ...] = ("numpy-sfc64", "torch-cpu", "torch-cuda")


@dataclass(frozen=True)
class SimulationResult:
    """Final states ``xT (n, d)`` and, if asked, ``snapshots (len(save_times), n, d)``.

    ``compile_seconds``: with a compiled step, the seconds spent compiling it (about 0 when this
    process had already compiled it); ``None`` when the simulation ran uncompiled.
    """

    xT: np.ndarray
    snapshots: np.ndarray | None = None
    save_times: np.ndarray | None = None
    compile_seconds: float | None = None


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
    compile: bool | None = None,
    compile_fallback: bool = True,
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
        compile: ``True``: run each step as one kernel compiled by ``torch.compile`` (module
            doc; same noise, other rounding); ``False``: uncompiled, bit for bit the results of
            earlier versions; ``None`` (default): ``sde.compile`` (``False`` for the built-in
            problems).
        compile_fallback: If compilation fails: ``True`` (default) warns (``RuntimeWarning``)
            and runs uncompiled; ``False`` raises :class:`CompileError` (datasets do, where
            the other rounding of a fallback would go unrecorded).

    Raises:
        ConfigError: bad shapes, steps, dtype, ``param_values`` or ``compile`` (a
            ``ValueError``), each naming the field; :class:`CompileError` (a ``ConfigError``),
            see ``compile_fallback``.
        NonFiniteStateError: a NaN/inf state, naming the step and the number of bad particles.
    """
    t_end = sde.t_end if t_end is None else t_end
    dt = sde.dt if dt is None else dt
    n_steps = step_count(t_end, dt)
    snap_steps = save_steps(save_times, t_end, dt)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: must be one of {list(DTYPES)}, got {dtype!r}")
    use_compile = _compile_option(sde, compile)
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

    compile_seconds = None
    if use_compile:
        try:
            state, compile_seconds = _run_compiled(sde, state, params, noise, noise_buf, n_steps,
                                                   dt, check_every, snap_steps, snapshots)
        except _CompileFailure as exc:
            message = f"compile: torch.compile failed for problem {sde.name!r} ({exc})"
            if not compile_fallback:
                raise CompileError(message) from exc
            warnings.warn(f"{message}; simulating uncompiled", RuntimeWarning, stacklevel=2)
            # From the start, with the same noise: exactly the uncompiled results.
            return simulate(sde, x0, t_end, dt, seed, save_times, dtype, device, check_every,
                            param_values, compile=False)
        xs = state.T
    for k in range(n_steps if compile_seconds is None else 0):
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
        compile_seconds=compile_seconds,
    )


# -- the compiled step ---------------------------------------------------------------------------
def _compile_option(sde: SDE, value: object) -> bool:
    """``simulate``'s ``compile`` argument resolved against ``sde.compile`` (``None``)."""
    if value is None:
        return bool(sde.compile)
    if not isinstance(value, bool):
        raise ConfigError(f"compile: must be True, False or None (the problem's default "
                          f"SDE.compile), got {value!r}")
    return value


_COMPILED_STEPS: OrderedDict[tuple, _CompiledStep] = OrderedDict()
_COMPILED_MAX = 16  # compiled steps kept per process (least recently used dropped)
_COMPILED_LOCK = threading.Lock()
_step_names = itertools.count()


def _update_kind(sde: SDE, s: torch.Tensor, per_particle_noise: bool) -> str:
    """How σ enters the update, as the uncompiled loop decides it: ``diagonal``, ``vector`` (a
    (d,) or per-particle (n, d) additive σ), ``matrix`` (an additive (d, m)) or ``general``."""
    if sde.noise == "diagonal":
        return "diagonal"
    if sde.noise == "additive":
        return "vector" if s.ndim == 1 or per_particle_noise else "matrix"
    return "general"


def _step_function(sde: SDE, dt: float, kind: str) -> Callable:
    """One Euler–Maruyama step as a pure function for ``torch.compile``.

    ``(state (d, n), noise (m, n), t 0-d tensor, params) -> (new state (d, n), its sum)``; the
    sum is what the non-finite check reads. It closes over the coefficient functions, the
    boundary rules and constants only (not over ``sde``), and gets a code object of its own: a
    torch.compile cache per configuration, never another's recompilations.
    """
    fused = sde.compiled_drift_and_diffusion or sde.drift_and_diffusion
    drift, diffusion = sde.drift, sde.diffusion
    rules = sde.boundaries or (None,) * sde.dim
    sqrt_dt = math.sqrt(dt)

    def step(state: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = state.T
        if fused is not None:
            b, s = fused(x, t, params)
        else:
            b, s = drift(x, t, params), diffusion(x, t, params)
        # Row by row (coordinate i of every particle): b and, for diagonal noise, σ may come
        # as rows already, which spares the kernel an (n, d) buffer.
        if kind == "diagonal":
            noise_rows = [_row(s, i) * noise[i] for i in range(len(rules))]
        else:
            dw = noise.T
            # Σ dW as a broadcast sum, which fuses into the kernel where a matmul would not
            term = dw * s if kind == "vector" else (s * dw.unsqueeze(1)).sum(-1)
            noise_rows = [term[:, i] for i in range(len(rules))]
        rows = []
        for i, rule in enumerate(rules):
            row = state[i] + _row(b, i) * dt + noise_rows[i] * sqrt_dt
            rows.append(row if rule is None else rule.apply(row))
        out = torch.stack(rows)
        return out, out.sum()

    code = step.__code__.replace(co_name=f"prnf_step_{next(_step_names)}")
    return types.FunctionType(code, step.__globals__, code.co_name, None, step.__closure__)


def _row(value: torch.Tensor | tuple[torch.Tensor, ...], i: int) -> torch.Tensor:
    """Coordinate ``i`` of an ``(n, d)`` coefficient or of a tuple of its d rows."""
    return value[i] if isinstance(value, tuple | list) else value[:, i]


def _stack_rows(value: Any) -> Any:
    """A coefficient given as a tuple of rows as the ``(n, d)`` tensor (for the shape checks)."""
    return torch.stack(tuple(value), 1) if isinstance(value, tuple | list) else value


def _step_key(sde: SDE, dt: float, kind: str, state: torch.Tensor,
              params: Mapping[str, Any]) -> tuple:
    """What a compiled step depends on besides the tensors' values: functions, rules, constants,
    the scalar parameters, the shapes (compiled for one particle count, ``dynamic=False``) and
    the torch thread count (inductor's CPU kernels are compiled for it)."""
    scalars = {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)}
    tensors = tuple(sorted((k, tuple(v.shape)) for k, v in params.items()
                           if isinstance(v, torch.Tensor)))
    return (sde.compiled_drift_and_diffusion, sde.drift_and_diffusion, sde.drift,
            sde.diffusion, sde.boundaries, sde.dim, sde.noise, sde.noise_dim, float(dt), kind,
            tuple(state.shape), state.dtype, str(state.device), torch.get_num_threads(),
            json.dumps(scalars, sort_keys=True, default=repr), tensors)


class _CompiledStep:
    """A step compiled by inductor through a backend that counts compilations.

    A step compiles once per configuration; a second compilation means the traced graph
    depends on something that changes between steps (typically ``float(t)``), which would
    recompile every step: the caller then falls back.
    """

    def __init__(self, fn: Callable) -> None:
        self.compilations = 0
        self._inductor = torch._dynamo.lookup_backend("inductor")
        self.fn = torch.compile(fn, backend=self._backend, dynamic=False, fullgraph=True)

    def _backend(self, graph: Any, example_inputs: Any) -> Any:
        self.compilations += 1
        return self._inductor(graph, example_inputs)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _CompileFailure(Exception):
    """The compiled step could not be used; the reason is the message."""


def _compiled_step(key: tuple, sde: SDE, dt: float, kind: str) -> _CompiledStep:
    with _COMPILED_LOCK:  # simulations may run in threads (e.g. a threaded Dask worker)
        step = _COMPILED_STEPS.get(key)
        if step is None:
            step = _CompiledStep(_step_function(sde, dt, kind))
            _COMPILED_STEPS[key] = step
            while len(_COMPILED_STEPS) > _COMPILED_MAX:
                _COMPILED_STEPS.popitem(last=False)
        _COMPILED_STEPS.move_to_end(key)
        return step


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _run_compiled(sde: SDE, state: torch.Tensor, params: Mapping[str, Any] | None,
                  noise: NoiseSource, noise_buf: torch.Tensor, n_steps: int, dt: float,
                  check_every: int, snap_steps: list[int], snapshots: list[np.ndarray]
                  ) -> tuple[torch.Tensor, float]:
    """All steps through the compiled step: the final state and the compile seconds.

    Raises:
        _CompileFailure: the step does not compile or recompiles; the caller reruns the whole
            simulation uncompiled (or raises :class:`CompileError`).
    """
    n, per_particle = state.shape[1], params is not None
    params = sde.params if params is None else params
    t = torch.zeros((), dtype=torch.float64, device=state.device)
    b, s = (_stack_rows(v) for v in sde.compiled_coefficients(state.T, t, params))
    per_particle_noise = _validate_coefficients(sde, b, s, n, per_particle, state.T)
    kind = _update_kind(sde, s, per_particle_noise)
    key = _step_key(sde, dt, kind, state, params)
    started = time.perf_counter()
    step = _compiled_step(key, sde, dt, kind)
    try:
        # Compile (or find it compiled) before any normal is drawn, and call it at two times:
        # a graph that depends on the value of t recompiles here rather than at every step.
        compilations = step.compilations
        for time_ in (0.0, dt):
            t.fill_(time_)
            step(state, noise_buf.zero_(), t, params)
        if step.compilations > max(compilations, 1):
            raise _CompileFailure("the compiled step recompiles when t changes: the "
                                  "coefficients use t as a Python number (e.g. math.sin(t)); "
                                  "write torch operations of t")
        compile_seconds = time.perf_counter() - started
        compilations = step.compilations
        for k in range(n_steps):
            noise.fill_(noise_buf)
            t.fill_(k * dt)
            state, total = step(state, noise_buf, t, params)
            if step.compilations != compilations:
                raise _CompileFailure(f"the compiled step recompiled at step {k}")
            if (k + 1) % check_every == 0 or k + 1 == n_steps:
                _check_finite(sde, state, k + 1, (k + 1) * dt, total)
            if k + 1 in snap_steps:
                snapshots.append(state.T.cpu().numpy().copy())
    except PrnfError:
        raise
    except Exception as exc:  # no compiler, untraceable coefficients, recompilations, ...
        with _COMPILED_LOCK:
            _COMPILED_STEPS.pop(key, None)
        raise _CompileFailure(_reason(exc) if not isinstance(exc, _CompileFailure)
                              else str(exc)) from exc
    return state, compile_seconds


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


def _check_finite(sde: SDE, state: torch.Tensor, step: int, t: float,
                  total: torch.Tensor | None = None) -> None:
    # One reduction per step (``total``: computed by the compiled step); the exact count is
    # computed only on failure.
    if math.isfinite(float(state.sum() if total is None else total)):
        return
    bad = int((~torch.isfinite(state)).any(dim=0).sum())
    if bad == 0:  # the sum overflowed although every value is finite
        return
    raise NonFiniteStateError(sde.name, step, t, bad, state.shape[1])
