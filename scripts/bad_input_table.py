"""Render the bad-input cases of ``tests/test_bad_input.py`` as a markdown table.

Runs every case exactly as the test does (fresh working directory, a data root holding a small
bm1d model and its registry entry) and writes ``case | command | message`` with the message the
user actually gets. Temporary paths are shown as ``<tmp>`` (the working directory) and
``<data root>``, so the table reads the same on every machine.

    python scripts/bad_input_table.py [OUT]        # default: /tmp/reliability_bad_input.md
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="prnf-bad-input-"))
# Before prnf, Prefect or MLflow is imported: a private data root and Prefect home.
os.environ["PRNF_DATA_ROOT"] = str(WORK / "data")
os.environ["PREFECT_HOME"] = str(WORK / "prefect-home")
os.environ.pop("MLFLOW_TRACKING_URI", None)
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_bad_input import CASES, Case, fill, make_world, run_case, write_files  # noqa: E402


def shown(text: str, places: dict[str, str]) -> str:
    """``text`` with the machine's temporary paths replaced by placeholders."""
    for key, label in (("model1d", "<data root>/models/bm1d-tiny"),
                       ("mislabelled", "<data root>/models/mislabelled"), ("tmp", "<tmp>"),
                       ("data", "<data root>")):
        text = text.replace(places[key], label)
    return text


def command(case: Case, places: dict[str, str]) -> str:
    args = [fill(a, places) for a in case.args]
    if case.flow is not None:
        return f"`{case.flow}` flow, params `{args[0]}`"
    return f"`prnf {shown(shlex.join(args), places)}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(out: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    rows = [
        "### Bad input is refused before any work", "",
        "Every flow parameter and CLI option is validated before any work (at most a model is "
        "loaded, to learn its dimension): the command exits with status 2 and a message that "
        "starts with the offending field; a flow run "
        "(Prefect UI, deployment) fails validation with the same message. Nothing is written "
        "under the data root or the working directory (`tests/test_bad_input.py` checks each "
        "case; this table is generated from the same list by `scripts/bad_input_table.py`). "
        "`<tmp>` is the working directory, `<data root>` the data root.", "",
        "| case | command | message |", "|---|---|---|",
    ]
    with prefect_test_harness(server_startup_timeout=120):
        places = {**make_world(WORK / "data"), "data": str(WORK / "data")}
        for case in CASES:
            tmp = Path(tempfile.mkdtemp(dir=WORK))
            os.chdir(tmp)
            here = {**places, "tmp": str(tmp)}
            write_files(case, here)
            outcome, message = run_case(case, here)
            text = f"{outcome}: {shown(message, here)}"
            rows.append(f"| {case.id} | {cell(command(case, here))} | {cell(text)} |")
    out.write_text("\n".join(rows) + "\n")
    print(f"{len(CASES)} cases -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/reliability_bad_input.md"))
