"""The command line as a user meets it: exit codes, error shapes, saved plans, locks, output formats."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from support import EXAMPLE_CONTRACT, REPO, Run

DIAGNOSTIC = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): .+$", re.MULTILINE)


def test_the_config_contract_validates_unchanged(llmctl: Run) -> None:
    result = llmctl("validate", "-f", str(EXAMPLE_CONTRACT))
    assert result.returncode == 0, result.stderr
    assert "valid (support-bot/dev: 4 models" in result.stdout


@pytest.mark.parametrize("text, line, words", [
    pytest.param("version: 1\nproject: x\nmodels:\n  - name: a\n    source: [unclosed\n", 6, "YAML syntax error",
                 id="syntax-error"),
    pytest.param("version: 1\nproject: x\nmodelz: []\n", 3, "did you mean 'models'", id="unknown-key"),
    pytest.param("version: 1\nproject: x\nmodels:\n  - name: a\n    source: m.gguf\n    engine: llama-cpp\n"
                 "    replicas: 0\n", 7, "greater than 0", id="zero-replicas"),
    pytest.param("version: 1\nproject: x\nmodels:\n  - name: a\n    source: m.gguf\n    engine: llama-cpp\n"
                 "    target: nowhere\n", 7, "target 'nowhere', which is not declared", id="dangling-target"),
    pytest.param("", 1, "empty", id="empty-file"),
])
def test_bad_config_exits_1_with_file_line_col_and_no_traceback(llmctl: Run, tmp_path: Path, text: str, line: int,
                                                                words: str) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(text)
    for command in ("validate", "plan", "apply"):
        result = llmctl(command, "-f", str(config))
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        found = DIAGNOSTIC.search(result.stderr)
        assert found and found["file"] == str(config) and int(found["line"]) == line, result.stderr
        assert words in result.stderr


def test_missing_file_and_directory_are_clear_errors(llmctl: Run, tmp_path: Path) -> None:
    missing = llmctl("validate", "-f", str(tmp_path / "nope.yaml"))
    directory = llmctl("plan", "-f", str(tmp_path))
    assert (missing.returncode, directory.returncode) == (1, 1)
    assert "file not found" in missing.stderr and "llmctl init" in missing.stderr
    assert "is a directory" in directory.stderr
    assert "Traceback" not in missing.stderr + directory.stderr


def test_validate_json_lists_every_diagnostic(llmctl: Run, tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text("version: 1\nproject: x\nmodels:\n  - name: a\n    source: s3://b/m\n    engine: llamacpp\n")
    result = llmctl("validate", "-f", str(config), "--format", "json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["valid"] is False
    assert [(d["line"], d["col"]) for d in report["diagnostics"]] == [(5, 5), (6, 5)]


def test_usage_error_exits_1_not_2(llmctl: Run, quickstart: Path) -> None:
    # 2 means "there are changes" for plan --detailed-exitcode; a typo must not look like that.
    result = llmctl("plan", "-f", str(quickstart), "--detailed-exitcodes")
    assert result.returncode == 1
    assert "No such option" in result.stderr


def test_init_scaffolds_a_config_that_validates_and_refuses_to_overwrite(llmctl: Run, tmp_path: Path) -> None:
    first = llmctl("init", str(tmp_path / "proj"))
    assert first.returncode == 0, first.stderr
    config = tmp_path / "proj" / "llmops.yaml"
    assert config.read_text().startswith("# yaml-language-server: $schema=llmops.schema.json\n")
    assert json.loads((tmp_path / "proj" / "llmops.schema.json").read_text())["title"] == "llmops.yaml"
    assert llmctl("validate", "-f", str(config)).returncode == 0
    again = llmctl("init", str(tmp_path / "proj"))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_plan_formats_and_detailed_exitcode(llmctl: Run, quickstart: Path) -> None:
    text = llmctl("plan", "-f", str(quickstart), "--detailed-exitcode")
    assert text.returncode == 2, text.stderr
    assert '+ model "assistant" {' in text.stdout and "+ local_process.assistant[0]" in text.stdout
    assert "+ local_gateway.dev" in text.stdout
    assert "Plan: 7 to add, 0 to change, 0 to destroy." in text.stdout

    plain = llmctl("plan", "-f", str(quickstart), "--format", "json")
    plan = json.loads(plain.stdout)
    jsonschema.validate(plan, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    assert plain.returncode == 0
    assert {c["address"]: c["action"] for c in plan["changes"]}["model.assistant"] == "create"
    assert plan["summary"] == {"add": 7, "change": 0, "destroy": 0}

    markdown = llmctl("plan", "-f", str(quickstart), "--format", "markdown").stdout
    assert "| `model.assistant` | create |" in markdown and "<details>" in markdown


def test_apply_refuses_a_saved_plan_whose_state_moved(llmctl: Run, quickstart: Path) -> None:
    # A prompt-only config makes apply write state without starting a server.
    quickstart.write_text("version: 1\nproject: qs\nprompts:\n  - name: p\n    template: hi\n")
    saved = quickstart.parent / "old.plan"
    assert llmctl("plan", "-f", str(quickstart), "--out", str(saved)).returncode == 0
    assert llmctl("apply", "-f", str(quickstart), "--auto-approve").returncode == 0

    stale = llmctl("apply", str(saved))
    assert stale.returncode == 1
    assert "state serial 0" in stale.stderr and "now at serial 1" in stale.stderr


def test_apply_asks_and_accepts_only_yes(llmctl: Run, quickstart: Path) -> None:
    quickstart.write_text("version: 1\nproject: qs\nprompts:\n  - name: p\n    template: hi\n")
    refused = llmctl("apply", "-f", str(quickstart), input="y\n")
    assert refused.returncode == 1 and "Apply cancelled" in refused.stderr
    no_terminal = llmctl("apply", "-f", str(quickstart), input="")
    assert no_terminal.returncode == 1 and "--auto-approve" in no_terminal.stderr
    assert llmctl("plan", "-f", str(quickstart), "--detailed-exitcode").returncode == 2  # nothing was applied
    accepted = llmctl("apply", "-f", str(quickstart), input="yes\n")
    assert accepted.returncode == 0, accepted.stderr
    assert llmctl("plan", "-f", str(quickstart), "--detailed-exitcode").returncode == 0

    kept = llmctl("destroy", "-f", str(quickstart), input="no\n")
    assert kept.returncode == 1 and "Destroy cancelled" in kept.stderr
    assert llmctl("plan", "-f", str(quickstart), "--detailed-exitcode").returncode == 0  # still applied
    assert llmctl("destroy", "-f", str(quickstart), input="yes\n").returncode == 0
    assert llmctl("plan", "-f", str(quickstart), "--detailed-exitcode").returncode == 2


def test_a_second_apply_waits_for_the_lock_then_names_the_holder(llmctl: Run, quickstart: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from pathlib import Path; from llmctl.state import LocalBackend\n"
            f"b = LocalBackend(Path({str(quickstart.parent / '.llmctl')!r}), 'quickstart', 'dev')\n"
            "with b.lock(10, 'llmctl apply (test holder)'):\n"
            "    print('held', flush=True); sys.stdin.readline()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        blocked = llmctl("apply", "-f", str(quickstart), "--auto-approve", "--lock-timeout", "1")
        assert blocked.returncode == 1
        assert str(holder.pid) in blocked.stderr and "--lock-timeout" in blocked.stderr
        assert "Traceback" not in blocked.stderr
    finally:
        holder.communicate("release\n", timeout=30)


def test_corrupt_state_is_an_error_and_is_left_as_it_was(llmctl: Run, quickstart: Path) -> None:
    state = quickstart.parent / ".llmctl" / "state" / "quickstart" / "dev.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"serial": 3, "lineage": ')
    result = llmctl("plan", "-f", str(quickstart))
    assert result.returncode == 1 and str(state) in result.stderr and "Traceback" not in result.stderr
    assert state.read_text() == '{"serial": 3, "lineage": '


def test_a_file_that_is_not_a_saved_plan_is_refused(llmctl: Run, tmp_path: Path) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text('{"hello": 1}')
    result = llmctl("apply", str(bogus))
    assert result.returncode == 1 and "not a plan saved by `llmctl plan --out`" in result.stderr


def _on_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run llmctl on a pseudo-terminal, as in an interactive shell, and return what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", *args], stdout=follower, stderr=follower,
                            env={**{k: v for k, v in os.environ.items() if k != "NO_COLOR"}, **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colours_on_a_terminal_and_none_with_no_color_or_a_pipe(llmctl: Run, quickstart: Path) -> None:
    coloured = _on_terminal(["plan", "-f", str(quickstart)], {"TERM": "xterm-256color"})
    assert "\x1b[" in coloured and '+ model "assistant"' in coloured
    assert "\x1b[" not in _on_terminal(["plan", "-f", str(quickstart)], {"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert "\x1b[" not in llmctl("plan", "-f", str(quickstart)).stdout


@pytest.mark.integration  # starts a real llama.cpp server (which exits on the junk model)
def test_a_saved_plan_is_refused_after_an_apply_that_did_not_finish(llmctl: Run, quickstart: Path) -> None:
    quickstart.write_text("version: 1\nproject: qs\nprompts:\n  - name: p\n    template: hi\n")
    assert llmctl("apply", "-f", str(quickstart), "--auto-approve").returncode == 0  # serial 1
    # llama.cpp refuses a file that is not GGUF: the server exits and the apply fails, leaving serial 1.
    (quickstart.parent / "junk.gguf").write_bytes(b"not a model")
    quickstart.write_text(quickstart.read_text() + "models:\n  - name: m\n    source: junk.gguf\n"
                          "    engine: llama-cpp\n")
    saved = quickstart.parent / "saved.plan"
    assert llmctl("plan", "-f", str(quickstart), "--out", str(saved)).returncode == 0
    failed = llmctl("apply", "-f", str(quickstart), "--auto-approve")
    assert failed.returncode == 1 and "exited before it was ready" in failed.stderr

    refused = llmctl("apply", str(saved))
    assert refused.returncode == 1
    assert "did not finish (apply failed)" in refused.stderr and "run `llmctl plan` again" in refused.stderr
    # A plan made now is accepted (and fails the same way, for the same reason).
    assert llmctl("plan", "-f", str(quickstart), "--out", str(saved)).returncode == 0
    assert "did not finish" not in llmctl("apply", str(saved)).stderr
