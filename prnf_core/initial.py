r"""Initial distributions :math:`p_0` as typed, serializable specs.

Every spec is a pydantic model with a ``kind`` discriminator, so it round-trips through JSON and
YAML, renders as a form in the Prefect UI and is recorded in dataset attributes. Each gives
``sample(n, rng) -> (n, d)``; those with a density give ``logpdf(x) -> (n,)``. The kinds are
defined in :mod:`prnf_core.initial_specs` (re-exported here); this module parses them.

>>> import numpy as np
>>> from prnf_core.initial import parse_initial
>>> spec = parse_initial('{"kind": "gaussian", "mean": [0, 1], "std": [1, 0.5]}')
>>> spec.sample(4, np.random.default_rng(0)).shape
(4, 2)
>>> round(float(spec.logpdf(np.array([[0.0, 1.0]]))[0]), 4)
-1.1447
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from prnf_core.errors import ConfigError
from prnf_core.initial_specs import (
    BaseSpec,
    Gaussian,
    GaussianMixture,
    Maxwellian,
    PointMass,
    SamplesFile,
    TruncatedGaussian,
    Uniform,
)

__all__ = [  # the specs of initial_specs are re-exported
    "INITIAL_KINDS", "BaseSpec", "Gaussian", "GaussianMixture", "InitialSpec", "Maxwellian",
    "PointMass", "SamplesFile", "TruncatedGaussian", "Uniform", "initial_to_json",
    "initial_to_yaml", "parse_initial",
]


InitialSpec = Annotated[
    Uniform | Gaussian | TruncatedGaussian | GaussianMixture | PointMass | Maxwellian | SamplesFile,
    Field(discriminator="kind"),
]
INITIAL_KINDS: tuple[str, ...] = (
    "uniform", "gaussian", "truncated_gaussian", "gaussian_mixture", "point_mass", "maxwellian",
    "samples_file",
)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(InitialSpec)


def parse_initial(value: Any) -> InitialSpec:
    """Build a spec from a dict, a JSON/YAML string, a path to a YAML/JSON file, or a spec.

    Errors are :class:`~prnf_core.errors.ConfigError` naming the field and the allowed kinds.
    """
    if isinstance(value, BaseSpec):
        return value
    if isinstance(value, str | Path):
        text = str(value)
        path = Path(text)
        if not text.lstrip().startswith("{") and path.suffix in {".yaml", ".yml", ".json"}:
            if not path.is_file():
                raise ConfigError(f"initial: no such spec file {text!r}")
            text = path.read_text()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"initial: not valid JSON/YAML: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"initial: expected a mapping with a 'kind' field, got {value!r}")
    if value.get("kind") not in INITIAL_KINDS:
        raise ConfigError(
            f"initial.kind: unknown kind {value.get('kind')!r}; allowed: {list(INITIAL_KINDS)}"
        )
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"initial: {_format_validation_error(exc)}") from None


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in INITIAL_KINDS)
        parts.append(f"{loc or '(spec)'}: {err['msg']}")
    return "; ".join(parts)


def initial_to_json(spec: InitialSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


def initial_to_yaml(spec: InitialSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=True)
