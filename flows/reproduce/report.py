"""The results page of one experiment: markdown with tables and figures, the command that made
it, the machine and the wall time. Figures live in ``<output>/<experiment>/``, linked relatively.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prnf_core.paths import atomic_path
from prnf_core.validation import fmt as fmt  # the one number formatter, for the pages


def machine_description() -> str:
    """CPU model, cores, memory, accelerator, and the versions that matter for the figures."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are converted with ``str`` (format numbers first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdict(passed: bool) -> str:
    """A goal's verdict for a page: ``PASS`` or ``MISS``."""
    return "PASS" if passed else "MISS"


@dataclass(frozen=True)
class Goal:
    """One goal of a results page: the threshold, what was measured, the verdict, the evidence
    (e.g. where it fails)."""

    name: str
    threshold: str
    measured: str
    passed: bool
    evidence: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.passed)


def goals_table(goals: Sequence[Goal]) -> str:
    """The goals as a markdown table, one PASS/MISS row each."""
    return table(["goal", "threshold", "measured", "verdict", "evidence"],
                 [[g.name, g.threshold, g.measured, f"**{g.verdict}**", g.evidence]
                  for g in goals])


class ResultPage:
    """Collects sections of ``<output_dir>/<experiment>.md`` and writes them with a header."""

    def __init__(self, experiment: str, title: str, output_dir: str | Path, command: str,
                 profile: str, settings: dict[str, Any]) -> None:
        self.experiment = experiment
        self.title = title
        self.output_dir = Path(output_dir)
        self.figure_dir = self.output_dir / experiment
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.profile = profile
        self.settings = settings
        self.sections: list[str] = []
        self.links: list[str] = []

    def figure_path(self, name: str) -> Path:
        return self.figure_dir / name

    def add(self, markdown: str) -> None:
        self.sections.append(markdown.rstrip() + "\n")

    def figure(self, path: str | Path, caption: str) -> str:
        """Markdown for a figure written under :attr:`figure_dir` (a relative link)."""
        rel = Path(path).resolve().relative_to(self.output_dir.resolve())
        return f"![{caption}]({rel.as_posix()})\n\n*{caption}*\n"

    def render(self, wall_seconds: float) -> str:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = [
            f"# {self.title}", "",
            "Regenerate every number and figure on this page with:", "",
            "```bash", self.command, "```", "",
            f"- Profile: `{self.profile}`; finished {when}; wall time "
            f"{wall_seconds / 60:.1f} min (the whole command, including simulation, training, "
            "validation and MC references).",
            f"- Machine: {machine_description()}.",
            *self.links, "",
        ]
        settings = json.dumps(self.settings, indent=2, sort_keys=True)
        footer = ["<details><summary>Settings of this run</summary>", "", "```json", settings,
                  "```", "", "</details>", ""]
        return "\n".join(header) + "\n" + "\n".join(self.sections) + "\n" + "\n".join(footer)

    def write(self, wall_seconds: float) -> Path:
        path = self.output_dir / f"{self.experiment}.md"
        with atomic_path(path) as tmp:  # a reader never sees half a page
            tmp.write_text(self.render(wall_seconds))
        return path

    def files(self) -> list[Path]:
        return sorted(self.figure_dir.glob("*.png"))
