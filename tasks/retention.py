"""Retention for scheduled runs: what a nightly pipeline may delete, and what it always keeps.

Every pipeline run registers a version of ``prnf-<problem>`` and simulates fresh MC test sets;
without a policy the registry, the artifact store and the data root grow without bound.

**Model versions** (:func:`prune_registry`). Kept: every version holding an alias (``champion``
and ``challenger``: what ``models:/NAME@champion`` serves and what the last run produced; any
other alias someone set by hand, too) and the ``keep_last`` highest version numbers (recent
history, to compare or roll back to). Every other version is deleted with its logged model and
that model's artifacts (MLflow only marks a logged model deleted; its files stay until
``mlflow gc``, so they are removed here), and, with ``delete_model_dirs``, the local trained
model directory named by its ``model_dir`` tag. Nothing a kept version needs is deleted: a
logged model or model directory that a kept version (or a version of another registered model)
also uses is left in place, and the report says so. A model directory whose weights no longer
match the version's ``weights_sha256`` tag holds another model and is left in place too.

**Test sets** (:func:`prune_test_sets`). Dataset stores in the dataset root
(:func:`prnf_core.paths.dataset_root`: ``<data root>/datasets``, or ``$PRNF_DATASET_ROOT``, a
local directory or an ``s3://`` prefix) whose Zarr attributes say ``prnf.role == "test"`` and
whose ``prnf.created_at`` is older than the maximum age are deleted, except those in ``keep``:
the fixed regression test sets, and whatever the champion needs. Training sets, and stores
without a role or creation time (written by older prnf versions), are never deleted by age. A
local store is renamed to a hidden sibling before it is removed, so a reader never sees half a
store under its real name; a store on object storage loses its group document first
(:func:`prnf_core.objectstore.remove_store`).

The policy's settings are :class:`flows.config.RetentionConfig` (pipeline parameters).
Both functions log nothing; they return what they did, and the caller reports it.

>>> import tempfile, zarr
>>> from datetime import UTC, datetime
>>> with tempfile.TemporaryDirectory() as folder:
...     root = Path(folder)
...     for name, created in (("old", "2024-01-01T00:00:00Z"), ("new", "2024-03-01T00:00:00Z")):
...         group = zarr.open_group(root / "datasets" / f"{name}.zarr", mode="w", zarr_format=3)
...         group.attrs["prnf"] = {"role": "test", "created_at": created}
...     deleted = prune_test_sets(root / "datasets", 14, keep=set(),
...                               now=datetime(2024, 3, 2, tzinfo=UTC))
...     [Path(p).name for p in deleted], sorted(p.name for p in (root / "datasets").iterdir())
(['old.zarr'], ['new.zarr'])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from prnf_core import objectstore
from tasks.registry import logged_model_uri, weights_sha256

__all__ = ["prune_registry", "prune_test_sets"]

_DELETING = ".deleting"  # suffix of a store or directory set aside to be removed


# -- model versions ------------------------------------------------------------------------------

def prune_registry(client: MlflowClient, name: str, keep_last: int,
                   delete_model_dirs: bool = True) -> list[dict[str, Any]]:
    """Delete the versions of ``name`` that the policy does not keep (see the module doc).

    Returns one dict per deleted version: ``version``, ``model_id`` (or None), ``model_dir``
    (or None), ``deleted`` (what was removed, among ``"version"``, ``"logged_model"``,
    ``"artifacts"``, ``"model_dir"``) and ``skipped`` (what was left in place, and why).
    Nothing is deleted when ``name`` is not a registered model. The aliases are read again
    before each deletion: a version aliased meanwhile (by a concurrent run) is kept. A version
    is deleted first, then its logged model and files: an interruption can leave files of a
    deleted version behind (``mlflow gc`` removes a deleted logged model's artifacts), never a
    version without its files.
    """
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1")
    try:
        # Aliases from the registered model: search calls may return empty alias lists.
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return []
        raise
    numbers = sorted({int(v.version) for v in _all_versions(client, f"name = '{name}'")})
    kept = {int(v) for v in aliases.values()} | set(numbers[-keep_last:])
    doomed = [n for n in numbers if n not in kept]
    if not doomed:
        return []
    # The versions read one by one: search results may lack model_id (see registry.py).
    keep_versions = {n: client.get_model_version(name, str(n)) for n in sorted(kept)}
    doomed_versions = {n: client.get_model_version(name, str(n)) for n in doomed}
    by_alias = {int(v): alias for alias, v in aliases.items()}
    needs: dict[tuple[str, str], str] = {}  # ("model_id" | "model_dir", value) -> who needs it
    for number, version in keep_versions.items():
        who = f"{by_alias[number]} v{number}" if number in by_alias else f"kept v{number}"
        for key, value in (("model_id", _model_id(version)), ("model_dir", _model_dir(version))):
            if value:
                needs.setdefault((key, value), who)

    doomed_keys = {(name, str(n)) for n in doomed}
    done_models: set[str] = set()
    report = []
    for number, version in doomed_versions.items():
        if str(number) in map(str, client.get_registered_model(name).aliases.values()):
            continue  # aliased since the listing (by a concurrent run or by hand): kept
        model_id, model_dir = _model_id(version), _model_dir(version)
        logged = _logged_model(client, model_id)
        if model_dir is None and logged is not None:
            model_dir = _norm(logged.tags.get("model_dir"))
        checksum = version.tags.get("weights_sha256") or (
            logged.tags.get("weights_sha256") if logged is not None else None)
        entry: dict[str, Any] = {"version": str(number), "model_id": model_id,
                                 "model_dir": model_dir, "deleted": [], "skipped": []}
        client.delete_model_version(name, str(number))
        entry["deleted"].append("version")

        if model_id and model_id in done_models:
            entry["skipped"].append(f"logged model {model_id}: deleted with another version")
        elif model_id:
            user = needs.get(("model_id", model_id)) or _other_user(
                client, f"source_path = 'models:/{model_id}'", doomed_keys)
            if user:
                entry["skipped"].append(f"logged model {model_id}: used by {user}")
            elif logged is None:
                entry["skipped"].append(f"logged model {model_id}: not found")
            else:
                try:
                    get_artifact_repository(logged.artifact_location).delete_artifacts()
                    _remove_empty_parent(logged.artifact_location, model_id)
                    entry["deleted"].append("artifacts")
                except (MlflowException, OSError) as exc:  # `mlflow gc` can finish it later
                    entry["skipped"].append(f"artifacts of {model_id}: could not delete ({exc})")
                client.delete_logged_model(model_id)
                entry["deleted"].append("logged_model")
                done_models.add(model_id)

        if model_dir and delete_model_dirs:
            skipped = _model_dir_in_use(client, model_dir, checksum, needs, doomed_keys)
            if skipped:
                entry["skipped"].append(f"model_dir {model_dir}: {skipped}")
            else:
                try:
                    _remove_dir(Path(model_dir))
                    entry["deleted"].append("model_dir")
                except OSError as exc:
                    entry["skipped"].append(f"model_dir {model_dir}: could not delete ({exc})")
        report.append(entry)
    return report


def _all_versions(client: MlflowClient, query: str) -> list[Any]:
    """Every (not deleted) model version matching ``query``, all pages."""
    versions: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(query, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _model_id(version: Any) -> str | None:
    uri = logged_model_uri(version)
    return uri.removeprefix("models:/") if uri else None


def _model_dir(version: Any) -> str | None:
    return _norm(version.tags.get("model_dir"))


def _norm(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _logged_model(client: MlflowClient, model_id: str | None) -> Any | None:
    if not model_id:
        return None
    try:
        return client.get_logged_model(model_id)
    except MlflowException:
        return None


def _other_user(client: MlflowClient, query: str, doomed: set[tuple[str, str]]) -> str | None:
    """A live version matching ``query`` that is not being deleted, as ``NAME vN``, or None.

    A value the filter language cannot quote counts as in use: nothing is deleted unchecked.
    """
    value = query.split(" = ", 1)[1][1:-1]
    if "'" in value:
        return "possibly another version (the path cannot be searched for)"
    for version in _all_versions(client, query):
        if (version.name, str(version.version)) not in doomed:
            return f"{version.name} v{version.version}"
    return None


def _model_dir_in_use(client: MlflowClient, model_dir: str, checksum: str | None,
                      needs: dict[tuple[str, str], str],
                      doomed: set[tuple[str, str]]) -> str | None:
    """Why ``model_dir`` must stay, or None when it may be deleted."""
    user = needs.get(("model_dir", model_dir))
    if user is None:
        user = _other_user(client, f"tags.model_dir = '{model_dir}'", doomed)
    if user:
        return f"used by {user}"
    path = Path(model_dir)
    if not path.is_dir() or path.is_symlink():
        return "not on disk"
    weights = path / "weights.pt"
    if not weights.is_file():
        return "not a model directory (no weights.pt)"
    if checksum and weights_sha256(path) != checksum:
        return "holds other weights than this version's"
    return None


def _remove_empty_parent(artifact_location: str, model_id: str) -> None:
    """The ``models/<model_id>`` folder left empty above a local ``.../artifacts``."""
    if urlparse(artifact_location).scheme not in ("", "file"):
        return
    from mlflow.utils.file_utils import local_file_uri_to_path

    parent = Path(local_file_uri_to_path(artifact_location)).parent
    if parent.name == model_id and parent.is_dir():
        with contextlib.suppress(OSError):  # not empty: something else lives there
            parent.rmdir()


# -- test sets -----------------------------------------------------------------------------------

def prune_test_sets(folder: Path | str, max_age_days: float, keep: set[str],
                    now: datetime | None = None) -> list[str]:
    """Delete the MC test sets in ``folder`` (a directory or an ``s3://`` prefix: the dataset
    root) older than ``max_age_days``.

    A store is deleted only if its attributes say ``prnf.role == "test"`` and its
    ``prnf.created_at`` (ISO-8601, UTC when no offset is given) is more than ``max_age_days``
    before ``now`` (default: the current time), and its path is not in ``keep``.
    Returns the deleted paths (absolute, or URLs, as strings).
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    limit = now - timedelta(days=max_age_days)
    if objectstore.is_remote(folder):
        return _prune_remote(str(folder), limit, {k.rstrip("/") for k in keep})
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for leftover in folder.glob(f".*{_DELETING}"):  # a removal interrupted earlier
        shutil.rmtree(leftover, ignore_errors=True)
    protected = {p for k in keep for p in (os.path.abspath(k), os.path.realpath(k))}
    deleted = []
    for store in sorted(folder.glob("*.zarr")):
        if store.name.startswith(".") or store.is_symlink() or not store.is_dir():
            continue
        path = os.path.abspath(store)
        if path in protected or os.path.realpath(store) in protected:
            continue
        if _expired(store, limit):
            _remove_dir(store)
            deleted.append(path)
    return deleted


def _prune_remote(root: str, limit: datetime, keep: set[str]) -> list[str]:
    deleted = []
    for url in objectstore.list_stores(root):
        if url not in keep and _expired(url, limit):
            objectstore.remove_store(url)
            deleted.append(url)
    return deleted


def _expired(store: Path | str, limit: datetime) -> bool:
    """Whether ``store`` is a test set created before ``limit``."""
    meta = _prnf_attrs(store)
    created = _parse_time(meta.get("created_at"))
    return meta.get("role") == "test" and created is not None and created < limit


def _prnf_attrs(store: Path | str) -> dict[str, Any]:
    try:
        meta = objectstore.open_group(store, "r").attrs.get("prnf")
    except Exception:  # not a Zarr v3 group (or unreadable): not ours to judge
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _remove_dir(path: Path) -> None:
    """Rename ``path`` to a hidden sibling, then remove it: no half directory under its name."""
    hidden = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{_DELETING}")
    path.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)
