"""No command ends with a stray traceback after Pulumi's mocks ran.

Pulumi's runtime leaves open the event loops it runs on. When the garbage collector finalised one after its sockets,
a plan that had succeeded ended with "Exception ignored in: <function BaseEventLoop.__del__> ... ValueError: Invalid
file descriptor: -1" on stderr: in some runs, depending on the order in which objects were finalised. These tests make
a loop left open fail every run rather than some.
"""
from __future__ import annotations

import asyncio
import gc
import shutil
import sys
import warnings
from pathlib import Path

import pytest
from hub_server import TOKEN

from llmctl.config.load import load
from llmctl.desired import Desired
from providers.aws.program import mock_calls
from providers.aws.program import program as aws_program
from providers.kubernetes.program import program as kubernetes_program
from providers.pulumi_support.capture import capture
from support import REPO, Run, context, without_pulumi_cli

# The warning an event loop's finaliser gives when the loop was never closed, ignored by default. As an error it is
# reported ("Exception ignored in ...") for every loop left open, whatever order the collector finalises objects in.
LOOP_LEFT_OPEN = "unclosed event loop"


@pytest.mark.parametrize("example", ["kubernetes", "aws-gpu"])
def test_plan_and_a_refused_apply_end_without_a_traceback(example: str, hub_llmctl: Run, tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    shutil.copy(REPO / "examples" / example / "llmops.yaml", config)
    assert hub_llmctl("lock", "-f", str(config), env={"HF_TOKEN": TOKEN}).returncode == 0
    env = {**without_pulumi_cli(), "PYTHONWARNINGS": f"error:{LOOP_LEFT_OPEN}:ResourceWarning"}

    planned = hub_llmctl("plan", "-f", str(config), env=env)
    assert planned.returncode == 0, planned.stderr
    applied = hub_llmctl("apply", "-f", str(config), "--auto-approve", env=env)
    assert applied.returncode == 1 and "the pulumi CLI is not installed" in applied.stderr, applied.stderr
    for result in (planned, applied):
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_repeated_mock_runs_in_one_process_leave_no_event_loop_open(monkeypatch: pytest.MonkeyPatch) -> None:
    kubernetes = Desired.from_config(load(REPO / "examples" / "kubernetes" / "llmops.yaml"))
    aws = Desired.from_config(load(REPO / "examples" / "aws-gpu" / "llmops.yaml"))
    before = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", LOOP_LEFT_OPEN, ResourceWarning)
        for _ in range(5):
            capture(kubernetes_program(context(kubernetes), "cluster"), project=kubernetes.project, stack="prod-cluster")
            capture(aws_program(context(aws), "gpu-cloud"), project=aws.project, stack="prod-gpu-cloud", calls=mock_calls)
        # A loop the runs left behind is either still referenced here (open) or collected inside this block
        # (reported as unraisable), whichever thread dropped it and whenever.
        gc.collect()
        left_open = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()
                     and not any(o is b for b in before)]
    assert left_open == [] and unraisable == []
