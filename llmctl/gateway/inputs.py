"""A client's request body: read within the size limit, parsed, type-checked, its prompt template applied, and the
texts in it the guardrails look at."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Literal

from starlette.requests import Request

from llmctl.config.schema import Prompt
from llmctl.gateway.errors import GatewayError, bad_request

Kind = Literal["chat", "completions"]

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SEPARATOR = "\n\n"


@dataclass
class ClientRequest:
    kind: Kind
    body: dict[str, Any]  # edited in place into what goes upstream
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk at the end of a stream
    # The model's prompt, once rendered around the client's prompt_variables: where the texts it wrote are (the
    # messages it added, or for a completion the body whose prompt it wrote) and the values the client gave.
    rendered: list[dict[str, Any]] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)


@dataclass
class Texts:
    """Where the request's texts are, so that a guardrail's redaction can be written back into each one.

    Every message's text counts, whatever its role: the client writes the whole conversation, so an "assistant"
    turn can carry an email or an injection as well as a user turn can, and a tool result is outside text too."""

    places: list[tuple[Any, Any]]  # (container, key): container[key] is one text

    def text(self) -> str:
        return SEPARATOR.join(container[key] for container, key in self.places)


def client_text(request: ClientRequest, found: Texts) -> str:
    """What the client itself wrote: every text of the request but the model's own prompt that the gateway
    rendered around it (its system message and template), with the client's prompt_variables in the template's
    place. The prompt-injection check reads this: the operator's prompt is trusted, and read as a request, a
    persona set-up ("You are a concise support assistant...") is what the detector is trained to suspect."""
    if not request.rendered:
        return found.text()
    rendered = {id(container) for container in request.rendered}
    own = [container[key] for container, key in found.places if id(container) not in rendered]
    return SEPARATOR.join([*own, *request.variables])


def check_length(request: Request, limit: int) -> None:
    """413 before anything else when the declared Content-Length is over `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise bad_request(f"Content-Length {declared[:40]!r} is not a number") from None
        if size > limit:
            raise _too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as what arrived exceeds `limit` (a chunked body declares no length)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than this gateway's limit of {limit} bytes",
                        "invalid_request_error", "request_too_large")


def parse(raw: bytes, kind: Kind) -> ClientRequest:
    if not raw:
        raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, not {_json_type(body)}", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _wrong_type(name, "an integer", value)
        if value is not None and value < 1:
            raise bad_request(f"'{name}' must be at least 1, got {value}", name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _wrong_type("stream_options", "an object", options)
    include_usage = bool(options and options.get("include_usage") is True)
    if kind == "chat" and "messages" in body:
        _check_messages(body["messages"])
    if kind == "completions" and "prompt" in body:
        _check_prompt(body["prompt"])
    return ClientRequest(kind, body, model, stream, include_usage)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise _wrong_type("messages", "a list of messages", messages)
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _wrong_type(where, "an object with 'role' and 'content'", message)
        if not isinstance(message.get("role"), str):
            raise _wrong_type(f"{where}.role", "a string", message.get("role"))
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _wrong_type(f"{where}.content", "a string or a list of content parts", content)
        for number, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _wrong_type(f"{where}.content[{number}]", "an object with a 'type'", part)
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _wrong_type(f"{where}.content[{number}].text", "a string", part.get("text"))


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list) or not all(isinstance(item, str) for item in prompt):
        # Token-id prompts are valid OpenAI input, but no guardrail can read them, so the gateway refuses them.
        raise _wrong_type("prompt", "a string or a list of strings", prompt)


def _wrong_type(field: str, expected: str, value: Any) -> GatewayError:
    return bad_request(f"'{field}' must be {expected}, not {_json_type(value)}", field.split(".")[0].split("[")[0])


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def apply_prompt(request: ClientRequest, prompt: Prompt | None,
                 pick: Callable[[Prompt], Prompt] = lambda prompt: prompt) -> Prompt | None:
    """Render the model's prompt when the request names its variables (`prompt_variables`, top level or in
    `metadata`): the template becomes the last user turn and the prompt's system message comes first. `pick`
    chooses the version served (a variant); the one rendered is returned, None when none was."""
    body = request.body
    variables = body.pop("prompt_variables", None)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "prompt_variables" in metadata:
        nested = metadata.pop("prompt_variables")
        if not metadata:
            del body["metadata"]
        if variables is None:
            # OpenAI's metadata holds strings only, so a client may send the variables JSON-encoded there.
            variables = _decode(nested) if isinstance(nested, str) else nested
    if variables is None:
        _require_input(request)
        return None
    if not isinstance(variables, dict):
        raise _wrong_type("prompt_variables", "an object of variable names to values", variables)
    if prompt is None:
        raise bad_request(f"model '{request.model}' has no prompt template; send messages instead of "
                          "prompt_variables", "prompt_variables")
    prompt = pick(prompt)
    values: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, (dict, list)) or value is None:
            raise _wrong_type(f"prompt_variables.{name}", "a string", value)
        values[name] = value if isinstance(value, str) else json.dumps(value)
    missing = [name for name in dict.fromkeys(_VARIABLE.findall(prompt.template)) if name not in values]
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing)
        raise bad_request(f"prompt '{prompt.name}' needs the variable{'s' if len(missing) > 1 else ''} {listed} "
                          "in prompt_variables", "prompt_variables", "missing_prompt_variable")
    text = _VARIABLE.sub(lambda match: values[match.group(1)], prompt.template)
    request.variables = list(values.values())
    if request.kind == "chat":
        earlier = body.get("messages") or []
        system = [{"role": "system", "content": prompt.system}] if prompt.system else []
        request.rendered = [*system, {"role": "user", "content": text}]
        body["messages"] = [*system, *earlier, request.rendered[-1]]
    else:
        body["prompt"] = f"{prompt.system}{SEPARATOR}{text}" if prompt.system else text
        request.rendered = [body]
    return prompt


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise bad_request("'metadata.prompt_variables' must be an object or a JSON-encoded object",
                          "metadata") from None


def _require_input(request: ClientRequest) -> None:
    if request.kind == "chat":
        messages = request.body.get("messages")
        if messages is None:
            raise bad_request("'messages' is required (or 'prompt_variables' for the model's prompt)", "messages")
        if not messages:
            raise bad_request("'messages' must not be empty", "messages")
    elif "prompt" not in request.body:
        raise bad_request("'prompt' is required (or 'prompt_variables' for the model's prompt)", "prompt")


def texts(request: ClientRequest) -> Texts:
    if request.kind == "completions":
        prompt = request.body["prompt"]
        if isinstance(prompt, str):
            return Texts([(request.body, "prompt")])
        return Texts([(prompt, index) for index in range(len(prompt))])
    places: list[tuple[Any, Any]] = []
    for message in request.body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            places.append((message, "content"))
        elif isinstance(content, list):
            places += [(part, "text") for part in content if part["type"] == "text"]
    return Texts(places)
