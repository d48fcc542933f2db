"""Model registry: register every trained surrogate, promote only a better one.

Each new version of ``prnf-<problem>`` gets tags (dataset id, validation metrics,
``validation_status``) and the alias ``challenger``. It takes ``champion`` only when there is no
champion yet, or when its validation score on the *same* fresh test set is lower (better) than
the champion's score on that set; the pipeline validates both on it in the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION, CHALLENGER = "champion", "challenger"


def model_name(problem: str) -> str:
    return f"prnf-{problem}"


def champion_version(client: MlflowClient, name: str) -> Any | None:
    """The champion's ModelVersion, or None if the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


#: Version tags that identify a trained model: a version with both equal is the same model.
IDENTITY_TAGS = ("model_dir", "weights_sha256")


def weights_sha256(model_dir: str | Path) -> str:
    """The SHA-256 of a model directory's ``weights.pt``: the content key of a trained model."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "weights.pt", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model_dir: str | Path) -> dict[str, str]:
    """The :data:`IDENTITY_TAGS` of a model directory (its absolute path and weights hash)."""
    return {"model_dir": os.path.abspath(model_dir), "weights_sha256": weights_sha256(model_dir)}


def find_version(client: MlflowClient, identity: Mapping[str, str],
                 name: str | None = None) -> Any | None:
    """The earliest version (of ``name``, or of any registered model) that carries the tags
    ``identity``, or None.

    The search is by tag, and the match is checked again on the returned tags: they are what
    search calls return reliably (some MLflow 3.x releases return empty alias lists there).
    """
    query = f"tags.weights_sha256 = '{identity['weights_sha256']}'"
    if name is not None:
        query = f"name = '{name}' and {query}"
    try:
        found = client.search_model_versions(query)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return None
        raise
    same = [v for v in found if all(v.tags.get(k) == identity[k] for k in IDENTITY_TAGS)
            and (name is None or v.name == name)]
    return min(same, key=lambda v: int(v.version)) if same else None


def register(client: MlflowClient, model_uri: str, name: str, run_id: str,
             tags: Mapping[str, Any]) -> str:
    """Register ``model_uri`` as a version of ``name``; tag it; alias it challenger.

    Idempotent: a model logged by :func:`tasks.pyfunc.log_surrogate` carries the identity of
    its model directory (:data:`IDENTITY_TAGS`), and a version of ``name`` with the same
    identity is reused, not duplicated, e.g. when ``prnf register MODEL_DIR`` completes a run
    whose tracking server died after the version was created. A new version gets the identity
    tags in the same call that creates it, so no outage can leave it without them.
    """
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(name, description="prnf surrogate of p(X_T | X_0)")
    # A tracking server accepts a ``models:/<model_id>`` source only with that model_id.
    model_id = _logged_model_id(model_uri)
    identity = _logged_identity(client, model_id)
    existing = find_version(client, identity, name) if identity else None
    if existing is not None:
        version = existing.version
    else:
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=identity,
                                              model_id=model_id).version
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    return str(version)


def logged_model_uri(version: Any) -> str | None:
    """The ``models:/m-...`` URI of the logged model a version was registered from, or None.

    From ``version.source`` when ``model_id`` is empty: search calls return versions without
    their ``model_id`` (MLflow 3.17, like the aliases noted in :func:`find_version`).
    """
    if version.model_id:
        return f"models:/{version.model_id}"
    source = version.source or ""
    return source if _logged_model_id(source) else None


def _logged_identity(client: MlflowClient, model_id: str | None) -> dict[str, str]:
    """The identity tags of a logged model (empty for other URIs or models logged without)."""
    if model_id is None:
        return {}
    model_tags = client.get_logged_model(model_id).tags
    if not all(model_tags.get(k) for k in IDENTITY_TAGS):
        return {}
    return {k: model_tags[k] for k in IDENTITY_TAGS}


def _logged_model_id(model_uri: str) -> str | None:
    """``m-...`` of a logged-model URI ``models:/m-...``; None for other URIs."""
    rest = model_uri.removeprefix("models:/")
    if rest == model_uri or "/" in rest or "@" in rest:
        return None
    return rest


def promote_if_better(client: MlflowClient, name: str, version: str, score: float,
                      champion_score: float | None, passed: bool) -> dict[str, Any]:
    """Give ``version`` the champion alias if it passed validation and beats the champion.

    ``champion_score`` is the current champion's score on the same test set (None: no champion).
    """
    current = champion_version(client, name)
    if not passed:
        decision, promoted = "validation failed", False
    elif current is None:
        decision, promoted = "no champion yet", True
    elif champion_score is None:
        decision, promoted = "champion could not be scored on this test set", False
    elif score < champion_score:
        decision = f"beats champion v{current.version} ({score:.4g} < {champion_score:.4g})"
        promoted = True
    else:
        decision, promoted = (f"does not beat champion v{current.version} "
                              f"({score:.4g} >= {champion_score:.4g})"), False
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", decision)
    champion = version if promoted else (current.version if current else None)
    return {"promoted": promoted, "decision": decision, "champion_version": champion,
            "champion_uri": f"models:/{name}@{CHAMPION}" if champion else None}
