"""The data root, and where path parameters are allowed to point.

Path rule: a *relative* path given to a flow (Prefect UI, deployment, YAML) is taken relative to
the data root and must stay inside it once symlinks and ``..`` are resolved, so a form field
cannot write (or read) elsewhere on the worker's disk. An absolute path or a ``~`` path is an
explicit choice and is used as given. A URL (``scheme:/...``) is used as given only where the
field reads through MLflow (model URIs: ``models:/``, ``runs:/``) or is a dataset store
(:data:`DatasetPath`: ``s3://bucket/prefix/name.zarr`` on object storage, checked by
:mod:`prnf_core.objectstore`; other schemes are refused, naming the allowed ones); every other
path is local (output pages, plots, model directories), and a URL there is refused: a local
filesystem would take ``s3://bucket/x`` for a folder ``./s3:``. The ``prnf`` CLI turns relative
paths into absolute ones against the working directory first, which is what a shell user means.

Dataset stores go to ``$PRNF_DATASET_ROOT`` when it is set (a local directory or an
``s3://bucket/prefix`` URL), else to ``<data root>/datasets`` (:func:`dataset_root`).

Atomic writes: :func:`atomic_path` gives a temporary sibling to write and moves it onto the
final name only once it is complete, so a reader (or a run killed mid-write) never sees half a
file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from prnf_core import objectstore
from prnf_core.errors import ConfigError

DATA_ROOT_ENV = "PRNF_DATA_ROOT"
DATASET_ROOT_ENV = "PRNF_DATASET_ROOT"
# Two or more scheme characters, so that a Windows drive letter ("C:/...") is not a URL.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def data_root() -> Path:
    """``$PRNF_DATA_ROOT`` or ``./data``, resolved to an absolute path."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data").expanduser().resolve()


def dataset_root() -> Path | str:
    """Where dataset stores go by default: ``$PRNF_DATASET_ROOT`` (a local directory, resolved,
    or an ``s3://bucket/prefix`` URL, returned as a string) or ``<data root>/datasets``.

    Raises:
        ConfigError: ``$PRNF_DATASET_ROOT`` is a URL of another scheme, or malformed.
    """
    value = os.environ.get(DATASET_ROOT_ENV, "").strip()
    if not value:
        return data_root() / "datasets"
    if is_url(value):
        return objectstore.parse_url(value, DATASET_ROOT_ENV, need_key=False).url
    return Path(value).expanduser().resolve()


def _in_dataset_root(name: str) -> Path | str:
    root = dataset_root()
    return f"{root}/{name}" if isinstance(root, str) else root / name


def default_dataset_path(problem: str, dataset_id: str) -> Path | str:
    """``<dataset root>/<problem>-<id>.zarr`` (a URL string under an ``s3://`` root)."""
    return _in_dataset_root(f"{problem}-{dataset_id}.zarr")


def default_family_path(problem: str, family_id: str) -> Path | str:
    """Where the growing store of a dataset family lives (see ``DatasetConfig.family_id``)."""
    return _in_dataset_root(f"{problem}-family-{family_id}.zarr")


def is_url(value: str) -> bool:
    """Whether ``value`` starts with a URL scheme (``s3://``, ``http://``, ``models:/``)."""
    return bool(_URL.match(value))


def resolve_path(value: str | Path, field: str, allow_urls: bool = False,
                 dataset_store: bool = False) -> str:
    """The path a parameter ``field`` designates, following the path rule of this module.

    ``allow_urls``: the field is a model URI that MLflow resolves (``models:/``, ``runs:/``),
    so a URL is passed on as given. ``dataset_store``: the field is a dataset store, which may
    be an ``s3://bucket/prefix`` URL (returned normalized, without a trailing slash). Otherwise
    a URL is refused.

    Raises:
        ConfigError: ``value`` is empty, a URL where neither flag allows one, a dataset store
            URL of another scheme than ``s3://`` or a malformed one (no bucket), or relative and
            resolves outside the data root (``..`` or a symlink pointing out of it); the
            message names ``field``.
    """
    text = str(value)
    if not text.strip():
        raise ConfigError(f"{field}: must not be empty")
    if is_url(text):
        if allow_urls:
            return text
        if dataset_store:
            return objectstore.check_url(text, field)
        prefix = re.match(r"[^:]+:/*", text).group(0)  # "s3://"
        raise ConfigError(f"{field}: URLs ({prefix}...) are not accepted here: give a local "
                          "path (object-store URLs, s3://, are accepted only for dataset "
                          "stores)")
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    root = data_root()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(
            f"{field}: relative path {text!r} resolves outside the data root {root}; "
            "relative paths must stay inside it (give an absolute path to write elsewhere)"
        )
    return str(resolved)


@contextmanager
def atomic_path(target: str | Path, unique: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``target`` to write (a file or a directory); when the block
    succeeds it replaces ``target`` in one rename, when it fails it is removed.

    The temporary name keeps ``target``'s suffix (``np.save`` and Zarr go by it) and is hidden
    (``.name.tmp.npy``). ``unique`` adds a random token, for targets that concurrent writers
    may share. A directory replaces an existing directory in two renames (the old one is set
    aside, then deleted): checks that must run right before, run at the end of the block.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with atomic_path(Path(folder) / "page.md") as tmp:
    ...         _ = tmp.write_text("done")
    ...     sorted(p.name for p in Path(folder).iterdir()), (Path(folder) / "page.md").read_text()
    (['page.md'], 'done')
    """
    target = Path(target)
    stem = f".{target.name}" + (f".{uuid.uuid4().hex[:8]}" if unique else "")
    tmp = target.with_name(f"{stem}.tmp{target.suffix}")
    old = target.with_name(f"{stem}.old")
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir() and not target.is_symlink():
            target.rename(old)  # a directory cannot be renamed onto a non-empty one
        tmp.replace(target)
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _confined(allow_urls: bool, dataset_store: bool = False) -> AfterValidator:
    def check(value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info.field_name or "path", allow_urls=allow_urls,
                            dataset_store=dataset_store)
    return AfterValidator(check)


#: A path parameter of a flow, following the path rule (a relative path is taken under the
#: data root and may not leave it; URLs are refused), in the field's name.
DataPath = Annotated[str, _confined(allow_urls=False)]
#: A dataset store: a :data:`DataPath` or an ``s3://bucket/prefix/name.zarr`` URL (other
#: schemes refused, naming the field and the allowed schemes; see :mod:`prnf_core.objectstore`).
DatasetPath = Annotated[str, _confined(allow_urls=False, dataset_store=True)]
#: A model reference: a URI MLflow resolves (``models:/``, ``runs:/``) or a :data:`DataPath`.
ModelRef = Annotated[str, _confined(allow_urls=True)]
