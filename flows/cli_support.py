"""The ``prnf`` command line's plumbing: one-line errors, the log file of an unexpected one,
running a flow with a progress bar, and the options several commands share (the commands are in
:mod:`flows.cli`).

Errors: every command runs inside :class:`Guarded`, which turns any exception into one line
on stderr: bad input (a prnf error, a pydantic ``ValidationError``, a missing file) exits 2 with
its message, which names the field; anything else is unexpected and exits 1 naming the
exception and a log file, ``<data root>/logs/prnf-<time>-<pid>.log``, that holds the full
traceback. ``prnf --debug COMMAND`` also prints tracebacks on the terminal (Prefect's log lines
of a failed flow or task carry theirs only then).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from prnf_core.errors import ConfigError, PrnfError

console = Console(stderr=True)
out = Console()

# While a command runs without --debug, terminal log handlers leave tracebacks out.
_brief_logs = False


class Guarded(TyperGroup):
    """The ``prnf`` command group: the one place where a command's errors are reported."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["prnf.argv"] = list(args)  # for the log file of an unexpected error
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        global _brief_logs
        debug = bool(ctx.params.get("debug"))
        _brief_logs = not debug
        if "prefect" in sys.modules:
            _quiet_log_tracebacks()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exits and usage errors: typer reports them
        except Exception as exc:
            _report(exc, debug, ctx.meta.get("prnf.argv", []))
        finally:
            _brief_logs = False


def _bad_input(exc: BaseException) -> str | None:
    """The one-line message of an error that is the user's to fix (exit 2), else None.

    Prefect re-raises a flow's or task's exception itself; should it wrap one (its own
    exception types), the prnf error in the chain is the one reported.
    """
    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    if isinstance(exc, PrnfError | FileNotFoundError):
        return str(exc)
    if type(exc).__module__.split(".")[0] == "prefect":
        inner = exc.__cause__ or exc.__context__
        return _bad_input(inner) if inner is not None else None
    return None


def _report(exc: Exception, debug: bool, argv: list[str]) -> None:
    """Report ``exc`` in one line and exit: 2 for bad input, 1 (with a log file holding the
    traceback) for an unexpected failure. With ``debug``, the traceback is printed first."""
    text = "".join(traceback.format_exception(exc))
    if debug:
        sys.stderr.write(text)
        sys.stderr.flush()
    if isinstance(getattr(exc, "exit_code", None), int):  # a verdict, e.g. a degraded champion
        fail(str(exc), code=exc.exit_code)
    message = _bad_input(exc)
    if message is not None:
        fail(message)
    log = _write_log(text, argv)
    where = f"the traceback is in {log}" if log else "no log file could be written"
    cause = " ".join(str(exc).split())[:300]
    fail(f"unexpected {type(exc).__name__}{': ' + cause if cause else ''} ({where}; "
          "`prnf --debug ...` shows it here)", code=1)


def _write_log(text: str, argv: list[str]) -> Path | None:
    """Write an unexpected error's traceback to ``<data root>/logs`` (else the temp dir)."""
    from prnf_core import __version__
    from prnf_core.paths import data_root

    stamp = time.strftime("%Y%m%dT%H%M%S")
    header = (f"prnf {__version__} (Python {sys.version.split()[0]}), pid {os.getpid()}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
              f"command: prnf {shlex.join(argv)}\ncwd: {os.getcwd()}\n\n")
    for folder in (data_root() / "logs", Path(tempfile.gettempdir())):
        path = folder / f"prnf-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(header + text)
        except OSError:
            continue
        return path
    return None


class _BriefFormatter(logging.Formatter):
    """A terminal handler's own formatter, minus the traceback while :data:`_brief_logs`."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if not _brief_logs:
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:  # other handlers (Prefect's API log) still get the traceback
            record.exc_info, record.exc_text, record.stack_info = saved


def _quiet_log_tracebacks() -> None:
    """Give every terminal log handler (Prefect's console handler logs a failing flow's
    traceback) a :class:`_BriefFormatter`. Called once Prefect has set its logging up."""
    # list(): one C-level copy, so that a logger created meanwhile by another thread (Prefect
    # runs some) cannot change the dict under the loop
    known = list(logging.Logger.manager.loggerDict.values())
    loggers = [logging.getLogger(), *(x for x in known if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and not isinstance(handler.formatter, _BriefFormatter)):
                handler.setFormatter(_BriefFormatter(handler.formatter))


def fail(message: str, code: int = 2) -> None:
    # escape: a message quoting input such as "[nan]" must not be read as console markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the dotted field name.

    prnf's own messages start with the field they are about (``prnf_core.errors``): one raised
    by a whole section (``t_end: ...`` from ``dataset``) is joined to its location
    (``dataset.t_end: ...``), one that repeats its field (``initial.kind: ...`` under
    ``dataset.initial``) replaces it.
    """
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if parts and msg.startswith((f"{parts[-1]}:", f"{parts[-1]}.")):
            parts.pop()
        if re.match(r"[a-z_][\w.]*: ", msg):
            lines.append(".".join([*parts, msg]))
        else:
            lines.append(f"{'.'.join(parts) or '(input)'}: {msg}")
    return "\n  ".join(lines)


def run_flow(run, *args: Any, bad_input: tuple[type[Exception], ...] = ()) -> Any:
    """Run a flow (Prefect is imported by now) with brief terminal logs unless --debug; an
    exception of a ``bad_input`` type is reported as bad input (exit 2) too."""
    _quiet_log_tracebacks()
    try:
        return run(*args)
    except bad_input as exc:
        raise ConfigError(str(exc)) from exc


def run_with_progress(run, *args: Any) -> Any:
    from tasks.progress import listening

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        tasks_by_name: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks_by_name:
                tasks_by_name[what] = bar.add_task(what, total=total)
            bar.update(tasks_by_name[what], completed=done, total=total)

        with listening(update):
            return run_flow(run, *args)


# ---- Options several commands share ---------------------------------------------------------

Opt = typer.Option
Int = Annotated[int | None, Opt()]
Workers = Annotated[int | None, Opt(help="Dask workers (0: in-process).")]
MemoryCap = Annotated[float | None, Opt(
    "--memory-cap", help="MB the training rows may take in memory; a larger store is streamed "
                         "chunk by chunk (training.memory_cap_mb).")]
Config = Annotated[Path | None, Opt(
    help="YAML file of the command's parameters; --set and the options override it.")]
Sets = Annotated[list[str] | None, Opt(
    "--set", help="Override any setting, dotted KEY=VALUE (repeatable), e.g. training.epochs=5.")]
ProblemParams = Annotated[list[str] | None, Opt(
    help="Problem parameter KEY=VALUE (repeatable).")]


def global_options(
    debug: Annotated[bool, Opt(
        "--debug", help="Show full tracebacks on the terminal (otherwise an error is one line; "
                        "an unexpected one names a log file with its traceback).")] = False,
) -> None:
    """Options of every command (read by :class:`Guarded`)."""


def under(section: str, **values: Any) -> dict[str, Any]:
    """``values`` as dotted options of ``section`` (for :func:`flows.config.build_params`)."""
    return {f"{section}.{key}": value for key, value in values.items()}


def param_options(param: list[str] | None, section: str) -> dict[str, Any]:
    """``--param KEY=VALUE`` as dotted options of ``section``."""
    from flows.config import parse_assignments

    return under(section, **parse_assignments(param, "--param"))


def parse_times(text: str | None) -> list[float] | None:
    """``--save-times 0.1,0.5`` as a list of floats."""
    try:
        return [float(t) for t in text.split(",")] if text else None
    except ValueError:
        raise ConfigError(f"--save-times: expected comma-separated numbers, got {text!r}") from None
