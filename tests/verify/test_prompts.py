"""What a load test sends: the model's own prompt, a JSONL prompts_file, or the default questions."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmctl.config.schema import Prompt
from llmctl.errors import LlmctlError
from llmctl.verify.prompts import load_prompts, sample_questions

SUPPORT = Prompt(name="support", system="You are a concise support assistant.",
                 template="Answer the customer question: {{ question }}", variables=["question"])


def test_default_set_when_there_is_no_prompt() -> None:
    questions = sample_questions()
    assert len(questions) >= 3 and all(isinstance(q, str) and q for q in questions)
    assert load_prompts(None, None) == [[{"role": "user", "content": q}] for q in questions]


def test_model_prompt_rendered_with_each_sample_question() -> None:
    prompts = load_prompts(SUPPORT, None)
    assert len(prompts) == len(sample_questions())
    for messages, question in zip(prompts, sample_questions()):
        assert messages == [{"role": "system", "content": "You are a concise support assistant."},
                            {"role": "user", "content": f"Answer the customer question: {question}"}]


def test_prompt_without_system_message_sends_only_the_user_turn() -> None:
    plain = Prompt(name="plain", template="Q: {{question}}", variables=["question"])
    assert load_prompts(plain, None)[0] == [{"role": "user", "content": f"Q: {sample_questions()[0]}"}]


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_prompts_file_accepts_each_line_shape(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        json.dumps({"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]}),
        "",
        json.dumps({"prompt": "What is a GPU?"}),
        "   ",
        json.dumps({"variables": {"question": "Where is my order?"}}),
    )
    assert load_prompts(SUPPORT, path) == [
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "What is a GPU?"}],
        [{"role": "system", "content": "You are a concise support assistant."},
         {"role": "user", "content": "Answer the customer question: Where is my order?"}],
    ]


def test_prompts_file_wins_over_the_model_prompt(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"prompt": "Only this."}))
    assert load_prompts(SUPPORT, path) == [[{"role": "user", "content": "Only this."}]]


@pytest.mark.parametrize("bad", [
    "{not json",
    json.dumps({"text": "no known key"}),
    json.dumps({"messages": [{"role": "user"}]}),    # no content
    json.dumps({"messages": "Hi"}),                  # not a list of messages
    json.dumps({"messages": []}),                    # an empty conversation
    json.dumps(["a", "list"]),
    json.dumps("messages"),
    "42",
])
def test_bad_line_names_its_line_number(tmp_path: Path, bad: str) -> None:
    path = _write(tmp_path, json.dumps({"prompt": "fine"}), "", bad, json.dumps({"prompt": "also fine"}))
    with pytest.raises(LlmctlError, match=f"^{re.escape(str(path))}:3: each line must be JSON"):
        load_prompts(None, path)


def test_variables_line_needs_a_model_prompt(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"variables": {"question": "Where is my order?"}}))
    with pytest.raises(LlmctlError, match=f"^{re.escape(str(path))}:1:"):
        load_prompts(None, path)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_prompts_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(LlmctlError, match="has no prompts"):
        load_prompts(None, path)


def test_missing_prompts_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="cannot read the load-test prompts_file"):
        load_prompts(None, tmp_path / "nowhere.jsonl")


def test_prompts_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')  # Latin-1, not UTF-8
    with pytest.raises(LlmctlError, match="not UTF-8"):
        load_prompts(None, path)
