"""Server processes on this machine, with real processes: start, find, ask, stop with nothing left behind.

`python -m http.server` stands in for a model server where only the process handling matters (it starts in
well under a second); the apply test runs the real llama.cpp server on a file that is not a model.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from llmctl.desired import Desired
from llmctl.provider import ApplyContext, ProviderError
from llmctl.resource import Resource, ResourceChange
from providers.local import LocalProvider, process
from support import context

WAIT = 60.0  # generous upper bound for a process to reach a state; never asserted on


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def alive(pid: int, create_time: float | None = None) -> bool:
    """The process runs (a zombie has exited: it only waits to be reaped)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.5:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_group(pid: int, create_time: float) -> None:
    """Test teardown: SIGKILL the process group whatever the test did, and reap our child."""
    proc = process.find(pid, create_time)
    family = [proc, *proc.children(recursive=True)] if proc else []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., process.Started]]:
    """process.start() that kills whatever it started when the test ends."""
    started: list[process.Started] = []

    def run(cmd: list[str], port: int = 0) -> process.Started:
        result = process.start(cmd, port, tmp_path / "logs" / f"proc-{len(started)}.log")
        started.append(result)
        return result

    yield run
    for item in started:
        kill_group(item.pid, item.create_time)


def http_server(port: int, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)]


def listening(port: int) -> Callable[[], bool]:
    return lambda: not (process.answers(port, timeout=1.0) or "").startswith("no answer")


# --- start, find, answers ---------------------------------------------------------------------------------------


def test_started_server_is_found_and_a_404_on_v1_models_is_reported(spawn, tmp_path: Path) -> None:
    port = process.free_port()
    started = spawn(http_server(port, tmp_path / "www"), port)

    assert started.port == port
    proc = process.find(started.pid, started.create_time)
    assert proc is not None and proc.pid == started.pid
    assert "http.server" in proc.cmdline()
    assert os.getpgid(started.pid) == started.pid  # its own process group: stoppable as a whole

    wait_for(listening(port), f"http.server on port {port}")
    assert process.answers(port) == "HTTP 404"
    assert "/v1/models" in started.log.read_text()  # the server's output goes to its log


def test_answers_none_when_v1_models_answers_200(spawn, tmp_path: Path) -> None:
    port = process.free_port()
    (tmp_path / "www" / "v1").mkdir(parents=True)
    (tmp_path / "www" / "v1" / "models").write_text('{"object": "list", "data": []}')
    spawn(http_server(port, tmp_path / "www"), port)

    wait_for(listening(port), f"http.server on port {port}")
    assert process.answers(port) is None


def test_answers_asks_the_local_server_directly_even_with_a_proxy_configured(spawn, tmp_path: Path) -> None:
    port = process.free_port()
    spawn(http_server(port, tmp_path / "www"), port)
    wait_for(listening(port), f"http.server on port {port}")

    # A user behind a corporate proxy: readiness and health checks must still reach 127.0.0.1 itself.
    # (In a fresh interpreter: urllib reads the proxy variables once per process.)
    dead_proxy = f"http://127.0.0.1:{process.free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(http_proxy=dead_proxy, HTTP_PROXY=dead_proxy, PYTHONPATH=str(Path(process.__file__).parents[2]))
    result = subprocess.run(
        [sys.executable, "-c", f"from providers.local import process; print(process.answers({port}))"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HTTP 404"


def test_answers_says_nothing_listens() -> None:
    port = process.free_port()
    why = process.answers(port)
    assert why is not None and why.startswith(f"no answer on port {port}")


def test_find_refuses_a_reused_pid(spawn, tmp_path: Path) -> None:
    started = spawn([sys.executable, "-c", "import time; time.sleep(300)"])
    assert process.find(started.pid, started.create_time) is not None
    # Same pid, but a process that started at another time: not the one llmctl started.
    assert process.find(started.pid, started.create_time - 5) is None
    assert process.find(started.pid, started.create_time + 5) is None


def test_find_does_not_see_an_exited_process(spawn) -> None:
    started = spawn([sys.executable, "-c", "pass"])
    wait_for(lambda: not alive(started.pid), "the process to exit")
    assert process.find(started.pid, started.create_time) is None


# --- stop -------------------------------------------------------------------------------------------------------

PARENT_WITH_CHILD = textwrap.dedent("""\
    import subprocess, time
    child = subprocess.Popen(["sleep", "300"])
    time.sleep(300)
""")


def test_stop_leaves_neither_the_server_nor_its_children(spawn) -> None:
    started = spawn([sys.executable, "-c", PARENT_WITH_CHILD])
    parent = psutil.Process(started.pid)
    wait_for(parent.children, "the child process")
    [child] = parent.children()
    child_create_time = child.create_time()
    assert child.name() == "sleep"

    process.stop(started.pid, started.create_time)

    assert not alive(started.pid, started.create_time)
    assert not alive(child.pid, child_create_time)
    assert process.find(started.pid, started.create_time) is None
    assert not psutil.pid_exists(started.pid)  # reaped, not left as a zombie


def test_stop_kills_a_server_that_ignores_sigterm(spawn) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(300)\n"
    started = spawn([sys.executable, "-c", script])
    wait_for(lambda: "ready" in started.log.read_text(), "the SIGTERM handler to be installed")

    process.stop(started.pid, started.create_time, grace=1.0)

    assert not alive(started.pid, started.create_time)


def test_stop_of_a_process_that_already_exited_reaps_it(spawn) -> None:
    started = spawn([sys.executable, "-c", "pass"])
    wait_for(lambda: not alive(started.pid), "the process to exit")
    process.stop(started.pid, started.create_time)
    assert not psutil.pid_exists(started.pid)


def test_stop_leaves_another_process_with_the_same_pid_alone(spawn) -> None:
    started = spawn([sys.executable, "-c", "import time; time.sleep(300)"])
    process.stop(started.pid, started.create_time - 5)  # what state recorded was another process
    assert alive(started.pid, started.create_time)


# --- LocalProvider.apply when the engine cannot start -----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.persisted: list[list[Resource]] = []
        self.progress: list[tuple[str, str]] = []

    def context(self, config_dir: Path) -> ApplyContext:
        """Applying to target `laptop` of an (otherwise empty) config in `config_dir`."""
        return ApplyContext(resolved=context(Desired.empty("junk", "dev", config_dir)), target="laptop",
                            persist=lambda resources: self.persisted.append(list(resources)),
                            progress=lambda address, status: self.progress.append((address, status)),
                            ready_timeout=60)

    def pids(self) -> set[tuple[int, float]]:
        return {(r.attrs["pid"], r.attrs["create_time"]) for batch in self.persisted for r in batch}


def junk_model(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-model.gguf"
    path.write_bytes(b"this is not a GGUF file\n" * 64)
    return path


def resource(model: Path, **spec: object) -> Resource:
    return Resource(address="local_process.junk[0]", type="local_process", owner="model.junk", provider="local",
                    target="laptop", spec={"engine": "llama-cpp", "model": str(model), "served_name": "junk",
                                           "context_length": 512, "engine_args": {}, **spec})


def change(want: Resource, action: str, before: Resource | None = None) -> ResourceChange:
    return ResourceChange(address=want.address, owner=want.owner, provider="local", target="laptop",
                          action=action, before=before.spec if before else None, after=want.spec)  # type: ignore[arg-type]


@pytest.fixture
def leftovers() -> Iterator[list[tuple[int, float]]]:
    """Pids a test hands over for cleanup, in case the code under test left them running."""
    pids: list[tuple[int, float]] = []
    yield pids
    for pid, create_time in pids:
        kill_group(pid, create_time)


@pytest.mark.integration  # starts a real llama.cpp server (which exits on the junk model)
def test_apply_of_a_server_that_cannot_load_its_model_fails_with_its_log(tmp_path: Path, leftovers) -> None:
    want = resource(junk_model(tmp_path))
    recorder = Recorder()
    with pytest.raises(ProviderError) as caught:
        try:
            LocalProvider().apply([change(want, "create")], [want], [], recorder.context(tmp_path))
        finally:
            leftovers.extend(recorder.pids())

    message = str(caught.value)
    assert "local_process.junk[0] exited before it was ready" in message
    [started] = recorder.persisted[0]  # recorded as soon as it started, so a crash leaves it in state
    log = Path(started.attrs["log"])
    assert log.is_relative_to(tmp_path / ".llmctl" / "run")
    tail = log.read_text().strip().splitlines()[-1]
    assert tail and tail in message  # the log's last lines say why
    assert "failed to load model" in message.lower()
    assert not alive(started.attrs["pid"], started.attrs["create_time"])
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(want.spec["model"]) in (p.info["cmdline"] or [])]
    assert recorder.persisted[-1] == []
    assert recorder.progress[-1][0] == "local_process.junk[0]"
    assert recorder.progress[-1][1].startswith("failed:")


@pytest.mark.integration  # starts a real llama.cpp server (which exits on the junk model)
def test_failed_replacement_keeps_the_old_process_serving(tmp_path: Path, spawn, leftovers) -> None:
    old_started = spawn([sys.executable, "-c", "import time; time.sleep(300)"])
    old = resource(tmp_path / "old.gguf").model_copy(update={"attrs": {
        "pid": old_started.pid, "create_time": old_started.create_time, "port": 1, "log": str(old_started.log)}})
    want = resource(junk_model(tmp_path))
    recorder = Recorder()
    with pytest.raises(ProviderError):
        try:
            LocalProvider().apply([change(want, "replace", old)], [want], [old], recorder.context(tmp_path))
        finally:
            leftovers.extend(recorder.pids())

    # While the new one started, state marked the old one deposed beside it.
    assert [r.deposed for r in recorder.persisted[0]] == [True, False]
    assert recorder.persisted[-1] == [old]  # kept, and no longer deposed
    assert alive(old_started.pid, old_started.create_time)
    new_pids = recorder.pids() - {(old_started.pid, old_started.create_time)}
    assert len(new_pids) == 1
    assert not any(alive(pid, create_time) for pid, create_time in new_pids)
