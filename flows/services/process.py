"""Background server processes, each in a process group of its own.

A :class:`Service` is started in its own session (``start_new_session=True``, i.e. ``setsid``),
with its output appended to a log file, and stopped by signalling its process group: SIGTERM,
a bounded wait, then SIGKILL for what survives. ``stop`` also records the leader's descendants
first (a Prefect worker starts each flow run in a new session, outside its group) and reports
every process still alive afterwards.

A service started by another process (``prnf services up`` has exited since) is re-attached
from its recorded pid and start time (:meth:`Service.attach`): a recycled pid, whose process
started after the recorded one, is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def free_ports(n: int, offset: int | None = None) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago (each bound to port 0,
    all held at once, then released). ``offset``: also ``port + offset`` must be free for each
    (SeaweedFS's gRPC ports are ``port + 10000``)."""
    for _ in range(200):
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                     for _ in range(n)]
            for sock in socks:
                sock.bind(("127.0.0.1", 0))
            ports = [sock.getsockname()[1] for sock in socks]
            if offset is None or all(port_free(p + offset) for p in ports):
                return ports
    raise RuntimeError(f"no {n} free ports with port + {offset} free too")


def free_port() -> int:
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 right now."""
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of a log file (a placeholder naming the error if unreadable)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def group_members(pgid: int) -> set[int]:
    """The pids of the live processes in process group ``pgid``."""
    members = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.add(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def create_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is alive and is the process that started at ``started`` (not a recycled
    pid); with ``started`` None, only whether it is alive."""
    if not alive(pid):
        return False
    if started is None:
        return True
    now = create_time(pid)
    return now is not None and abs(now - started) < 1.0


@dataclass
class Service:
    """One background server process (and whatever it starts)."""

    name: str
    args: list
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    seen: set[int] = field(default_factory=set)
    pid: int | None = None
    started: float | None = None  # the leader's create_time

    @classmethod
    def attach(cls, name: str, pid: int, started: float | None, log: Path) -> Service:
        """A service some other process started: stopped by its recorded pid and start time."""
        return cls(name, [], {}, Path(log), pid=pid, started=started)

    def start(self) -> Service:
        """Start the process; also after ``stop`` (a restart: the log is appended to, and the
        processes remembered from the previous run are forgotten, so a recycled pid of theirs
        can never be signalled)."""
        self.seen = set()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(a) for a in self.args], env=self.env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.pid = self.proc.pid
        self.started = create_time(self.pid)
        return self

    @property
    def pgid(self) -> int:
        assert self.pid is not None
        return self.pid  # a session leader leads its own process group

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid or '-'}; log {self.log})"

    def running(self) -> bool:
        """Whether the leader process is still alive (and is the one started)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and same_process(self.pid, self.started)

    def exit_note(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        return f"exited with {code}" if code is not None else "exited"

    def wait_http(self, url: str, timeout: float = 120.0) -> float:
        """Poll ``url`` until it answers 200; return the seconds it took. Fails early, with the
        log's tail, if the process exits."""
        return self.wait_until(lambda: http_ok(url), url, timeout)

    def wait_until(self, check, what: str, timeout: float = 120.0, every: float = 0.3) -> float:
        """Poll ``check()`` until it is true; return the seconds it took. Raises RuntimeError
        (the process exited) or TimeoutError (not true within ``timeout`` s), with the log's
        tail."""
        begun = time.monotonic()
        while True:
            if not self.running():
                raise RuntimeError(f"{self.describe()} {self.exit_note()} before {what} "
                                   f"answered:\n{tail(self.log)}")
            with contextlib.suppress(Exception):
                if check():
                    return time.monotonic() - begun
            if time.monotonic() - begun > timeout:
                raise TimeoutError(f"{self.describe()}: {what} not healthy after {timeout:.0f} s:"
                                   f"\n{tail(self.log)}")
            time.sleep(every)

    def snapshot(self) -> None:
        """Remember the group's members and the leader's descendants (they may leave the group)."""
        if self.pid is None:
            return
        self.seen |= self._members()
        if self.running():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.seen |= {p.pid for p in psutil.Process(self.pid).children(recursive=True)}

    def stop(self, grace: float = 20.0) -> list[str]:
        """SIGTERM the process group, SIGKILL it (and strays) after ``grace`` seconds. Returns
        descriptions of processes still alive afterwards (empty: nothing leaked)."""
        if self.pid is None:
            return []
        self.snapshot()
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._survivors():
            self.snapshot()
            time.sleep(0.2)
        if self._survivors():
            self._signal_group(signal.SIGKILL)
            for pid in self._survivors():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._survivors():
            time.sleep(0.2)
        leftovers = []
        for pid in sorted(self._survivors()):
            try:
                leftovers.append(f"{self.name}: pid {pid} {psutil.Process(pid).cmdline()}")
            except psutil.NoSuchProcess:
                continue
        return leftovers

    def _members(self) -> set[int]:
        """The group's live members; for a re-attached service only those started no earlier
        than its leader, and none if its pid now belongs to another process (a group id
        outlives its leader while members remain and is not handed out as a pid meanwhile)."""
        if self.proc is None and self.started is not None:
            if alive(self.pid) and not same_process(self.pid, self.started):
                # the pid was handed out again, so the old group was gone by then: this is
                # someone else's process (and group)
                return set()
            return {p for p in group_members(self.pgid)
                    if (create_time(p) or 0) >= self.started - 1.0}
        return group_members(self.pgid)

    def _signal_group(self, sig: int) -> None:
        if not self._members():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _survivors(self) -> set[int]:
        return {pid for pid in self.seen | self._members() if alive(pid)}


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
