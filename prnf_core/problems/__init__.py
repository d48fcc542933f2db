"""Built-in problems, selected by registered name (never by evaluating user strings).

>>> from prnf_core.problems import get_problem, list_problems
>>> sorted(list_problems())
['abc3d', 'bm1d', 'ou', 'runaway2d']
>>> get_problem("ou", dim=3).dim
3

Register your own with :func:`register_problem`; a factory takes keyword parameters with defaults
and returns an :class:`~prnf_core.sde.SDE`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from prnf_core.errors import ConfigError
from prnf_core.problems.abc3d import abc3d
from prnf_core.problems.bm1d import bm1d
from prnf_core.problems.ou import ou
from prnf_core.problems.runaway2d import runaway2d
from prnf_core.sde import SDE

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


def _factory(name: str) -> ProblemFactory:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"problem: unknown problem {name!r}; known problems: {sorted(_REGISTRY)}"
        ) from None


for _factory_fn in (bm1d, ou, abc3d, runaway2d):
    register_problem(_factory_fn.__name__, _factory_fn)

__all__ = ["get_problem", "list_problems", "problem_parameters", "register_problem"]
