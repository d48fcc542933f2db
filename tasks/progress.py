"""Progress reporting from inside tasks to Prefect (artifact + log) and to local listeners.

The CLI registers a listener to drive its progress bar; Prefect gets a progress artifact that the
UI shows live. Listeners are per process: a task running in the flow's process reaches them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

Listener = Callable[[str, int, int], None]  # (what, done, total)
_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


class Reporter:
    """Reports ``done/total`` of ``what`` to Prefect and listeners, logging every ~10%."""

    def __init__(self, what: str, key: str | None = None) -> None:
        self.what, self.key = what, key
        self._artifact_id = None
        self._last_logged = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        if self._artifact_id is None:
            self._artifact_id = create_progress_artifact(
                percent, key=self.key, description=self.what
            )
        else:
            update_progress_artifact(self._artifact_id, percent)
        decile = int(percent // 10)
        if decile != self._last_logged:
            self._last_logged = decile
            get_run_logger().info("%s: %d/%d (%.0f%%)", self.what, done, total, percent)
        for listener in list(_listeners):
            listener(self.what, done, total)
