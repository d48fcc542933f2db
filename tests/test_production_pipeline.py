"""The whole pipeline on the production profile, and its faults (issue 16).

The profile (``prnf services up``: PostgreSQL 15, SeaweedFS S3, Prefect and MLflow servers on
them, a Dask scheduler with two worker processes) is brought up once per session by the
``production_profile`` fixture. Every command runs as a subprocess in the environment the
profile exports, as a user's shell would after ``eval "$(prnf services up)"``: datasets go to
``s3://prnf-data/datasets``, simulation chunks run on the Dask workers, runs and models go to
MLflow on PostgreSQL with artifacts in S3, flow runs to Prefect on PostgreSQL.

Sizes are tiny (bm1d, 2000 training pairs, a few epochs): these tests check the plumbing and the
guarantees (nothing lost, bit-identical stores), not accuracy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time

import httpx
import numpy as np
import pytest
from production import REPO, Profile, run
from services import BIN, WORKER_STOP_GRACE, Service, output_tail, tail, wait_worker_online

pytestmark = pytest.mark.production

MODEL = "prnf-bm1d"
PIPELINE = {
    "problem": "bm1d", "n_train": 2000, "chunk_size": 500, "seed": 0,
    "training": {"epochs": 4, "batch_size": 128, "lr": 3e-3, "progress": False},
    "model": {"hidden_width": 32},
    # the gate is opened: these tests check where things are stored, not accuracy
    "validation": {"n_samples": 500, "chunk_size": 500, "max_kl": 1.0, "max_sw_ratio": 50,
                   "kl_samples": 500,
                   "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]}}},
    "execution": {},  # PRNF_DASK_ADDRESS: the profile's scheduler
}
# A store slow enough to be interrupted (runaway2d: ~1 ms per particle per core here).
SLOW = ["--problem", "runaway2d", "-n", "6000", "--chunk-size", "500", "--seed", "3"]


def prefect(profile: Profile, method: str, path: str, body: dict | None = None):
    response = httpx.request(method, f"{profile.exported['PREFECT_API_URL']}{path}", json=body,
                             timeout=30)
    response.raise_for_status()
    return response.json()


def mlflow_client(profile: Profile):
    from mlflow import MlflowClient

    url = profile.exported["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=url, registry_uri=url)


@contextlib.contextmanager
def profile_aws_env(profile: Profile):
    """The profile's ``AWS_*`` settings in this process's environment, restored afterwards."""
    env = {k: v for k, v in profile.exported.items() if k.startswith("AWS_")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def chunks_done(profile: Profile, url: str) -> int:
    """How many chunks the store at ``url`` has marked done (0 before it exists)."""
    from prnf_core.objectstore import open_group

    with profile_aws_env(profile):
        try:
            group = open_group(url, "r")
            return int(np.asarray(group["chunk_done"][:]).sum())
        except Exception:
            return 0


_ARRAYS: dict[str, dict[str, np.ndarray]] = {}  # of the local reference store, read once


def store_arrays(profile: Profile, path: str) -> dict[str, np.ndarray]:
    """Every array of the dataset store at ``path`` (local, or on the profile's S3), read in
    this process (a subprocess costs seconds of imports a call on a loaded machine) through a
    fresh s3fs instance: nothing listed or cached while the store was written is reused. The
    local reference store is read once."""
    import s3fs

    from prnf_core.objectstore import is_remote, open_group

    if path in _ARRAYS:
        return _ARRAYS[path]
    s3fs.S3FileSystem.clear_instance_cache()
    with profile_aws_env(profile):
        group = open_group(path, "r")
        arrays = {k: np.asarray(group[k][:]) for k in group.array_keys()}
    if not is_remote(path):
        _ARRAYS[path] = arrays
    return arrays


def assert_same_store(profile: Profile, a: str, b: str) -> None:
    left, right = store_arrays(profile, a), store_arrays(profile, b)
    data = [k for k in left if k not in ("chunk_seconds",)]  # timings differ by nature
    assert set(left) == set(right)
    for key in data:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def simulate(profile: Profile, out: str, *extra: str, in_process: bool = False,
             wait: bool = True, **env_values: str):
    """``prnf simulate`` of the SLOW store; on the profile's Dask workers unless
    ``in_process``."""
    args = [BIN / "prnf", "simulate", *SLOW, "--out", out, *extra]
    env = {**profile.env, **env_values}
    if in_process:
        env.pop("PRNF_DASK_ADDRESS")
        args += ["--workers", "0"]
    if wait:
        return run(args, env, timeout=300)
    return subprocess.Popen([str(a) for a in args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(check, what: str, timeout: float = 120.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture(scope="module")
def local_reference(production_profile):
    """The SLOW store simulated in-process to local disk: what every S3 store must equal."""
    path = production_profile.root / "reference.zarr"
    proc = simulate(production_profile, str(path), in_process=True)
    assert proc.returncode == 0, output_tail(proc)
    return str(path)


# --------------------------------------------------------------------------------------------
# 1. The pipeline deployment run by a Prefect worker, on the whole profile


@pytest.fixture(scope="module")
def deployment(production_profile):
    profile = production_profile
    env = {**profile.env, "PRNF_CHECKOUT": str(REPO)}
    pool = run([BIN / "prefect", "work-pool", "create", "prnf-process", "--type", "process"],
               env, timeout=120)
    assert pool.returncode == 0, output_tail(pool)
    deploy = run([BIN / "prefect", "--no-prompt", "deploy", "--name", "pipeline-nightly"],
                 env, timeout=240)
    assert deploy.returncode == 0, output_tail(deploy)
    (nightly,) = prefect(profile, "POST", "/deployments/filter", {})
    for schedule in nightly["schedules"]:  # no scheduled night may fire during the tests
        paused = run([BIN / "prefect", "deployment", "schedule", "pause",
                      "pipeline/pipeline-nightly", schedule["id"]], env, timeout=120)
        assert paused.returncode == 0, output_tail(paused)
    worker = Service("prefect worker", [BIN / "prefect", "worker", "start", "--pool",
                                        "prnf-process"], env, profile.root / "worker.log",
                     cwd=REPO)
    worker.start()
    try:
        wait_worker_online(worker, profile.exported["PREFECT_API_URL"])
        yield {"deployment": nightly, "worker": worker}
    finally:
        worker.snapshot()
        leftovers = worker.stop(grace=WORKER_STOP_GRACE)
        assert not leftovers, f"processes left running: {leftovers}"


def deployment_run(profile: Profile, params: dict, watch: bool = True):
    extra = ["--watch", "--watch-interval", "2", "--watch-timeout", "400"] if watch else []
    proc = run([BIN / "prefect", "deployment", "run", "pipeline/pipeline-nightly", "--params",
                json.dumps({"params": params}), *extra], profile.env, timeout=450)
    match = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
    assert match, output_tail(proc)
    return match.group(1)


@pytest.fixture(scope="module")
def pipeline_run(production_profile, deployment):
    profile = production_profile
    before = dask_task_counts(profile)
    flow_run_id = deployment_run(profile, PIPELINE)
    flow_run = prefect(profile, "GET", f"/flow_runs/{flow_run_id}")
    assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
    client = mlflow_client(profile)
    experiment = client.get_experiment_by_name(MODEL)
    (parent,) = client.search_runs([experiment.experiment_id],
                                   "tags.`prnf.step` = 'pipeline' and params.seed = '0'")
    return {"flow_run": flow_run, "run": parent, "dask_before": before,
            "dask_after": dask_task_counts(profile)}


def dask_task_counts(profile: Profile) -> dict[str, int]:
    """Tasks the profile's Dask scheduler has seen finish, by task prefix."""
    from distributed import Client

    with Client(profile.exported["PRNF_DASK_ADDRESS"], timeout=30) as client:
        return client.run_on_scheduler(lambda dask_scheduler: {
            name: int(prefix.state_counts.get("memory", 0)
                      + prefix.state_counts.get("released", 0)
                      + prefix.state_counts.get("forgotten", 0))
            for name, prefix in dask_scheduler.task_prefixes.items()})


def test_pipeline_deployment_writes_datasets_to_s3_on_the_dask_workers(production_profile,
                                                                       pipeline_run):
    profile = production_profile
    run_ = pipeline_run["run"]
    assert run_.info.status == "FINISHED"
    dataset_path = run_.data.tags["dataset_path"]
    assert dataset_path.startswith("s3://prnf-data/datasets/bm1d-"), dataset_path
    key = dataset_path.removeprefix("s3://prnf-data/")
    objects = profile.keys("prnf-data", key)
    assert f"{key}/zarr.json" in objects and any("/xT/c/" in o for o in objects), objects[:20]
    assert not (profile.root / "datasets").exists()  # nothing went to local disk
    # the chunks were simulated by the profile's Dask workers
    name = "prnf-chunk"  # the key prefix of simulation chunks (prnf_core.runner)
    done = pipeline_run["dask_after"].get(name, 0) - pipeline_run["dask_before"].get(name, 0)
    assert done >= 4, pipeline_run["dask_after"]  # 2000 pairs in chunks of 500, and more


def test_pipeline_runs_and_models_are_on_postgres_and_s3(production_profile, pipeline_run):
    profile = production_profile
    client = mlflow_client(profile)
    run_id = pipeline_run["run"].info.run_id
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags.get("pipeline_run_id") == run_id
    # MLflow's tables and Prefect's live in the profile's PostgreSQL
    assert profile.postgres("mlflow", "select count(*) from runs where run_uuid = %s"
                            .replace("%s", f"'{run_id}'"))[0][0] == 1
    flow_run_id = pipeline_run["flow_run"]["id"]
    assert profile.postgres("prefect", f"select state_type from flow_run where id = "
                                       f"'{flow_run_id}'")[0][0] == "COMPLETED"
    # the champion's files (its MLmodel among them) are objects in the artifact bucket
    artifacts = profile.keys("prnf-artifacts")
    model_id = champion.model_id or champion.source.removeprefix("models:/")  # MLflow 3
    owners = [i for i in (champion.run_id, model_id) if i]
    assert any(key.endswith("/MLmodel") and any(i in key for i in owners)
               for key in artifacts), (owners, artifacts[:30])


def test_champion_loads_from_another_process(production_profile, pipeline_run, tmp_path):
    profile = production_profile
    out = tmp_path / "samples.npy"
    proc = run([BIN / "prnf", "sample", "--model", f"models:/{MODEL}@champion", "--initial",
                '{"kind": "gaussian", "mean": [0.0], "std": [0.5]}', "-n", "300", "--out",
                out], profile.env, timeout=300)
    assert proc.returncode == 0, output_tail(proc)
    samples = np.load(out)
    assert samples.shape == (300, 1) and np.isfinite(samples).all()


def test_training_streams_an_s3_store_under_a_memory_cap(production_profile, tmp_path):
    """`prnf train --memory-cap` on a store in S3 whose rows (40000 x 2 float32, 0.32 MB) exceed
    the cap: they are streamed chunk by chunk from the object store, under the cap."""
    profile = production_profile
    data = "s3://prnf-data/streamed/bm1d.zarr"
    made = run([BIN / "prnf", "simulate", "--problem", "bm1d", "-n", "40000", "--chunk-size",
                "2000", "--out", data], profile.env, timeout=300)
    assert made.returncode == 0, output_tail(made)
    proc = run([BIN / "prnf", "train", "--data", data, "--epochs", "2", "--width", "16",
                "--batch-size", "128", "--memory-cap", "0.15", "--out", tmp_path / "model"],
               profile.env, timeout=300)
    assert proc.returncode == 0, output_tail(proc)
    streamed = json.loads((tmp_path / "model" / "summary.json").read_text())["streamed"]
    assert streamed["memory_cap_mb"] == 0.15 and streamed["data_mb"] == 0.32, streamed
    assert 0 < streamed["peak_mb"] <= 0.15, streamed
    assert "streamed from the store under a memory cap of 0.15 MB" in " ".join(
        proc.stdout.split())


# --------------------------------------------------------------------------------------------
# 2. Faults


def test_a_dask_worker_killed_mid_simulation_loses_nothing(production_profile, local_reference):
    """SIGKILL one worker process while chunks are written to S3: its nanny restarts it, the
    scheduler reruns its tasks, and the store equals the local one bit for bit."""
    from distributed import Client

    profile = production_profile
    url = "s3://prnf-data/faults/worker-killed.zarr"
    proc = simulate(profile, url, wait=False)
    wait_for(lambda: chunks_done(profile, url) >= 1 or proc.poll() is not None,
             "a first chunk")
    assert proc.poll() is None, "the simulation ended before a worker could be killed"
    with Client(profile.exported["PRNF_DASK_ADDRESS"], timeout=30) as client:
        pids = sorted(client.run(os.getpid).values())
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert chunks_done(profile, url) == 12
    assert_same_store(profile, url, local_reference)


def test_object_storage_down_mid_simulation_fails_clearly_and_resumes(production_profile,
                                                                      local_reference):
    """SeaweedFS killed while chunks are written: the run fails naming the object store; once
    it is back (`prnf services up` restarts it), the same command completes the store from its
    done chunks, equal to the local one."""
    profile = production_profile
    url = "s3://prnf-data/faults/storage-down.zarr"
    lease = {"PRNF_S3_LOCK_TTL": "8"}  # a killed run's lock lapses sooner than the default 60 s
    proc = simulate(profile, url, wait=False, **lease)
    wait_for(lambda: chunks_done(profile, url) >= 2 or proc.poll() is not None,
             "two chunks")
    state = json.loads((profile.root / "services" / "state.json").read_text())
    weed = state["services"]["seaweedfs"]
    os.killpg(weed["pgid"], signal.SIGKILL)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    text = " ".join((out + err).split())
    assert (f"object storage at {profile.exported['AWS_ENDPOINT_URL']} is unreachable"
            in text), text[-3000:]
    assert "chunks marked done are kept" in text and "unexpected" not in text, text[-3000:]

    # a new run refuses at once, before any work, while storage is down
    began = time.monotonic()
    refused = simulate(profile, url, **lease)
    assert refused.returncode != 0 and time.monotonic() - began < 60
    assert "unreachable" in refused.stdout + refused.stderr, output_tail(refused)

    up = profile.services("up", timeout=300)
    assert up.returncode == 0, output_tail(up)
    assert chunks_done(profile, url) >= 2  # what was written before the outage is kept
    resumed = simulate(profile, url, **lease)
    if resumed.returncode != 0:
        # The failed run could not delete its lock while storage was down: the lock is a
        # lease, refused until it lapses (the message says when), then taken over.
        message = " ".join((resumed.stdout + resumed.stderr).split())
        lapse = re.search(r"lapses (\d+) s after its last renewal", message)
        assert lapse, output_tail(resumed)
        time.sleep(max(0.0, float(lapse.group(1)) - (time.monotonic() - killed)) + 2)
        resumed = simulate(profile, url, **lease)
    assert resumed.returncode == 0, output_tail(resumed)
    assert chunks_done(profile, url) == 12
    assert_same_store(profile, url, local_reference)


def test_postgres_restarted_while_a_deployment_runs(production_profile, deployment,
                                                    pipeline_run):
    """PostgreSQL (behind Prefect and MLflow) restarted while a pipeline run is in flight: the
    run completes and registers its model, nothing is lost."""
    from flows.services import postgres

    profile = production_profile
    params = {**PIPELINE, "seed": 7, "training": {**PIPELINE["training"], "epochs": 8}}
    flow_run_id = deployment_run(profile, params, watch=False)
    wait_for(lambda: prefect(profile, "GET", f"/flow_runs/{flow_run_id}")["state_type"]
             == "RUNNING", "the flow run running", timeout=180)
    time.sleep(3)
    data = profile.root / "services" / "postgres"
    postgres.stop(data)
    time.sleep(2)
    postgres.start(data, profile.ports["postgres_port"], profile.root / "services" / "logs"
                   / "postgres.log", timeout=60)
    worker_log = deployment["worker"].log
    # still in flight: the restart happened under the run
    state = prefect(profile, "GET", f"/flow_runs/{flow_run_id}")
    assert state["state_type"] == "RUNNING", (state["state"], tail(worker_log, 80))
    flow_run = wait_for(lambda: (r := prefect(profile, "GET", f"/flow_runs/{flow_run_id}"))[
        "state_type"] in ("COMPLETED", "FAILED", "CRASHED") and r, "the flow run's end",
        timeout=400, every=2)
    assert flow_run["state_type"] == "COMPLETED", (flow_run["state"], tail(worker_log, 80))
    client = mlflow_client(profile)
    experiment = client.get_experiment_by_name(MODEL)
    (parent,) = client.search_runs([experiment.experiment_id],
                                   "tags.`prnf.step` = 'pipeline' and params.seed = '7'")
    assert parent.info.status == "FINISHED"
    versions = [v for v in client.search_model_versions(f"name = '{MODEL}'")
                if v.tags.get("pipeline_run_id") == parent.info.run_id]
    assert len(versions) == 1
    # the earlier run's records survived the restart
    assert client.get_run(pipeline_run["run"].info.run_id).info.status == "FINISHED"
