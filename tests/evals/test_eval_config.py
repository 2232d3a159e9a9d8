"""The `evals:` section at validate: every bad input is a clear FILE:LINE error, in llmops.yaml or in the dataset."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config.errors import ConfigError
from evals.configs import HEAD
from llmctl.config.load import load

def _problems(tmp_path: Path, evals: str, dataset: str | None = None) -> list[str]:
    config = tmp_path / "llmops.yaml"
    config.write_text(HEAD + evals)
    if dataset is not None:
        (tmp_path / "cases.jsonl").write_text(dataset)
    with pytest.raises(ConfigError) as caught:
        load(config)
    return [str(d).replace(str(tmp_path) + "/", "") for d in caught.value.diagnostics]


def test_a_valid_eval_with_a_dataset_loads(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(HEAD + """\
    dataset: cases.jsonl
    cases:
      - messages: [{role: user, content: hi}]
        assert: [{type: not_icontains, value: [error, sorry]}]
    assert:
      - {type: max_latency_ms, value: 3000}
      - {type: llm_rubric, value: Answers politely, judge: judge}
      - {type: similar, value: Use the reset link., threshold: 0.6}
      - {type: json_schema, value: {type: object, required: [answer]}}
    pass_rate: 0.9
    repeat: 3
""")
    (tmp_path / "cases.jsonl").write_text('{"vars": {"q": "hi"}, "expected": "hello"}\n\n'
                                          '{"vars": {"q": "x"}, "assert": [{"type": "regex", "value": "^h"}]}\n')
    loaded = load(config)
    [evaluation] = loaded.config.evals
    assert evaluation.pass_rate == 0.9 and evaluation.cases[0].assert_[0].negated
    assert loaded.config.models[0].evals == ["quality"]


@pytest.mark.parametrize(("evals", "expected"), [
    ("    assert: [{type: containz, value: reset}]\n",
     "llmops.yaml:11:15: eval 'quality': unknown assertion type 'containz'; did you mean 'contains'?"),
    ("    assert: [{type: llm_rubric, value: polite, judge: jduge}]\n",
     "llmops.yaml:11:48: eval 'quality': llm_rubric names judge 'jduge', which is not a declared model; "
     "did you mean 'judge'?"),
    ("    assert: [{type: llm_rubric, value: polite}]\n",
     "llmops.yaml:11:15: eval 'quality': llm_rubric needs a `judge`"),
    ("    assert: [{type: similar, value: x}]\n", "llmops.yaml:11:15: eval 'quality': similar needs a `threshold`"),
    ("    assert: [{type: similar, value: x, threshold: 1.2}]\n",
     "llmops.yaml:11:40: evals[quality].assert[0].threshold: input should be less than or equal to 1"),
    ("    pass_rate: 1.5\n", "llmops.yaml:11:5: evals[quality].pass_rate: input should be less than or equal to 1"),
    ("    assert: [{type: json_schema, value: {type: 12}}]\n",
     "llmops.yaml:11:34: eval 'quality': json_schema: not a valid JSON schema"),
    ("    assert: [{type: regex, value: '('}]\n",
     "llmops.yaml:11:28: eval 'quality': regex: '(' is not a valid regular expression"),
    ("    key: support\n", "llmops.yaml:11:5: eval 'quality' names gateway key 'support', which is not declared "
                          "(declared: none): declare it in gateway.keys"),
    ("    dataset: nowhere.jsonl\n",
     "llmops.yaml:11:5: eval 'quality': dataset nowhere.jsonl not found"),
])
def test_bad_eval_input_is_a_clear_error_at_its_line(tmp_path: Path, evals: str, expected: str) -> None:
    problems = _problems(tmp_path, evals)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_model_naming_an_undeclared_eval_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(HEAD.replace("evals: [quality]", "evals: [qualty]"))
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert "names eval 'qualty', which is not declared; did you mean 'quality'?" in str(caught.value)


def test_dataset_problems_name_the_dataset_file_and_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "    dataset: cases.jsonl\n", dataset=(
        '{"vars": {"q": "hi"}}\n'
        '{not json}\n'
        '{"vars": {"q": "x"}, "assert": [{"type": "icontain", "value": "a"}]}\n'
        '{"prompt": "x"}\n'
        '{"vars": {"q": "x"}, "messages": [{"role": "user", "content": "x"}]}\n'))
    assert problems[0].startswith("cases.jsonl:2:2: not a JSON object")
    assert problems[1].startswith("cases.jsonl:3:1: assert[0] type: unknown assertion type 'icontain'; "
                                  "did you mean 'icontains'?")
    assert problems[2] == ("cases.jsonl:4:1: unknown field 'prompt' (a case has vars or messages, and optionally "
                           "expected and assert)")
    assert problems[3] == "cases.jsonl:5:1: give exactly one of `vars` (the prompt's variables) or `messages`"
    assert len(problems) == 4
