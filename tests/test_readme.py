"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.usefixtures("private_problem_registry")  # the example registers "cir"
def test_user_sde_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "def cir" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # our own README, not user input
    out = namespace["out"]
    assert out.xT.shape == (10_000, 1) and (out.xT >= 0).all()
    # CIR mean: theta + (x0 - theta) e^{-kappa T} = 0.5 exactly here (x0 = theta).
    assert abs(out.xT.mean() - 0.5) < 5 * out.xT.std() / np.sqrt(len(out.xT))
    from prnf_core import open_dataset

    assert open_dataset(tmp_path / "cir.zarr").is_complete
