"""Security rules, checked on the source tree and on the running code.

* No ``eval``/``exec`` of strings, no pickle or unsafe YAML in the library, CLI or flows; a
  cluster class named in a flow parameter must be a Dask cluster class, not any callable.
* Every ``torch.load`` passes ``weights_only=True`` (a checkpoint cannot run code).
* Every server the project starts or documents binds to 127.0.0.1.
* A relative path parameter of a flow stays inside the data root (``prnf_core.paths``).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from prnf_core.errors import ConfigError
from prnf_core.paths import data_root, resolve_path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "data", "build", "dist", "node_modules"}
# Files allowed one of the calls below, with the reason.
ALLOWED = {
    ("tests/test_readme.py", "exec"): "runs the README's own Python example",
    ("tests/test_simulate.py", "pickle.loads"): "round-trips prnf's own exception for Dask",
    ("tests/test_health.py", "pickle.loads"): "round-trips prnf's own exception for Prefect",
    ("tests/test_readme.py", "compile"): "compiles the README's own Python example",
}


def python_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(ROOT).parts[:-1]))


def call_name(node: ast.Call) -> str:
    """``eval``, ``torch.load``, ``yaml.load`` ... (the dotted name of what is called)."""
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


@functools.cache
def calls(path: Path) -> list[tuple[str, ast.Call]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(call_name(n), n) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def keyword(node: ast.Call, name: str) -> object:
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def test_the_scan_sees_the_project():
    names = {p.relative_to(ROOT).as_posix() for p in python_files()}
    assert {"flows/cli.py", "prnf_core/models/base.py", "tasks/pyfunc.py"} <= names
    assert not any(n.startswith(".venv/") for n in names)


def test_no_eval_exec_pickle_or_unsafe_yaml():
    banned = {"eval", "exec", "compile", "builtins.eval", "builtins.exec", "pickle.load",
              "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "yaml.load",
              "yaml.unsafe_load", "yaml.full_load", "os.system", "os.popen"}
    found = []
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        for name, node in calls(path):
            if name in banned and (rel, name) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {name}(...)")
            if name in ("np.load", "numpy.load") and keyword(node, "allow_pickle") not in (
                    None, False):
                found.append(f"{rel}:{node.lineno}: np.load(allow_pickle=...)")
            if name.startswith("subprocess.") and keyword(node, "shell") not in (None, False):
                found.append(f"{rel}:{node.lineno}: {name}(shell=...)")
    assert not found, found


def test_every_torch_load_passes_weights_only_true():
    loads = [(path, node) for path in python_files() for name, node in calls(path)
             if name == "torch.load"]
    assert len(loads) >= 2, "the model and the training checkpoint are loaded with torch.load"
    bad = [f"{p.relative_to(ROOT)}:{n.lineno}" for p, n in loads
           if keyword(n, "weights_only") is not True]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def _security_section(text: str) -> str:
    match = re.search(r"^### Security\n.*?(?=^#)", text, flags=re.S | re.M)
    return match.group(0) if match else ""


def server_texts() -> dict[str, str]:
    """Scripts, docs, deployments and tests: everything that starts or documents a server.
    The README's Security subsection is left out: it names ``--host 0.0.0.0`` as the explicit
    choice to expose a server."""
    paths = [ROOT / "README.md", ROOT / "prefect.yaml", *ROOT.glob("docs/**/*.md"),
             *ROOT.glob("scripts/*"), *ROOT.glob("benchmarks/*"), *ROOT.glob("tests/*.py")]
    texts = {}
    for path in paths:
        if path.is_file() and path.name != Path(__file__).name:
            text = path.read_text(errors="replace")
            texts[path.relative_to(ROOT).as_posix()] = text.replace(_security_section(text), "")
    return texts


def test_every_documented_or_started_server_binds_to_localhost():
    texts = server_texts()
    hosts = {(name, host) for name, text in texts.items()
             for host in re.findall(r"--host[\"']?(?:\s*,\s*|\s+|=)[\"']?([^\s\"',)\]]+)", text)}
    assert hosts, "the scan finds the documented servers"
    assert {h for _, h in hosts} == {"127.0.0.1"}, sorted(hosts)
    exposed = [name for name, text in texts.items() if "0.0.0.0" in text]
    assert not exposed, exposed
    readme = (ROOT / "README.md").read_text()
    assert "--host 0.0.0.0" in _security_section(readme), "the README explains exposing one"


def test_dask_cluster_and_prefect_server_listen_on_localhost_only(dask_client_2, prefect_harness):
    """Sockets our process tree listens on (Dask scheduler, workers, nannies, dashboard, the
    temporary Prefect server) are all on the loopback interface."""
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3, listening  # scheduler, dashboard, a worker at least
    assert {a.ip for a in listening} <= {"127.0.0.1", "::1"}, listening
    assert dask_client_2.scheduler.address.startswith("tcp://127.0.0.1:")


def test_cluster_class_must_be_a_dask_cluster_not_any_callable(tmp_path):
    """``execution.cluster_class`` comes from flow parameters: naming ``os.system`` must not run
    a command."""
    from prnf_core.cluster import ExecutionConfig, dask_client
    from prnf_core.errors import ConfigError

    marker = tmp_path / "ran"
    execution = ExecutionConfig(cluster_class="os.system",
                                cluster_kwargs={"command": f"touch {marker}"})
    with pytest.raises(ConfigError, match=r"cluster_class: 'os\.system' is not a Dask cluster"), \
            dask_client(execution):
        pass
    assert not marker.exists()


# -- path confinement -------------------------------------------------------------------------
def _params(flow: str, path: str):
    from flows.register import RegisterParams
    from flows.reproduce import ReproduceParams
    from flows.sample import SampleParams
    from flows.simulate import SimulateParams
    from flows.train import TrainParams
    from flows.validate import ValidateParams

    gauss = {"kind": "gaussian", "mean": [0], "std": [1]}
    build = {
        "simulate.output": lambda: SimulateParams(
            dataset={"problem": "bm1d", "n_particles": 10}, output=path),
        "train.data": lambda: TrainParams(data=path),
        "train.output": lambda: TrainParams(data="d.zarr", output=path),
        "sample.out": lambda: SampleParams(model="models:/m@champion", initial=gauss,
                                           out=path + ".npy"),
        "sample.model": lambda: SampleParams(model=path, initial=gauss),
        "validate.model": lambda: ValidateParams(model=path),
        "register.model_dir": lambda: RegisterParams(model_dir=path),
        "reproduce.output_dir": lambda: ReproduceParams(experiment="bm1d", output_dir=path),
    }
    return build[flow]()


FIELDS = ["simulate.output", "train.data", "train.output", "sample.out", "sample.model",
          "validate.model", "register.model_dir", "reproduce.output_dir"]


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside")
    return tmp_path / "data"


@pytest.mark.parametrize("flow", FIELDS)
@pytest.mark.parametrize("escape", ["../x", "a/../../x", "link/x", "link/../../x"])
def test_relative_path_leaving_the_data_root_is_refused(flow, escape, root):
    field = flow.split(".")[1]
    with pytest.raises(ValidationError, match=rf"{field}: relative path .* resolves outside "
                                              r"the data root"):
        _params(flow, escape)


@pytest.mark.parametrize("flow", FIELDS)
def test_relative_path_is_taken_under_the_data_root(flow, root):
    params = _params(flow, "sub/x")
    field = flow.split(".")[1]
    value = (params.output_path() if field == "output_dir" else Path(getattr(params, field)))
    assert value.parent == root.resolve() / "sub"


def test_absolute_paths_and_urls_are_used_as_given(root, tmp_path):
    elsewhere = str(tmp_path / "outside" / "x.zarr")
    assert resolve_path(elsewhere, "output") == elsewhere
    for url in ("models:/prnf-ou@champion", "runs:/abc/model"):
        assert resolve_path(url, "model", allow_urls=True) == url
    with pytest.raises(ConfigError, match=r"out: URLs \(s3://\.\.\.\) are not accepted here: "
                                          "give a local path"):
        resolve_path("s3://bucket/x.zarr", "out")
    # dataset stores may live on object storage (prnf_core.objectstore)
    assert resolve_path("s3://bucket/x.zarr/", "output", dataset_store=True) == "s3://bucket/x.zarr"
    assert _params("sample.model", "models:/prnf-ou@champion").model == "models:/prnf-ou@champion"
    assert data_root() == root.resolve()


def test_cli_takes_relative_paths_from_the_working_directory(prefect_harness, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A wide console: a long temporary path stays on one line (under pytest-xdist it has one
    # more level, popen-gwN/, and the workers' COLUMNS=80 was fixed when the console was made).
    from flows.cli_support import out

    monkeypatch.setattr(out, "_width", 400)
    result = CliRunner().invoke(app, ["simulate", "--problem", "bm1d", "-n", "20",
                                      "--chunk-size", "10", "--workers", "0", "--out", "rel.zarr"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rel.zarr" / "zarr.json").is_file()
    assert f"store: {tmp_path / 'rel.zarr'}" in result.output


def test_results_page_command_shows_the_cli_output_relative_to_the_working_directory():
    from flows.reproduce import ReproduceParams

    params = ReproduceParams(experiment="bm1d", output_dir=str(Path.cwd() / "docs" / "results"))
    assert params.command_line().endswith("--output docs/results")
