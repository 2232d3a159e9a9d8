"""`llmctl eval` against what state says is deployed: what it runs, and the clear refusals when it cannot."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.evals.gate import deployed_evals
from llmctl.state import State
from llmctl.workspace import Workspace
from support import Run

CONFIG = """\
version: 1
project: x
models:
  - {name: bot, source: api://openai/gpt-4o-mini, evals: [quality, tone]}
  - {name: other, source: api://openai/gpt-4o-mini, evals: [quality]}
evals:
  - {name: quality, cases: [{vars: {q: hi}}], assert: [{type: contains, value: a}]}
  - {name: tone, cases: [{vars: {q: hi}}], assert: [{type: contains, value: b}]}
"""


def _deployed(tmp_path: Path) -> tuple[State, Workspace]:
    path = tmp_path / "llmops.yaml"
    path.write_text(CONFIG)
    desired = Desired.from_config(load(path))
    state = State(project="x", environment="default", lineage="l", serial=1, desired=desired.to_config(),
                  endpoints={"bot": ["http://127.0.0.1:1/v1"], "other": ["http://127.0.0.1:1/v1"]})
    return state, Workspace(path, "x", "default")


def test_it_runs_every_deployed_eval_or_those_named(tmp_path: Path) -> None:
    state, workspace = _deployed(tmp_path)
    assert deployed_evals(state, workspace, None, None)[1] == ["bot/quality", "bot/tone", "other/quality"]
    assert deployed_evals(state, workspace, ["bot"], ["tone"])[1] == ["bot/tone"]
    assert deployed_evals(state, workspace, None, ["quality"])[1] == ["bot/quality", "other/quality"]


@pytest.mark.parametrize(("models", "names", "message"), [
    (["bott"], None, "model bott has no endpoint in state (deployed: bot, other)"),
    (None, ["tonne"], "no deployed model names eval tonne; did you mean 'tone'?"),
    (["other"], ["tone"], "no deployed model names an eval among other"),
])
def test_what_it_cannot_run_is_named(tmp_path: Path, models, names, message: str) -> None:
    state, workspace = _deployed(tmp_path)
    with pytest.raises(LlmctlError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        deployed_evals(state, workspace, models, names)


def test_eval_with_nothing_deployed_exits_1_and_says_what_to_do(llmctl: Run, quickstart: Path) -> None:
    result = llmctl("eval", "-f", str(quickstart))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nothing is deployed in this environment: run `llmctl apply` first" in result.stderr
