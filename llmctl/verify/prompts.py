"""The chat messages a load test sends: a prompts_file, the model's own prompt with sample values, or a default set."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from llmctl.config.schema import Prompt
from llmctl.errors import LlmctlError
from llmctl.verify.model import Message

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def sample_questions() -> list[str]:
    data = json.loads(resources.files("llmctl.verify").joinpath("sample_prompts.json").read_text())
    return list(data["questions"])


def render(prompt: Prompt, variables: dict[str, str]) -> list[Message]:
    """The model's prompt with its variables filled: a system message (if any) and the user turn."""
    text = _VARIABLE.sub(lambda m: str(variables.get(m.group(1), m.group(0))), prompt.template)
    return ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
        {"role": "user", "content": text}]


def load_prompts(prompt: Prompt | None, prompts_file: Path | None) -> list[list[Message]]:
    if prompts_file is not None:
        return _from_file(prompts_file, prompt)
    questions = sample_questions()
    if prompt is None:
        return [[{"role": "user", "content": question}] for question in questions]
    return [render(prompt, {name: question for name in prompt.variables}) for question in questions]


def _from_file(path: Path, prompt: Prompt | None) -> list[list[Message]]:
    """JSONL, one prompt a line: {"messages": [...]}, {"prompt": "text"} or {"variables": {...}} for the model's prompt."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LlmctlError(f"{path}: cannot read the load-test prompts_file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise LlmctlError(f"{path}: the load-test prompts_file is not UTF-8 text (byte {exc.start})") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if "messages" in item:
                messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in item["messages"]]
                if not messages:
                    raise ValueError("an empty conversation")  # every request would be rejected
            elif "prompt" in item:
                messages = [{"role": "user", "content": str(item["prompt"])}]
            elif "variables" in item and prompt is not None:
                messages = render(prompt, {k: str(v) for k, v in item["variables"].items()})
            else:
                raise KeyError("messages")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LlmctlError(
                f"{path}:{number}: each line must be JSON with \"messages\" (a list of {{role, content}}), "
                "\"prompt\" (text) or \"variables\" (for the model's prompt)") from None
        prompts.append(messages)
    if not prompts:
        raise LlmctlError(f"{path}: the prompts_file has no prompts")
    return prompts
