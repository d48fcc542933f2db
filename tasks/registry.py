"""Model registry: register every trained surrogate, promote only a better one.

Each new version of ``prnf-<problem>`` gets tags (dataset id, validation metrics,
``validation_status``) and the alias ``challenger``. It takes ``champion`` only when there is no
champion yet, or when its validation score on the *same* fresh test set is lower (better) than
the champion's score on that set; the pipeline validates both on it in the same run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
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


def register(client: MlflowClient, model_uri: str, name: str, run_id: str,
             tags: Mapping[str, Any]) -> str:
    """Register ``model_uri`` as a new version of ``name``; tag it; alias it challenger."""
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(name, description="prnf surrogate of p(X_T | X_0)")
    # A tracking server accepts a ``models:/<model_id>`` source only with that model_id.
    model_id = _logged_model_id(model_uri)
    version = client.create_model_version(name, model_uri, run_id=run_id,
                                          model_id=model_id).version
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    return str(version)


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
