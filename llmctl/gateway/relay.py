"""A streamed answer relayed to the client event by event (an event the output guardrails did not change is passed
on as the bytes the upstream sent), what streamed metered however the stream ended: finished, blocked, broken off
upstream, or cut off by the client."""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llmctl.gateway.answers import CHAT_TEXTS, COMPLETION_TEXTS, OutputChain
from llmctl.gateway.call import Call, metered_tokens
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.forward import error_text
from llmctl.gateway.sse import EventReader

# After [DONE] the upstream only has the end of its body left to send; reading it keeps the connection reusable.
# The client's response ends only once it is read (or this has passed).
DRAIN_S = 1.0
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]\n\n"
_FAILURE = {"upstream_timeout": "timeout", "upstream_malformed": "malformed", "upstream_error": "broken_stream"}

# What the app does with a request however it ended: meter, count, audit (Gateway.finish).
Finish = Callable[[Call, int, "dict[str, Any] | None", "list[str] | None", "str | None"], None]


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
        self._arrived = 0.0  # time.perf_counter() when the chunk being read arrived
        self._status = 200
        self._reason: str | None = None
        self._ended = False  # the client's stream has its [DONE]
        self._abort = False  # ... and the upstream is to be closed, not drained
        # For the response cache: what the client was sent, per (choice, field), and how each choice finished.
        self._keep = call.cache_store
        self._sent: dict[tuple[int, str], list[str]] = {}
        self._finished: dict[int, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": _SSE_HEADERS + self._call.headers()})
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
        out = await self._pass_on(chunks, send)
        if not self._abort:
            # The client gets its [DONE] at once, and the end of its response once the upstream's body has ended:
            # by then the connection is back in the pool, for the next request the client sends when its response
            # ends (ending it first let that request find the connection still busy and open another).
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            out = []
            with anyio.move_on_after(DRAIN_S):
                try:
                    async for _ in chunks:
                        pass
                except httpx.HTTPError:
                    pass
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})

    async def _pass_on(self, chunks: AsyncIterator[bytes], send: Send) -> list[bytes]:
        """Relay the upstream's events until the stream ends; the last events, for the client, are returned."""
        reader = EventReader()
        out: list[bytes] = []
        try:
            async for chunk in chunks:
                self._arrived = time.perf_counter()
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
            out = [self._fail(GatewayError(502, f"the upstream stream broke off: {error_text(exc)}", "upstream_error",
                                           "upstream_error"))]
        return out

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
            if self._call.answer_id is None and isinstance(event.get("id"), str):
                self._call.answer_id = event["id"]
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
        changed = timed = False
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
            if finished and self._keep:
                self._finished[index] = choice["finish_reason"]
            for key in self._fields:
                text = holder.get(key)
                if not isinstance(text, str):
                    text = ""
                if text:
                    self._output.append(text)
                    if not timed:  # one arrival per event, however many choices and fields carry text
                        self._call.text_arrived(self._arrived)
                        timed = True
                if not self._guards:
                    if text and self._keep:
                        self._sent.setdefault((index, key), []).append(text)
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
                if safe and self._keep:
                    self._sent.setdefault((index, key), []).append(safe)
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
                if self._keep:
                    self._sent.setdefault((index, key), []).append(rest)
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
        if self._keep:
            self._call.answer = self._whole_answer()
        return out

    def _whole_answer(self) -> dict[str, Any]:
        """The stream as one whole answer, as the client got it: what the cache replays."""
        choices = []
        for index in sorted({index for index, _ in self._sent} | set(self._finished)):
            texts = {key: "".join(self._sent.get((index, key), [])) for key in self._fields}
            fields = {key: text for key, text in texts.items() if text}
            body: dict[str, Any] = ({"message": {"role": "assistant", "content": fields.pop("content", ""), **fields}}
                                    if self._chat else {"text": fields.get("text", "")})
            choices.append({"index": index, **body, "finish_reason": self._finished.get(index, "stop")})
        return {"object": "chat.completion" if self._chat else "text_completion", "model": self._last.get("model"),
                "choices": choices, **({"usage": self._usage} if self._usage else {})}

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

