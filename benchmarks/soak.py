"""Soak: many consecutive deployment runs of a tiny pipeline on a real stack; nothing may pile up.

Run ``python benchmarks/soak.py [--runs 20] [--out /tmp/reliability_soak.md] [--keep]``.

Starts, on 127.0.0.1 and free ports, an ``mlflow server`` (sqlite backend, proxied artifacts), a
``prefect server`` and a Prefect process worker (the helpers of ``tests/services.py``), creates
the ``prnf-process`` pool, deploys ``prefect.yaml`` (the nightly schedule paused), then creates
``--runs`` flow runs of ``pipeline/pipeline-nightly`` one after the other through the API, each
on the same tiny bm1d configuration, and waits for each to end.

Recorded per run: wall time from creation to a final state (and the run's own duration and
scheduling delay from the Prefect API), its state, and after it: the worker's descendants, the
processes carrying the soak's data root in their environment (every flow-run process and
anything it started, even once re-parented: what a leak would be), the open file descriptors
and RSS of each service's process tree.
At the end: registered model versions (expected: one per run), MLflow pipeline runs by status,
the dataset stores under the data root (the same configuration must reuse one training store
and one test store; each must be complete) and the model directories (one per run).

Everything goes to a temporary folder, deleted at the end unless ``--keep``. Servers are
stopped by process group; processes still alive afterwards are reported as leaks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from services import (  # noqa: E402  (the tests' helpers: one definition of the stack)
    BIN,
    Service,
    clean_env,
    free_ports,
    mlflow_server,
    open_fds,
    prefect_server,
    prefect_worker,
    processes_with_env,
    tail,
    tree,
    wait_worker_online,
)

MODEL = "prnf-bm1d"
DEPLOYMENT = "pipeline/pipeline-nightly"
# Tiny on purpose: the soak is about the plumbing (process start, tracking, registry, stores).
PARAMS: dict[str, Any] = {
    "problem": "bm1d", "n_train": 1000, "chunk_size": 1000, "seed": 0,
    "training": {"epochs": 2, "batch_size": 128, "lr": 3e-3, "progress": False},
    "model": {"hidden_width": 16},
    "validation": {"n_samples": 200, "chunk_size": 200, "max_kl": 10.0, "max_sw_ratio": 1e3,
                   "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]}}},
    "execution": {"workers": 0},
}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def cli(args: list, env: dict[str, str], timeout: float = 240) -> str:
    proc = subprocess.run([str(a) for a in args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"$ {' '.join(map(str, args))} -> {proc.returncode}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


class Soak:
    def __init__(self, root: Path, runs: int, run_timeout: float) -> None:
        self.root, self.runs, self.run_timeout = root, runs, run_timeout
        mlflow_port, prefect_port = free_ports(2)
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        self.api = f"http://127.0.0.1:{prefect_port}/api"
        self.data = root / "data"
        self.env = clean_env(MLFLOW_TRACKING_URI=self.mlflow_url, PREFECT_API_URL=self.api,
                             PREFECT_HOME=root / "prefect-home", PRNF_DATA_ROOT=self.data,
                             PRNF_CHECKOUT=REPO)
        self.mlflow = mlflow_server(root, mlflow_port)
        self.prefect = prefect_server(root, prefect_port, root / "prefect-home")
        self.worker = prefect_worker(root, self.env)
        self.http = httpx.Client(timeout=30)

    # -- the stack ---------------------------------------------------------------------------

    def start(self) -> dict[str, float]:
        times = {}
        started = time.monotonic()
        self.mlflow.start()
        self.prefect.start()
        times["mlflow_ready_s"] = self.mlflow.wait_http(f"{self.mlflow_url}/health")
        times["prefect_ready_s"] = self.prefect.wait_http(f"{self.api}/health")
        cli([BIN / "prefect", "work-pool", "create", "prnf-process", "--type", "process"],
            self.env)
        cli([BIN / "prefect", "--no-prompt", "deploy", "--all"], self.env)
        self.deployment = self.get(f"/deployments/name/{DEPLOYMENT}")
        for schedule in self.deployment["schedules"]:
            cli([BIN / "prefect", "deployment", "schedule", "pause", DEPLOYMENT,
                 schedule["id"]], self.env)
        self.worker.start()
        wait_worker_online(self.worker, self.api)
        times["stack_ready_s"] = time.monotonic() - started
        return times

    def stop(self) -> list[str]:
        leftovers = []
        for service in (self.worker, self.prefect, self.mlflow):  # the worker says goodbye first
            leftovers += service.stop()
        self.http.close()
        return leftovers

    def get(self, path: str) -> Any:
        response = self.http.get(f"{self.api}{path}")
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> Any:
        response = self.http.post(f"{self.api}{path}", json=body)
        response.raise_for_status()
        return response.json()

    # -- measurements --------------------------------------------------------------------------

    def measure(self) -> dict[str, Any]:
        """Processes, descriptors and memory of the stack right now."""
        stack_procs = processes_with_env("PRNF_DATA_ROOT", str(self.data))
        worker_tree = tree(self.worker.proc.pid)
        me = psutil.Process().username()
        python = 0
        for proc in psutil.process_iter(["username", "name"]):
            if proc.info["username"] == me and "python" in (proc.info["name"] or ""):
                python += 1
        return {
            "worker_descendants": len(worker_tree) - 1,
            # the worker itself carries the data root; anything else is a flow run or a leak
            "stack_processes": len(stack_procs) - 1,
            "user_python_processes": python,
            **{f"fds.{name}": open_fds(service) for name, service in self.services()},
            **{f"rss_mib.{name}": _rss_mib(service) for name, service in self.services()},
        }

    def services(self) -> list[tuple[str, Service]]:
        return [("prefect_server", self.prefect), ("mlflow_server", self.mlflow),
                ("worker", self.worker)]

    # -- the runs ------------------------------------------------------------------------------

    def run_once(self, index: int) -> dict[str, Any]:
        started = time.monotonic()
        flow_run = self.post(f"/deployments/{self.deployment['id']}/create_flow_run",
                             {"parameters": {"params": PARAMS}})
        while True:
            flow_run = self.get(f"/flow_runs/{flow_run['id']}")
            if flow_run["state_type"] in FINAL:
                break
            if time.monotonic() - started > self.run_timeout:
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
        delay = None
        if flow_run.get("start_time") and flow_run.get("expected_start_time"):
            delay = (_ts(flow_run["start_time"]) - _ts(flow_run["expected_start_time"]))
        # The flow-run process exits just after its final state is set: give it a moment. The
        # worker may not have reaped it yet when this measures ("worker descendants" 1, a zombie,
        # with the pipes to it still open in the worker): transient, not a leak; "stack
        # processes" counts live processes only.
        deadline = time.monotonic() + 30
        while self.measure()["stack_processes"] > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        return {"run": index + 1, "state": flow_run["state_type"], "wall_s": wall,
                "run_s": flow_run.get("total_run_time"), "start_delay_s": delay,
                "message": (flow_run.get("state") or {}).get("message", "") or "",
                **self.measure()}

    # -- end state -------------------------------------------------------------------------------

    def mlflow_state(self) -> dict[str, Any]:
        api = f"{self.mlflow_url}/api/2.0/mlflow"
        versions = self.http.get(f"{api}/model-versions/search",
                                 params={"filter": f"name='{MODEL}'", "max_results": 1000}
                                 ).json().get("model_versions", [])
        experiment = self.http.get(f"{api}/experiments/get-by-name",
                                   params={"experiment_name": MODEL}).json()["experiment"]
        runs = self.http.post(f"{api}/runs/search", json={
            "experiment_ids": [experiment["experiment_id"]], "max_results": 1000,
            "filter": "tags.`prnf.step` = 'pipeline'"}).json().get("runs", [])
        statuses: dict[str, int] = {}
        for run in runs:
            statuses[run["info"]["status"]] = statuses.get(run["info"]["status"], 0) + 1
        aliases = self.http.get(f"{api}/registered-models/get", params={"name": MODEL}
                                ).json()["registered_model"].get("aliases", [])
        return {"versions": len(versions), "pipeline_runs": statuses,
                "aliases": {a["alias"]: a["version"] for a in aliases}}

    def disk_state(self) -> dict[str, Any]:
        from prnf_core.dataset import open_dataset

        stores = []
        for path in sorted((self.data / "datasets").glob("*.zarr")):
            dataset = open_dataset(path)
            stores.append({"store": path.name, "particles": dataset.n_particles,
                           "complete": dataset.is_complete})
        models = sorted(p.name for p in (self.data / "models").iterdir()) \
            if (self.data / "models").is_dir() else []
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        return {"stores": stores, "model_dirs": len(models), "root_mib": size / 2**20}


def _rss_mib(service: Service) -> float:
    total = 0
    for proc in tree(service.proc.pid) if service.proc else []:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def _ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _delta(before: dict[str, Any], after: dict[str, Any], key: str) -> str:
    return f"{before[key]} -> {after[key]} ({after[key] - before[key]:+g})"


def report(command: str, times: dict[str, float], before: dict[str, Any],
           rows: list[dict[str, Any]], after: dict[str, Any], mlflow: dict[str, Any],
           disk: dict[str, Any], leftovers: list[str], elapsed: float) -> str:
    done = [r for r in rows if r["state"] == "COMPLETED"]
    walls = [r["wall_s"] for r in rows]
    first = rows[0] if rows else before
    lines = [
        "## Soak: consecutive pipeline runs through the deployment",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; host: "
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"total {elapsed / 60:.1f} min (stack ready in {times.get('stack_ready_s', 0):.0f} s)",
        "",
        f"Per run: `{DEPLOYMENT}` with `{json.dumps(PARAMS, separators=(',', ':'))}`",
        "",
        "| summary | value |",
        "|---|---|",
        f"| runs completed | {len(done)} of {len(rows)} |",
        f"| wall time per run (create -> final state) | mean {statistics.mean(walls):.1f} s, "
        f"median {statistics.median(walls):.1f} s, min {min(walls):.1f} s, "
        f"max {max(walls):.1f} s |" if walls else "| wall time | - |",
        f"| leaked processes (carrying the soak's data root, worker excluded) | "
        f"{_delta(before, after, 'stack_processes')} |",
        f"| worker descendants | {_delta(before, after, 'worker_descendants')} |",
        f"| python processes of the user (machine-wide, other jobs included) | "
        f"{_delta(before, after, 'user_python_processes')} |",
    ]
    for name in ("prefect_server", "mlflow_server", "worker"):
        lines.append(f"| open fds, {name} (before -> after run 1 -> after last) | "
                     f"{before[f'fds.{name}']} -> {first[f'fds.{name}']} -> "
                     f"{after[f'fds.{name}']} ({after[f'fds.{name}'] - first[f'fds.{name}']:+d} "
                     "since run 1) |")
    for name in ("prefect_server", "mlflow_server", "worker"):
        lines.append(f"| RSS MiB, {name} (before -> after run 1 -> after last) | "
                     f"{before[f'rss_mib.{name}']} -> {first[f'rss_mib.{name}']} -> "
                     f"{after[f'rss_mib.{name}']} |")
    complete = sum(s["complete"] for s in disk["stores"])
    lines += [
        f"| registered versions of {MODEL} | {mlflow['versions']} (expected {len(rows)}); "
        f"aliases {mlflow['aliases']} |",
        f"| MLflow pipeline runs by status | {mlflow['pipeline_runs']} |",
        f"| dataset stores under the data root | {len(disk['stores'])} ({complete} complete): "
        + ", ".join(f"{s['store']} ({s['particles']})" for s in disk["stores"]) + " |",
        f"| model directories | {disk['model_dirs']} |",
        f"| soak folder size | {disk['root_mib']:.1f} MiB |",
        f"| processes left after stopping the stack | {len(leftovers)} "
        f"{'; '.join(leftovers)} |",
        "",
        "| run | state | wall s | run s | start delay s | worker desc. | stack procs | "
        "fds prefect | fds mlflow | fds worker | RSS MiB prefect | RSS MiB mlflow |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['state']} | {r['wall_s']:.1f} | {_num(r['run_s'])} | "
            f"{_num(r['start_delay_s'])} | {r['worker_descendants']} | {r['stack_processes']} | "
            f"{r['fds.prefect_server']} | {r['fds.mlflow_server']} | {r['fds.worker']} | "
            f"{r['rss_mib.prefect_server']} | {r['rss_mib.mlflow_server']} |")
    failed = [r for r in rows if r["state"] != "COMPLETED"]
    if failed:
        lines += ["", "Runs not completed:"]
        lines += [f"- run {r['run']}: {r['state']}: {r['message'][:300]}" for r in failed]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="consecutive runs (default 20)")
    parser.add_argument("--out", default="/tmp/reliability_soak.md", help="markdown report")
    parser.add_argument("--run-timeout", type=float, default=600,
                        help="seconds one run may take before it counts as stuck")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/soak.py",
                                                 *(sys.argv[1:] if argv is None else argv)])
    root = Path(tempfile.mkdtemp(prefix="prnf-soak-"))
    soak = Soak(root, args.runs, args.run_timeout)
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    leftovers: list[str] = []
    try:
        times = soak.start()
        before = soak.measure()
        print(f"stack ready in {times['stack_ready_s']:.0f} s under {root}", flush=True)
        for index in range(args.runs):
            row = soak.run_once(index)
            rows.append(row)
            print(f"run {row['run']:3d}: {row['state']:9s} {row['wall_s']:6.1f} s  "
                  f"stack procs {row['stack_processes']}  fds prefect "
                  f"{row['fds.prefect_server']} mlflow {row['fds.mlflow_server']} worker "
                  f"{row['fds.worker']}", flush=True)
        after = soak.measure()
        mlflow = soak.mlflow_state()
        disk = soak.disk_state()
    except BaseException:
        for service in (soak.worker, soak.prefect, soak.mlflow):
            print(f"--- {service.describe()} ---\n{tail(service.log, 30)}", file=sys.stderr)
        raise
    finally:
        leftovers = soak.stop()
    text = report(command, times, before, rows, after, mlflow, disk, leftovers,
                  time.monotonic() - began)
    Path(args.out).write_text(text)
    print(text)
    if args.keep:
        print(f"kept {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    ok = (all(r["state"] == "COMPLETED" for r in rows) and not leftovers
          and after["stack_processes"] == 0 and mlflow["versions"] == len(rows)
          and all(s["complete"] for s in disk["stores"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
