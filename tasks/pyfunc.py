"""The trained surrogate as an ``mlflow.pyfunc`` model.

``predict(x0 rows)`` returns one X_T per row; ``params={"seed": s}`` makes it reproducible. A
conditioned model (``ModelConfig.conditioning``) takes its conditions as params too:
``params={"seed": 0, "t": 0.5, "E0": 0.001}`` samples X_t under those SDE parameters (the
logged signature declares them, defaulting to the box's upper time and parameter midpoints);
conditions outside the trained box are refused. ``predict`` also measures how many x0 rows lie
outside the model's training x0 domain (:mod:`prnf_core.trust`): above ``params["max_outside"]``
(default 0.01) it warns (a ``UserWarning`` and a log line naming the fraction), with
``params["strict"]=True`` it refuses; inside an active MLflow run the fraction is logged as the
metric ``trust.outside_fraction``. The log-density is reachable from the loaded
model: ``mlflow.pyfunc.load_model(uri).unwrap_python_model().log_prob(y, x0, t=..., params=...)``.

Logged as "models from code" (``tasks/pyfunc_entry.py``), not a cloudpickled object. Loading any
pyfunc model runs Python code stored with it: load models only from registries you trust. That
code imports prnf, so the logged requirements pin ``prnf==<this version>`` next to its
dependencies: an environment built from them can load the model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import infer_signature

from prnf_core._version import __version__

PIP_REQUIREMENTS = [
    f"prnf=={__version__}",
    "torch>=2.4,<2.15", "numpy>=1.26", "scipy>=1.11", "pydantic>=2.7,<3", "zuko>=1.2",
    "zarr>=3.1,<4", "pyyaml>=6",
]


class SurrogatePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around a saved :class:`~prnf_core.models.base.ConditionalSampler`."""

    def load_context(self, context: Any) -> None:
        from prnf_core.models import load_metadata, load_model

        self.model = load_model(context.artifacts["model"])
        self.metadata = load_metadata(context.artifacts["model"])

    def predict(self, context: Any, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        """One X_T per x0 row (conditioned model: X_t under the conditions in ``params``, every
        key but ``seed``: ``t`` and SDE parameter names). MLflow reads these hints:
        ``np.ndarray`` is a type it accepts without inferring a schema from it (the logged
        signature comes from an example), and a hint-less ``predict`` would make it warn at
        every import."""
        import torch

        x0 = np.asarray(model_input, dtype=np.float64)
        conditions = {k: v for k, v in (params or {}).items() if k not in _CONTROL_PARAMS}
        seed = int((params or {}).get("seed", 0))
        check_trust(self.model, x0, params or {})
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
        with torch.no_grad():
            return self.model.sample(x0, generator=gen,
                                     **_conditions(self.model, conditions)).cpu().numpy()

    def log_prob(self, y: np.ndarray, x0: np.ndarray, t: Any = None,
                 params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model.log_prob(np.asarray(y), np.asarray(x0), t=t,
                                       params=params).cpu().numpy()

    def sample_initial(self, spec: Any, n: int, seed: int = 0, t: Any = None,
                       params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.model.sample_initial(spec, n, seed=seed, t=t, params=params)


#: ``predict`` params that are not conditions of the model.
_CONTROL_PARAMS = ("seed", "strict", "max_outside")


def check_trust(model: Any, x0: np.ndarray, params: dict[str, Any]) -> float | None:
    """The fraction of the rows ``x0`` outside ``model``'s training domain (None: the model
    predates domain records); warns above ``params["max_outside"]``, refuses with
    ``params["strict"]`` (:func:`prnf_core.trust.check_coverage`), and logs the fraction to
    the active MLflow run if there is one."""
    import logging
    import warnings

    from prnf_core.trust import DEFAULT_MAX_OUTSIDE, check_coverage, predates_domain

    strict = bool(params.get("strict", False))
    max_outside = float(params.get("max_outside", DEFAULT_MAX_OUTSIDE))
    if getattr(model, "training_domain", None) is None:
        if strict:
            raise predates_domain()
        return None
    cov = model.coverage(x0.reshape(-1, model.dim) if x0.ndim == 1 else x0)
    message = check_coverage(cov, max_outside, strict)
    if message is not None:
        logging.getLogger("prnf.trust").warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    if mlflow.active_run() is not None:
        mlflow.log_metric("trust.outside_fraction", cov.outside_fraction)
    return cov.outside_fraction


def _conditions(model: Any, conditions: dict[str, Any]) -> dict[str, Any]:
    """``{"t": ..., "params": {...}}`` for ``sample`` from a flat ``{name: value}``; none for a
    model without conditioning given none."""
    conditions = dict(conditions)
    t = conditions.pop("t", None)
    if model.conditioning is None and t is None and not conditions:
        return {}
    return {"t": t, "params": conditions or None}


def signature_params(model: Any) -> dict[str, Any]:
    """The params of a model's logged signature, with their defaults: ``seed``, the trust
    check's ``strict`` and ``max_outside`` and, for a conditioned model, its conditions (the
    box's upper time and the parameter midpoints)."""
    box = model.conditioning
    return {"seed": 0, "strict": False, "max_outside": 0.01,
            **({} if box is None else box.example())}


def log_surrogate(model_dir: str | Path, run_id: str, example_x0: np.ndarray) -> str:
    """Log the model directory as a pyfunc model under ``run_id``; return its model URI.

    The logged model is tagged with the directory's identity (:func:`tasks.registry.
    model_identity`), by which registering it again reuses its model version.
    """
    from prnf_core.models import load_model
    from tasks.registry import model_identity

    model = load_model(model_dir, device="cpu")
    import torch

    params = signature_params(model)
    with torch.no_grad():
        example_out = model.sample(example_x0, generator=torch.Generator().manual_seed(0),
                                   **_conditions(model, {k: v for k, v in params.items()
                                                         if k not in _CONTROL_PARAMS}))
    signature = infer_signature(example_x0.astype(np.float64), example_out.numpy(),
                                params=params)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={"model": str(model_dir)},
            pip_requirements=PIP_REQUIREMENTS,
            signature=signature,
            input_example=example_x0.astype(np.float64),
            tags=model_identity(model_dir),
        )
    return info.model_uri


def load_surrogate(uri: str) -> SurrogatePyfunc:
    """Load a model URI (``models:/NAME@champion``, ``runs:/...``) or a local model directory."""
    path = Path(uri)
    if path.is_dir() and (path / "weights.pt").is_file():
        from prnf_core.models import load_metadata, load_model

        wrapper = SurrogatePyfunc()
        wrapper.model, wrapper.metadata = load_model(path), load_metadata(path)
        return wrapper
    # MLflow downloads the model into a fresh temporary directory that it never removes (one copy
    # per load: a scheduled sampler would fill /tmp); load_context reads the weights into memory,
    # so the copy can go as soon as the model is loaded.
    with tempfile.TemporaryDirectory(prefix="prnf-model-") as folder:
        return mlflow.pyfunc.load_model(uri, dst_path=folder).unwrap_python_model()
