"""Shared fixtures. Every test writes under a temporary data root; Prefect state is temporary."""

from __future__ import annotations

import os
import tempfile

import pytest

# Before prefect/mlflow are imported anywhere: a private Prefect home (cached results and the
# ephemeral database must not leak between runs) and quiet telemetry.
_SESSION_TMP = tempfile.mkdtemp(prefix="prnf-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_SESSION_TMP, "prefect-home"))
os.environ["PRNF_DATA_ROOT"] = os.path.join(_SESSION_TMP, "data")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (in-process API) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def dask_client_2():
    """A real LocalCluster of 2 worker processes, shared by the tests that need one."""
    from prnf_core.cluster import ExecutionConfig, dask_client

    with dask_client(ExecutionConfig(workers=2)) as client:
        yield client


@pytest.fixture(scope="module")
def private_data_root(tmp_path_factory):
    """A data root (and so an embedded MLflow store) of one test module alone, for tests that
    count registered versions or need an empty registry; the session's is restored after."""
    from prnf_core.paths import DATA_ROOT_ENV

    previous = {k: os.environ.get(k) for k in (DATA_ROOT_ENV, "MLFLOW_TRACKING_URI")}
    root = tmp_path_factory.mktemp("private-data")
    os.environ[DATA_ROOT_ENV] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield root
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def production_profile():
    """The production profile (``prnf services up``) in a fresh data root on free ports, for
    the whole session; brought down at its end, failing if a process is left behind."""
    from production import bring_down, bring_up

    profile = bring_up()
    try:
        yield profile
    finally:
        problems = bring_down(profile)
        assert not problems, "prnf services down: " + "\n".join(problems)
