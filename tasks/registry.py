"""Model registry: register every trained surrogate, promote only a truly better one.

**One registered model per configuration fingerprint** (:class:`prnf_core.verdict.Fingerprint`:
problem, resolved problem parameters, horizon T, dimension). The problem's default
configuration is ``prnf-<problem>``, so ``models:/prnf-ou@champion`` is the champion of the
default OU problem; any other configuration is ``prnf-<problem>-<fingerprint digest[:8]>``,
and its fingerprint is a tag of the registered model and of every version.
A champion is therefore only ever compared with models of the same SDE and horizon.

Each new version gets tags (dataset id, fingerprint, validation metrics, score and its standard
error, ``validation_status``) and the alias ``challenger``. It takes ``champion`` only if it
passed the gate (:func:`prnf_core.verdict.judge`) and: there is no champion yet; or the champion
fails the gate on the same test sets; or it beats the champion by more than two combined
standard errors on the same test sets (:func:`prnf_core.verdict.compare`). The pipeline scores
both on those test sets in the same run.
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

from prnf_core.verdict import DEFAULT_N_SE, Estimate, Fingerprint, compare

CHAMPION, CHALLENGER = "champion", "challenger"


def model_name(fingerprint: Fingerprint) -> str:
    """``prnf-<problem>`` for the problem's default configuration, else with the digest."""
    name = f"prnf-{fingerprint.problem}"
    return name if fingerprint.is_default() else f"{name}-{fingerprint.digest[:8]}"


def champion_version(client: MlflowClient, name: str) -> Any | None:
    """The champion's ModelVersion, or None if the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def model_version_of(client: MlflowClient, uri: str) -> tuple[str | None, str | None]:
    """``(name, version)`` of a registry URI ``models:/NAME/VERSION`` or ``models:/NAME@alias``
    (the alias resolved now); ``(None, None)`` for any other URI (``runs:/``, a logged model)."""
    rest = uri.removeprefix("models:/")
    if rest == uri or rest.startswith("m-"):
        return None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.partition("/")
    return name, version or None


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
                 name: str | None = None, keys: tuple[str, ...] = IDENTITY_TAGS) -> Any | None:
    """The earliest version (of ``name``, or of any registered model) that carries the tags
    ``identity`` (those of ``keys``; ``weights_sha256`` is always among them), or None.

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
    same = [v for v in found if all(v.tags.get(k) == identity[k] for k in keys)
            and (name is None or v.name == name)]
    return min(same, key=lambda v: int(v.version)) if same else None


def same_weights(client: MlflowClient, name: str, model_dir: str | Path) -> Any | None:
    """The earliest version of ``name`` whose weights are bit-identical to ``model_dir``'s
    (same ``weights_sha256``) but which was registered from another directory: registering
    ``model_dir`` would only add a duplicate of it. None when there is none (a version of
    ``model_dir`` itself is not a duplicate: :func:`register` reuses it)."""
    identity = model_identity(model_dir)
    found = find_version(client, identity, name, keys=("weights_sha256",))
    return None if found is None or found.tags.get("model_dir") == identity["model_dir"] \
        else found


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


def promote_if_better(client: MlflowClient, name: str, version: str, validation: Mapping[str, Any],
                      n_se: float = DEFAULT_N_SE) -> dict[str, Any]:
    """Give ``version`` the champion alias if it passed the gate and is truly better.

    ``validation`` is what :func:`tasks.validate.validate_surrogate` returned for the challenger
    (``passed``, ``score``, ``score_stderr``) with the current champion scored on the same test
    sets (``champion_score``, ``champion_score_stderr``, ``champion_passed``) or the reason it
    was not (``champion_note``). Scores, SEs, the margin and the decision become version tags.
    """
    current = champion_version(client, name)
    challenger = Estimate(validation["score"], validation["score_stderr"])
    tags: dict[str, Any] = {}
    if not validation["passed"]:
        decision, promoted = "validation failed: " + "; ".join(validation["failures"]), False
    elif current is None:
        decision, promoted = "no champion yet", True
    elif validation.get("champion_note"):
        decision = f"not promoted: champion v{current.version} {validation['champion_note']}"
        promoted = False
    elif not validation["champion_passed"]:
        decision = (f"champion v{current.version} fails the gate on these test sets "
                    f"(score {validation['champion_score']:.4g}); the challenger passes")
        promoted = True
    else:
        champion = Estimate(validation["champion_score"], validation["champion_score_stderr"])
        comparison = compare(challenger, champion, n_se)
        decision, promoted = f"{comparison.decision} (v{current.version})", comparison.promote
        tags.update({"champion_score": champion.value, "champion_score_stderr": champion.stderr,
                     "promotion_margin": comparison.margin,
                     "promotion_required_margin": comparison.required})
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in {**tags, "promotion": decision}.items():
        client.set_model_version_tag(name, version, key, str(value))
    champion = str(version) if promoted else (str(current.version) if current else None)
    return {"promoted": promoted, "decision": decision, "champion_version": champion,
            "champion_uri": f"models:/{name}@{CHAMPION}" if champion else None}
