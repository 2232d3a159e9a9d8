"""Forwarding a request upstream and relaying the answer: failover across replicas before any byte reaches the
client, the output guardrails on whole and streamed answers, and a streamed answer relayed event by event (an
event the guardrails did not change is passed on as the bytes the upstream sent)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llmctl.config.schema import Guardrail
from llmctl.gateway.audit import prompt_sha256
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.guardrails import Action, OutputStream, Verdict, check_output
from llmctl.gateway.inputs import ClientRequest, Kind, Texts
from llmctl.gateway.routing import Rotation
from llmctl.gateway.spec import KeySpec, RouteSpec
from llmctl.gateway.sse import EventReader
from llmctl.gateway.tokens import TokenCounter

EMPTY_SHA256 = prompt_sha256("")
# After [DONE] the upstream only has the end of its body left to send; reading it keeps the connection reusable.
DRAIN_S = 1.0
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]\n\n"
_FAILURE = {"upstream_timeout": "timeout", "upstream_malformed": "malformed", "upstream_error": "broken_stream"}


@dataclass
class Route:
    """A route with what serving it needs, built once at startup."""

    spec: RouteSpec
    rotation: Rotation
    counter: TokenCounter
    input_guards: list[Guardrail]  # the route's guardrails whose input part checks something
    output_guards: list[Guardrail]  # ... and whose output part does
    max_tokens: int | None  # the smallest output.max_tokens of its guardrails


@dataclass
class Call:
    """One request on its way through the gateway: what the audit log, the ledger and the metrics are told."""

    started: float  # time.perf_counter()
    kind: Kind
    key: KeySpec | None = None
    route: Route | None = None
    request: ClientRequest | None = None
    texts: Texts | None = None
    prompt_sha256: str = EMPTY_SHA256
    actions: dict[Action, None] = field(default_factory=dict)  # ordered set: each rule/action once per request
    forwarded: bool = False  # an upstream accepted the request: tokens are being spent
    ttft: float | None = None
    upstream_failures: list[str] = field(default_factory=list)  # why upstream calls failed: connect, timeout, ...

    def note(self, verdict: Verdict) -> None:
        for action in verdict.actions:
            self.actions[action] = None


def metered_tokens(call: Call, usage: Any, output: list[str]) -> tuple[int, int]:
    """(input, output) tokens: the upstream's usage where it gave one, else the route's counter on the texts sent
    and received (llama-cpp-python's server sends no usage in streams). The counter sees the texts, not the chat
    template the server wraps them in, so a counted prompt is short by the template's tokens."""
    assert call.route is not None
    counter = call.route.counter
    given = usage if isinstance(usage, dict) else {}
    prompt, completion = given.get("prompt_tokens"), given.get("completion_tokens")
    if not isinstance(prompt, int) or prompt < 0:
        prompt = counter.count(call.texts.text()) if call.texts else 0
    if not isinstance(completion, int) or completion < 0:
        completion = counter.count("".join(output)) if output else 0
    return prompt, completion


Finish = Callable[[Call, int, "dict[str, Any] | None", "list[str] | None", "str | None"], None]


async def send(client: httpx.AsyncClient, call: Call, body: bytes, headers: dict[str, str],
               stream: bool) -> httpx.Response:
    """POST to the route's upstreams in turn until one answers. Only a refused (or timed-out) connection moves on to
    the next replica, and marks the one that refused down for a while: nothing was sent, so nothing is repeated."""
    assert call.route is not None
    route = call.route
    failures: list[str] = []
    retried_stale = False
    upstreams = route.rotation.order()
    index = 0
    while index < len(upstreams):
        upstream = upstreams[index]
        url = upstream.chat_url if call.kind == "chat" else upstream.completions_url
        request = client.build_request("POST", url, content=body, headers=headers)
        try:
            response = await client.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            reason = _reason(exc)
            upstream.mark_down(reason)
            call.upstream_failures.append("connect")
            failures.append(f"{upstream.base_url}: {reason}")
            index += 1
            continue
        except httpx.RemoteProtocolError as exc:
            # A pooled keep-alive connection the upstream closed just as it was reused: once, on a new connection.
            if not retried_stale and "without sending" in str(exc):
                retried_stale = True
                continue
            call.upstream_failures.append("protocol")
            raise GatewayError(502, f"upstream {upstream.base_url} broke the connection: {_reason(exc)}",
                               "upstream_error", "upstream_error") from None
        except httpx.TimeoutException:
            call.upstream_failures.append("timeout")
            raise _timeout(client) from None
        except httpx.HTTPError as exc:
            call.upstream_failures.append("error")
            raise GatewayError(502, f"upstream {upstream.base_url} failed: {_reason(exc)}", "upstream_error",
                               "upstream_error") from None
        if upstream.down_until:
            upstream.mark_up()
        return response
    raise GatewayError(502, f"no upstream of model '{route.spec.model}' is reachable: {'; '.join(failures)}",
                       "upstream_error", "upstream_unreachable")


def _timeout(client: httpx.AsyncClient) -> GatewayError:
    return GatewayError(504, f"the upstream did not answer within {client.timeout.read:g} s", "upstream_timeout",
                        "upstream_timeout")


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


async def refusal(response: httpx.Response) -> GatewayError:
    """An upstream's non-200 answer. A 4xx is the client's to see, with the upstream's message, type and code (in
    the OpenAI error shape whatever shape the upstream used); a 5xx is a bad gateway, quoting the upstream."""
    body = await response.aread()
    await response.aclose()
    status = response.status_code
    error = _upstream_error(body)
    message = str(error.get("message") or "")[:2000]
    if status < 500:
        headers = {name: response.headers[name] for name in ("retry-after",) if name in response.headers}
        kind, code, param = (error.get(name) for name in ("type", "code", "param"))
        return GatewayError(status, message or f"the upstream refused the request with HTTP {status}",
                            str(kind) if kind else "invalid_request_error", None if code is None else str(code),
                            None if param is None else str(param), headers=headers or None,
                            reason=f"upstream answered HTTP {status}")
    return GatewayError(502, f"upstream answered HTTP {status}" + (f": {message[:300]}" if message else ""),
                        "upstream_error", "upstream_error", reason=f"upstream answered HTTP {status}")


def _upstream_error(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"message": body.decode("utf-8", "replace").strip()}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return {"message": data.get("detail") or data.get("message") if isinstance(data, dict) else str(data)}


# --- whole answers ---------------------------------------------------------------------------------------------------


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
    rule = next((action.rule for action in verdict.actions if action.action == "block"), None)
    return GatewayError(400, f"guardrail '{guard.name}' blocked the {what}: {verdict.blocked}", "guardrail_violation",
                        rule)


# --- streamed answers ------------------------------------------------------------------------------------------------


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


class StreamRelay(Response):
    """The streamed answer: relays the upstream's events to the client as they come. A client that goes away cancels
    the relay, which closes the upstream request; whatever was streamed until then is still metered."""

    def __init__(self, call: Call, upstream: httpx.Response, finish: Finish, include_usage: bool,
                 timeout_s: float) -> None:
        self.status_code = 200
        self._timeout_s = timeout_s
        self.background = None
        self._call = call
        self._upstream = upstream
        self._finish = finish
        self._include_usage = include_usage
        assert call.route is not None
        self._guards = call.route.output_guards
        self._chat = call.kind == "chat"
        self._fields = CHAT_TEXTS if self._chat else COMPLETION_TEXTS
        self._chains: dict[tuple[int, str], OutputChain] = {}
        self._output: list[str] = []
        self._usage: dict[str, Any] | None = None
        self._held_usage: bytes | None = None
        self._last: dict[str, Any] = {}
        self._status = 200
        self._reason: str | None = None
        self._ended = False  # the client's stream has its [DONE]
        self._abort = False  # ... and the upstream is to be closed, not drained

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal disconnected
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    disconnected = True
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await self._relay(send)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
            if disconnected and not self._ended:
                self._status, self._reason = 499, "the client closed the connection mid-stream"
            self._finish(self._call, self._status, self._usage, self._output, self._reason)

    async def _relay(self, send: Send) -> None:
        chunks = self._upstream.aiter_bytes()
        reader = EventReader()
        out: list[bytes] = []
        try:
            async for chunk in chunks:
                out = self._events(reader.feed(chunk))
                if self._ended:
                    break
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                    out = []
            else:
                out = self._events(reader.close())
                if not self._ended:  # the upstream ended its body without [DONE]
                    out += self._end()
        except httpx.TimeoutException:
            out = [self._fail(GatewayError(504, f"the upstream sent nothing for {self._timeout_s:g} s; the stream "
                                                "was ended", "upstream_timeout", "upstream_timeout"))]
        except httpx.HTTPError as exc:
            out = [self._fail(GatewayError(502, f"the upstream stream broke off: {_reason(exc)}", "upstream_error",
                                           "upstream_error"))]
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})
        if not self._abort:
            # The client has its answer; what is left upstream is the end of the body: read it so that the
            # connection goes back to the pool instead of being closed.
            with anyio.move_on_after(DRAIN_S):
                try:
                    async for _ in chunks:
                        pass
                except httpx.HTTPError:
                    pass

    def _events(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in payloads:
            if self._ended:
                break
            if payload == b"[DONE]":
                out += self._end()
                break
            try:
                event = json.loads(payload)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                out.append(self._fail(GatewayError(502, "the upstream sent an event that is not a JSON object",
                                                   "upstream_error", "upstream_malformed")))
                break
            choices = event.get("choices")
            usage = event.get("usage")
            if usage:
                self._usage = usage
            if not choices:
                if "error" in event:  # the upstream's own error event: the client sees it as sent
                    self._status, self._reason = 502, "the upstream sent an error event"
                    out.append(b"data: " + payload + b"\n\n")
                elif usage:
                    if self._include_usage:  # last, after any text the guardrails still hold
                        self._held_usage = payload
                else:
                    out.append(b"data: " + payload + b"\n\n")
                continue
            self._last = event
            if self._rewrite(choices):
                error = next((chain.error for chain in self._chains.values() if chain.error), None)
                if error is not None:
                    out.append(self._fail(error))
                    break
                payload = json.dumps(event, ensure_ascii=False).encode()
            out.append(b"data: " + payload + b"\n\n")
        return out

    def _rewrite(self, choices: list[Any]) -> bool:
        """Record each choice's texts and put them through the guardrails; True if the event must be re-serialised.
        A choice's last event (finish_reason set) also carries whatever text the guardrails still held."""
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            holder = choice.get("delta") if self._chat else choice
            if not isinstance(holder, dict):
                holder = {}
            index = choice.get("index", 0)
            if not isinstance(index, int):
                index = 0
            finished = choice.get("finish_reason") is not None
            for key in self._fields:
                text = holder.get(key)
                if not isinstance(text, str):
                    text = ""
                if text:
                    self._output.append(text)
                    if self._call.ttft is None:
                        self._call.ttft = time.perf_counter() - self._call.started
                if not self._guards:
                    continue
                chain = self._chains.get((index, key))
                if chain is None:
                    if not text:
                        continue
                    chain = self._chains[(index, key)] = OutputChain(self._guards, self._call)
                safe = chain.feed(text) if text else ""
                if finished and not chain.closed:
                    safe += chain.close()
                if chain.error is not None:
                    return True
                if safe != text:
                    holder[key] = safe
                    if self._chat and choice.get("delta") is not holder:
                        choice["delta"] = holder
                    changed = True
        return changed

    def _end(self) -> list[bytes]:
        """[DONE], after whatever text the guardrails still hold and the usage event the client asked for."""
        out: list[bytes] = []
        for (index, key), chain in self._chains.items():
            if chain.closed:
                continue
            rest = chain.close()
            if chain.error is not None:
                return [self._fail(chain.error)]
            if rest:
                out.append(b"data: " + json.dumps(self._tail_event(index, key, rest), ensure_ascii=False).encode()
                           + b"\n\n")
        if self._held_usage is not None:
            out.append(b"data: " + self._held_usage + b"\n\n")
        elif self._include_usage and self._usage is None:
            # The client asked for usage and the upstream sent none: the gateway's own count (what it meters).
            prompt, completion = metered_tokens(self._call, None, self._output)
            self._usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
            event = {**self._envelope(), "choices": [], "usage": self._usage}
            out.append(b"data: " + json.dumps(event).encode() + b"\n\n")
        out.append(_DONE)
        self._ended = True
        return out

    def _tail_event(self, index: int, key: str, text: str) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": None}
        if self._chat:
            choice["delta"] = {key: text}
        else:
            choice[key] = text
        return {**self._envelope(), "choices": [choice]}

    def _envelope(self) -> dict[str, Any]:
        """id, object, created and model of the upstream's events, for an event the gateway adds."""
        return {name: self._last[name] for name in ("id", "object", "created", "model") if name in self._last}

    def _fail(self, error: GatewayError) -> bytes:
        """End the client's stream with an error event; the upstream is closed rather than read to its end."""
        if error.type == "guardrail_violation":
            self._status = 200  # what the client's status line said
        else:
            self._status = error.status
            self._call.upstream_failures.append(_FAILURE.get(error.code or "", "error"))
        self._reason = f"{error.type}: {error.reason}"
        self._ended = self._abort = True
        return error.sse()

