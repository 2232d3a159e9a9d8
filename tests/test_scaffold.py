"""`llmctl init`'s hint: the commands it prints set what the written config needs before plan and apply."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.scaffold import next_steps, scaffold
from support import Run, edit

KEY_LINE = "      env: QUICKSTART_API_KEY # the key itself never enters this file, a plan or state\n"


def test_the_hint_exports_the_variable_the_written_config_names(tmp_path: Path) -> None:
    config = scaffold(tmp_path / "proj")
    assert next_steps(config).startswith(f"Next: cd {tmp_path / 'proj'} && export QUICKSTART_API_KEY=")
    # Read from the file, not known in advance: a renamed variable is the one to export.
    edit(config, KEY_LINE, "      env: SUPPORT_BOT_KEY\n")
    hint = next_steps(config)
    assert "export SUPPORT_BOT_KEY=" in hint and "QUICKSTART_API_KEY" not in hint


def test_a_config_without_keys_needs_only_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = scaffold(tmp_path)
    edit(config, "  keys:\n    - name: quickstart\n" + KEY_LINE + "      requests_per_minute: 120\n", "  keys: []\n")
    monkeypatch.chdir(tmp_path)  # init in the current directory: nothing to cd into
    assert next_steps(Path("llmops.yaml")) == "Next: llmctl plan"


def test_the_printed_hint_run_as_given_plans_with_the_key_set(llmctl: Run, tmp_path: Path) -> None:
    initialised = llmctl("init", "my project", cwd=tmp_path)
    assert initialised.returncode == 0, initialised.stderr
    hint = initialised.stderr.split("Next: ", 1)[1].strip()
    # A shell like the user's: llmctl and python3 of this installation on PATH, and no key set beforehand.
    env = {name: value for name, value in os.environ.items() if name != "QUICKSTART_API_KEY"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    planned = subprocess.run(["bash", "-c", hint], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert planned.returncode == 0, planned.stderr
    assert "Plan: " in planned.stdout and "is not set" not in planned.stdout + planned.stderr
