"""The output guardrails on an upstream's answer: the texts of a whole answer they read and rewrite, one streamed
text through them in turn, and the error a guardrail's block becomes."""
from __future__ import annotations

from typing import Any

from llmctl.config.schema import Guardrail
from llmctl.gateway.call import Call
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.guardrails import OutputStream, Verdict, check_output
from llmctl.gateway.inputs import Kind

# The texts of a chat answer the output guardrails read: the reply and, from reasoning models (llama.cpp, vLLM,
# DeepSeek-style APIs), the reasoning shown beside it, which can carry the same PII. Tool-call arguments are JSON
# for a program, not text for a person, and are passed on as they are.
CHAT_TEXTS = ("content", "reasoning_content")
COMPLETION_TEXTS = ("text",)


def answer_texts(data: dict[str, Any], kind: Kind) -> list[tuple[dict[str, Any], str]]:
    """(holder, key) of each choice's texts in a whole (not streamed) answer."""
    places = []
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        holder = choice.get("message") if kind == "chat" else choice
        if isinstance(holder, dict):
            places += [(holder, key) for key in (CHAT_TEXTS if kind == "chat" else COMPLETION_TEXTS)
                       if isinstance(holder.get(key), str) and holder[key]]
    return places


def check_answer(call: Call, places: list[tuple[dict[str, Any], str]]) -> bool:
    """Apply the output guardrails to each text of a whole answer; True if any text changed (then re-serialise)."""
    assert call.route is not None
    changed = False
    for holder, key in places:
        text = holder[key]
        for guard in call.route.output_guards:
            verdict = check_output(text, guard.output)
            call.note(verdict)
            if verdict.blocked:
                raise blocked(guard, verdict, "answer")
            text = verdict.text
        if text != holder[key]:
            holder[key] = text
            changed = True
    return changed


def blocked(guard: Guardrail, verdict: Verdict, what: str) -> GatewayError:
    """The 400 a guardrail's block becomes, of the request (input) or the answer (output)."""
    rule = next((action.rule for action in verdict.actions if action.action == "block"), None)
    return GatewayError(400, f"guardrail '{guard.name}' blocked the {what}: {verdict.blocked}", "guardrail_violation",
                        rule)


class OutputChain:
    """One choice's streamed text through each output guardrail in turn."""

    def __init__(self, guards: list[Guardrail], call: Call) -> None:
        self._streams = [(guard, OutputStream(guard.output)) for guard in guards]
        self._call = call
        self.error: GatewayError | None = None
        self.closed = False

    def feed(self, text: str) -> str:
        for guard, stream in self._streams:
            if not text:
                return ""
            text = self._take(guard, stream.feed(text))
        return text

    def close(self) -> str:
        self.closed = True
        text = ""
        for guard, stream in self._streams:
            released = self._take(guard, stream.feed(text)) if text else ""
            text = released + self._take(guard, stream.close())
        return text

    def _take(self, guard: Guardrail, verdict: Verdict) -> str:
        self._call.note(verdict)
        if verdict.blocked and self.error is None:
            self.error = blocked(guard, verdict, "answer")
        return "" if self.error else verdict.text

