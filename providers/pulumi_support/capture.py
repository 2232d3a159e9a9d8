"""Run a Pulumi program under Pulumi's own mocks and capture every resource it would register.

This is how plans work with no Pulumi CLI, cloud or credentials: the same program that `pulumi up` would run
declares its resources here, and llmctl diffs what it declared against what the last apply declared.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import mocks

SENSITIVE = "(sensitive value)"
KNOWN_AFTER_APPLY = "(known after apply)"
# Pulumi's wire marker for a secret value (the "sig" key of a serialised secret), and what the engine's events
# write in place of a secret and of a value not known until apply.
_SECRET_SIG = "4dabf18193072939515e22adb298388d"
_MASKED_SECRET = "[secret]"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

Calls = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Captured:
    type: str  # e.g. aws:ec2/launchTemplate:LaunchTemplate
    name: str
    inputs: dict[str, Any]


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self, calls: Calls) -> None:
        self.resources: list[Captured] = []
        self._calls = calls

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Captured(args.typ, args.name, plain(args.inputs, frozenset())))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return self._calls(args.token, dict(args.args))


def capture(program: Callable[[], None], project: str, stack: str, calls: Calls = lambda token, args: {}
            ) -> list[Captured]:
    """Every resource `program` registers, with its inputs (secrets masked). `calls` answers data-source
    invokes such as aws:ec2/getAmi:getAmi, which under mocks reach no cloud."""
    recorder = _Recorder(calls)
    with _event_loops():
        mocks.set_mocks(recorder, project=project, stack=stack, preview=True)
        mocks.test(program)()
    return recorder.resources


@contextmanager
def _event_loops() -> Iterator[None]:
    """Every event loop a mock run uses, made here and closed when it ends.

    Pulumi's runtime runs on this thread's loop, registers each resource from a thread of that loop's default
    executor, and there gives each thread a loop of its own (sync_await._ensure_event_loop); it closes none of them.
    Left to the garbage collector, such a loop may be finalised after its self-pipe sockets, and closing it then
    prints "Exception ignored in: <function BaseEventLoop.__del__> ... Invalid file descriptor: -1" (typically at
    interpreter exit, so after a plan's output). Here the executor is ours: each of its threads starts with a loop
    made here, and once the threads are joined every loop is closed.
    """
    loops: list[asyncio.AbstractEventLoop] = []

    def new_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        asyncio.set_event_loop(loop)
        return loop

    executor = ThreadPoolExecutor(thread_name_prefix="pulumi-mocks", initializer=new_loop)
    new_loop().set_default_executor(executor)
    try:
        yield
    finally:
        executor.shutdown(wait=True)  # no thread still runs on a loop closed below
        for loop in loops:
            loop.close()
        asyncio.set_event_loop(None)


def plain(value: Any, unknown: frozenset[str] = frozenset({UNKNOWN})) -> Any:
    """Inputs as plan values: secrets masked (so they never reach a plan, state or log), whole floats back to ints
    (the wire format has only floats), and values in `unknown` as (known after apply)."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) is not None:
            return SENSITIVE
        return {key: plain(item, unknown) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, unknown) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == _MASKED_SECRET:
        return SENSITIVE
    if isinstance(value, str) and value in unknown:
        return KNOWN_AFTER_APPLY
    return value
