"""Shared fixtures. Every test writes under a temporary data root; Prefect state is temporary."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Before prefect/mlflow are imported anywhere: a private Prefect home (cached results and the
# ephemeral database must not leak between runs) and quiet telemetry.
_SESSION_TMP = tempfile.mkdtemp(prefix="prnf-tests-")
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)  # ~10 MB a run, else left in /tmp
# A PREFECT_HOME set by the user is kept. pytest-xdist's workers inherit the environment of the
# controller, where this file already ran: each worker gets a home of its own (two ephemeral
# Prefect servers must not share one database).
_OWN_HOME = "PRNF_TESTS_PREFECT_HOME"
if os.environ.get("PREFECT_HOME") in (None, os.environ.get(_OWN_HOME)):
    os.environ["PREFECT_HOME"] = os.environ[_OWN_HOME] = os.path.join(_SESSION_TMP,
                                                                      "prefect-home")
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


@pytest.fixture
def private_problem_registry(monkeypatch):
    """A copy of the problem registry for one test: what it registers (``register_problem``)
    no other test sees, whichever worker or order runs them."""
    import prnf_core.problems

    monkeypatch.setattr(prnf_core.problems, "_REGISTRY", dict(prnf_core.problems._REGISTRY))


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
def _production_profiles():
    """The production profiles of the session: one, unless a test brought it down (`prnf
    services down` is itself tested) and a later module needed it again. Each is brought down
    at the end, failing if a process is left behind."""
    from production import bring_down

    profiles = []
    yield profiles
    problems = [p for profile in profiles for p in bring_down(profile)]
    assert not problems, "prnf services down: " + "\n".join(problems)


@pytest.fixture(scope="module")
def production_profile(_production_profiles):
    """The production profile (``prnf services up``) in a fresh data root on free ports, shared
    by every module that needs it; brought up again only if a test brought it down."""
    from production import bring_up

    if not _production_profiles or _production_profiles[-1].down:
        _production_profiles.append(bring_up())
    return _production_profiles[-1]


# Under pytest-xdist (scripts/test.sh runs ``-n 2``): each module on one worker, so that a
# module-scoped fixture starts its servers once; the modules that share the production profile
# (a session fixture: one per worker) on the same worker; and the long, server-bound modules
# first, so that the short ones fill the other worker instead of trailing at the end.
_SAME_WORKER = {"tests/test_production_pipeline.py": "production profile",
                "tests/test_production_services.py": "production profile"}
_LONG_FIRST = ("production profile", "tests/test_services.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return _SAME_WORKER.get(module, module)

        def _assign_work_unit(self, node) -> None:
            # the default order (most tests first), the long modules moved to the front
            for scope in reversed(_LONG_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)
