"""Built-in problems, selected by registered name (never by evaluating user strings).

>>> from prnf_core.problems import get_problem, list_problems
>>> sorted(list_problems())
['abc3d', 'bm1d', 'ou', 'ou1d_rate', 'runaway2d']
>>> get_problem("ou", dim=3).dim
3

Register your own with :func:`register_problem`; a factory takes keyword parameters with defaults
and returns an :class:`~prnf_core.sde.SDE`. A problem names its quantities of interest in
``SDE.qois``; :func:`problem_qoi` gives the one validation reports:

>>> problem_qoi("runaway2d").__name__, problem_qoi("ou")
('runaway_rate', None)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from prnf_core.errors import ConfigError
from prnf_core.problems.abc3d import abc3d
from prnf_core.problems.bm1d import bm1d
from prnf_core.problems.ou import ou
from prnf_core.problems.ou1d_rate import ou1d_rate
from prnf_core.problems.runaway2d import runaway2d
from prnf_core.sde import SDE, QoIFunction

ProblemFactory = Callable[..., SDE]
_REGISTRY: dict[str, ProblemFactory] = {}


def register_problem(name: str, factory: ProblemFactory, *, overwrite: bool = False) -> None:
    """Make ``factory(**params) -> SDE`` available as ``name`` to the CLI, flows and configs."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"problem {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def list_problems() -> dict[str, ProblemFactory]:
    return dict(_REGISTRY)


def problem_parameters(name: str) -> dict[str, Any]:
    """The parameters of a problem and their defaults (``"<required>"`` where there is none)."""
    factory = _factory(name)
    return {
        k: "<required>" if p.default is inspect.Parameter.empty else p.default
        for k, p in inspect.signature(factory).parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def get_problem(name: str, **params: Any) -> SDE:
    """Build the registered problem ``name`` with ``params`` overriding its defaults."""
    factory = _factory(name)
    allowed = problem_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"problem_params: problem {name!r} has no parameter(s) {unknown}; "
            f"allowed: {sorted(allowed)}"
        )
    try:
        return factory(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"problem_params: invalid parameters for {name!r}: {exc}") from exc


def default_problem(name: str | None) -> SDE | None:
    """The registered problem ``name`` built with its defaults; ``None`` for ``None``, an unknown
    name, or a problem that cannot be built without parameters."""
    if name is None or name not in _REGISTRY:
        return None
    try:
        return get_problem(name)
    except ConfigError:  # a user problem with required parameters
        return None


def problem_qoi(name: str | None) -> QoIFunction | None:
    """The quantity of interest validation reports for problem ``name``: the first it declares
    (``SDE.primary_qoi``) when built with its defaults; ``None`` when there is none."""
    sde = default_problem(name)
    return None if sde is None else sde.primary_qoi


def default_test_laws(name: str, params: dict[str, Any] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Named initial distributions a surrogate of problem ``name`` is validated on by default.

    The paper's where it has them (abc3d: the truncated Gaussian of experiment 3; runaway2d:
    Maxwellians); for bm1d the four laws of the verification experiment; otherwise a Gaussian
    and a bimodal mixture inside the training domain.
    """
    sde = get_problem(name, **(params or {}))
    pi = math.pi
    if name == "bm1d":
        return {
            "gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]},
            "uniform": {"kind": "uniform", "low": [-1.0], "high": [1.0]},
            "bimodal": {"kind": "gaussian_mixture", "weights": [0.5, 0.5],
                        "means": [[-1.0], [1.0]], "stds": [[0.3], [0.3]]},
            "skewed": {"kind": "truncated_gaussian", "mu": [-0.5], "s": [1.0],
                       "low": [-0.5], "high": [2.0]},
        }
    if name == "abc3d":
        return {"paper_truncated_gaussian": {
            "kind": "truncated_gaussian", "mu": [3 * pi / 2, pi, pi], "s": [pi / 3, pi / 5, pi / 4],
            "low": [0.0] * 3, "high": [2 * pi] * 3}}
    if name == "runaway2d":
        return {f"maxwellian_T{t}": {"kind": "maxwellian", "temperature": float(t)}
                for t in (3, 6, 10)}
    low, high = (np.asarray(v) for v in sde.domain)
    centre, width = (low + high) / 2, (high - low)
    return {
        "gaussian": {"kind": "gaussian", "mean": (centre + 0.075 * width).tolist(),
                     "std": (0.1 * width).tolist()},
        "bimodal": {"kind": "gaussian_mixture", "weights": [0.5, 0.5],
                    "means": [(centre - 0.25 * width).tolist(), (centre + 0.25 * width).tolist()],
                    "stds": [(0.075 * width).tolist()] * 2},
    }


def _factory(name: str) -> ProblemFactory:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"problem: unknown problem {name!r}; known problems: {sorted(_REGISTRY)}"
        ) from None


for _factory_fn in (bm1d, ou, abc3d, runaway2d, ou1d_rate):
    register_problem(_factory_fn.__name__, _factory_fn)

__all__ = [
    "default_problem",
    "default_test_laws",
    "get_problem",
    "list_problems",
    "problem_parameters",
    "problem_qoi",
    "register_problem",
]
