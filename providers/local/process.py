"""Server processes on this machine: start detached, wait until they answer, observe, stop with nothing left behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
# Process creation times are floats read back from /proc; equal within this, it is the same process.
_SAME_PROCESS = 0.5
# The servers are on this machine: a user's http_proxy/HTTPS_PROXY must not be asked for them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Started:
    pid: int
    create_time: float
    port: int
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])

def kept_port(path: Path) -> int:
    """The port this service had before (clients keep their base URL across restarts, even after a crash), while
    it is free; else a new free one, remembered in `path`."""
    try:
        port = int(path.read_text())
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
        return port
    except (OSError, ValueError):
        port = free_port()
        path.write_text(str(port))
        return port


def start(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Started:
    """Start `cmd` in its own session so it outlives llmctl and can be stopped as a group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return Started(proc.pid, psutil.Process(proc.pid).create_time(), port, log)


def find(pid: int, create_time: float) -> psutil.Process | None:
    """The process if it still runs: the same pid with the same start time (pids are reused)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _SAME_PROCESS or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def answers(port: int, timeout: float = 2.0, path: str = "/v1/models") -> str | None:
    """None when GET `path` answers 200, else why not."""
    try:
        with _DIRECT.open(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer on port {port} ({getattr(exc, 'reason', exc)})"


def stop(pid: int, create_time: float, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds; reaps our own children."""
    proc = find(pid, create_time)
    if proc is None:
        _reap(pid)
        return
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:  # it exited since find()
        _reap(pid)
        return
    _signal_group(pid, signal.SIGTERM)
    for member in family:
        _quietly(member.terminate)
    _, alive = psutil.wait_procs(family, timeout=grace)
    if alive:
        _signal_group(pid, signal.SIGKILL)
        for member in alive:
            _quietly(member.kill)
        psutil.wait_procs(alive, timeout=grace)
    _reap(pid)


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _quietly(action: object) -> None:
    try:
        action()  # type: ignore[operator]
    except psutil.NoSuchProcess:
        pass


def _reap(pid: int) -> None:
    """A child of this very process stays a zombie until waited for."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
