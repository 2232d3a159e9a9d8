"""The gateway: one OpenAI-compatible endpoint in front of every model of an environment.

    app = create_app(GatewaySpec.read(path))   # Starlette; `python -m llmctl.gateway` serves it with uvicorn

A request to /v1/chat/completions or /v1/completions goes: body size → key (401) → JSON and types (400) → model
(404) → key allowed (403) → rate limit (429) → blocking budgets (429) → the model's prompt → input guardrails
(400) → upstream (failover across replicas, 502/504) → output guardrails (whole answer or stream) → metering,
metrics and the audit log. Metering happens after the answer has left: a whole answer's client is not kept waiting
for the ledger, and a stream's tokens are metered however it ended (finished, blocked, cut off by the client).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from llmctl.gateway.answers import answer_texts, blocked, check_answer
from llmctl.gateway.audit import AuditLog, prompt_sha256
from llmctl.gateway.auth import KeyRing, allowed
from llmctl.gateway.cache import ResponseCache, answer_output, cache_key, cacheable, replay
from llmctl.gateway.call import Call, Route, cached_input_tokens, metered_tokens, slo_outcome
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.feedback import not_found, parse_rating
from llmctl.gateway.forward import refusal, send
from llmctl.gateway.guardrails import check_input, screen_values
from llmctl.gateway.inputs import Kind, Texts, apply_prompt, check_length, client_text, parse, read_body, texts
from llmctl.gateway.metering import Answered, Ledger
from llmctl.gateway.metrics import NO_TEAM, GatewayMetrics, ReplicaState
from llmctl.gateway.probes import PROBE_TIMEOUT_S, probe_all, probe_forever, replicas
from llmctl.gateway.relay import StreamRelay
from llmctl.gateway.routing import CANARY, Rotation, Upstream
from llmctl.gateway.spec import GatewaySpec, KeySpec, RouteSpec, priced_usd
from llmctl.gateway.spend import BudgetState, Spending
from llmctl.gateway.store import StoreError
from llmctl.gateway.stores import Stores
from llmctl.gateway.tokens import counter_for
from llmctl.gateway.transport import UpstreamClient, UpstreamTransport
from llmctl.gateway.variants import Variants, caller_of, pinned_version, version_of

log = logging.getLogger("llmctl.gateway")

# A replica that does not accept a connection within this is treated as down (the next one is tried); the spec's
# upstream_timeout_s bounds the wait for an answer once connected.
CONNECT_TIMEOUT_S = 3.0
# Idle upstream connections are dropped before uvicorn's (llama-cpp-python's server) 5 s keep-alive would close them
# under us.
KEEPALIVE_EXPIRY_S = 4.0
MAX_CONNECTIONS = 1024
ANONYMOUS = "anonymous"  # no keys are declared, so none is required
UNAUTHENTICATED = "unauthenticated"  # keys are required and the request had none that matched (metrics only)
_JSON = {"content-type": "application/json"}


def create_app(spec: GatewaySpec, reload: Callable[[], tuple[GatewaySpec, str]] | None = None,
               spec_sha256: str | None = None, port: int | None = None) -> Starlette:
    """`reload`: how to read the spec again (with its file's sha256) when the process gets SIGHUP."""
    gateway = Gateway(spec, spec_sha256, port)

    def on_sighup() -> None:
        assert reload is not None
        try:
            gateway.reload(*reload())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            log.error("SIGHUP: the spec was not reloaded, the one before is still served: %s", exc)
        else:
            log.warning("SIGHUP: reloaded the spec (%s)", gateway.spec_sha256)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.open()  # in the serving thread: SQLite connections belong to the thread that opened them
        gateway.start_probing()
        if reload is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
        yield
        await gateway.aclose()

    app = Starlette(
        routes=[
            HttpRoute("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
            HttpRoute("/v1/completions", gateway.completions, methods=["POST"]),
            HttpRoute("/v1/models", gateway.models, methods=["GET"]),
            HttpRoute("/v1/feedback", gateway.feedback, methods=["POST"]),
            HttpRoute("/health", gateway.health, methods=["GET"]),
            HttpRoute("/metrics", gateway.metrics_text, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return GatewayError(exc.status_code, message, "invalid_request_error", code, headers=exc.headers).response()


async def _server_error(request: Request, exc: Exception) -> Response:
    return GatewayError(500, "the gateway failed on this request (see its log)", "internal_error").response()


def _routes(spec: GatewaySpec) -> dict[str, Route]:
    for route in spec.routes.values():
        unknown = [name for name in route.budgets if name not in spec.budgets]
        if unknown:
            raise ValueError(f"model '{route.model}' counts against budgets not in the spec: {unknown}")
        if not route.upstreams:
            raise ValueError(f"model '{route.model}' has no upstream")
    for key in spec.keys:
        unknown = [name for name in key.budgets if name not in spec.budgets]
        if unknown:
            raise ValueError(f"key '{key.id}' counts against budgets not in the spec: {unknown}")
    return {route.model: _route(route) for route in spec.routes.values()}


def _generation(spec: RouteSpec) -> str:
    served = spec.model_dump(mode="json", include={"identity", "prompt", "guardrails"})
    if spec.canary is not None:
        served["canary"] = spec.canary.model_dump(mode="json", include={"identity", "prompt"})
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()


def _route(spec: RouteSpec) -> Route:
    caps = [guard.output.max_tokens for guard in spec.guardrails if guard.output.max_tokens is not None]
    return Route(
        spec=spec,
        rotation=Rotation([Upstream(url) for url in spec.upstreams]),
        canary=Rotation([Upstream(url, CANARY) for url in spec.canary.upstreams]) if spec.canary else None,
        prompt_versions=spec.prompt.versions() if spec.prompt else [],
        canary_prompt_versions=spec.canary.prompt.versions() if spec.canary and spec.canary.prompt else [],
        generation=_generation(spec),
        counter=counter_for(spec.tokenizer),
        input_guards=[g for g in spec.guardrails if g.input.max_tokens is not None or g.input.pii != "off"
                      or g.input.prompt_injection != "off" or g.input.deny_patterns],
        output_guards=[g for g in spec.guardrails if g.output.pii != "off" or g.output.prompt_injection != "off"
                       or g.output.deny_patterns],
        max_tokens=min(caps) if caps else None,
    )


def _client(timeout: httpx.Timeout | float, limits: httpx.Limits) -> httpx.AsyncClient:
    # Plain-http upstreams (the replicas) go through the lean transport; https (hosted APIs) through httpx's own,
    # which also honours HTTPS_PROXY.
    return httpx.AsyncClient(timeout=timeout, limits=limits, mounts={"http://": UpstreamTransport(limits)})


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer KEY`, or from an `api-key` / `x-api-key` header."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("api-key") or headers.get("x-api-key")


class Gateway:
    def __init__(self, spec: GatewaySpec, spec_sha256: str | None = None, port: int | None = None) -> None:
        """`port`: the one it listens on, which names its spool among its replicas' on one host."""
        self.spec = spec
        self.port = port
        self.spec_sha256 = spec_sha256  # of the spec file it serves, for whoever wrote it to see it taken
        self.routes = _routes(spec)
        self.keys = KeyRing(spec.keys)
        self.keys_required = bool(spec.keys)
        self.audit = AuditLog(Path(spec.audit_path))
        self.metrics = GatewayMetrics(spec.slo_thresholds, budgets=spec.budgets,
                                      slo_models=[route.model for route in spec.routes.values() if route.slo])
        self.metrics.watch(self._replica_states, self._budget_states)
        self._stores: Stores | None = None
        self._variants = Variants(lambda *assignment: self.ledger.assign(*assignment))
        # Answers sent whose metering (which keeps them for feedback) has not run yet, by request id and body id:
        # a client may rate an answer the moment it has it.
        self._unmetered: dict[str, Call] = {}
        # One client for every upstream request: pooled HTTP/1.1 keep-alive connections, no per-request setup.
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS,
                              keepalive_expiry=KEEPALIVE_EXPIRY_S)
        self.client = UpstreamClient(
            httpx.Timeout(spec.upstream_timeout_s, connect=min(CONNECT_TIMEOUT_S, spec.upstream_timeout_s)), limits,
            UpstreamTransport(limits))
        # The probes have their own, unpooled: a probe never holds (or, answered with `Connection: close`, ends) a
        # connection a request could have reused, and it finds out whether a new connection is accepted.
        self.probe_client = _client(PROBE_TIMEOUT_S, httpx.Limits(max_keepalive_connections=0))
        self._probing: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    def reload(self, spec: GatewaySpec, spec_sha256: str | None = None) -> None:
        """Serve `spec` from now on, in place: requests under way finish as they began, counters and the rate
        limiter's windows carry on. Raises ValueError (serving the old spec still) for a spec it cannot take."""
        if not self.spec.reloadable_to(spec):
            raise ValueError("the ledger, audit log, SLO thresholds, upstream timeout, probe interval or cache settings "
                             "changed: restart the gateway to take them")
        routes = _routes(spec)
        self.spec, self.spec_sha256, self.routes = spec, spec_sha256, routes
        self.keys, self.keys_required = KeyRing(spec.keys), bool(spec.keys)
        self.metrics.declare(slo_models=[r.model for r in spec.routes.values() if r.slo], budgets=spec.budgets)
        if self._stores is not None:
            self._stores.take(spec)
        self._forget_unserved()

    def open(self) -> None:
        """Open (and migrate) the store: StoreError when it cannot be reached, ValueError when its DSN is not where
        the spec says, SchemaTooNew when a newer llmctl migrated it."""
        if self._stores is None:
            self._stores = Stores(self.spec, self.port)
            self._forget_unserved()

    def _forget_unserved(self) -> None:
        """Answers of a model version, prompt or guardrail policy no longer served are never replayed again."""
        if self._cache is not None:
            try:
                gone = self._cache.keep_only((name, route.generation) for name, route in self.routes.items())
            except StoreError as error:  # a later spec change (or restart) drops them
                log.error("cached answers of what is no longer served were not dropped: %s", error)
                return
            if gone:
                log.warning("dropped %d cached answers of what is no longer served", gone)

    @property
    def stores(self) -> Stores:
        self.open()  # on first use where the app is served without a lifespan (httpx.ASGITransport)
        assert self._stores is not None
        return self._stores

    @property
    def ledger(self) -> Ledger:
        return self.stores.ledger

    @property
    def _cache(self) -> ResponseCache | None:
        return self._stores.cache if self._stores is not None else None

    @property
    def spending(self) -> Spending:
        return self.stores.spending

    def start_probing(self) -> None:
        """The background health probes of the replicas, until aclose (on the serving event loop)."""
        if self._probing is None:
            self._probing = asyncio.create_task(
                probe_forever(self.probe_client, lambda: self.routes.values(), self.spec.probe_interval_s))
        if self._watching is None:
            self._watching = asyncio.create_task(self.stores.watch())

    async def aclose(self) -> None:
        for task in (self._probing, self._watching):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._probing = self._watching = None
        await self.probe_client.aclose()
        await self.client.aclose()
        if self._stores is not None:
            self._stores.close()
            self._stores = None
        self.audit.close()

    # --- endpoints ---------------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, "completions")

    async def models(self, request: Request) -> Response:
        try:
            key = self._authenticate(request)
        except GatewayError as error:
            return error.response()
        names = [name for name in self.routes if key is None or allowed(key, name)]
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "llmctl"} for name in names]})

    async def feedback(self, request: Request) -> Response:
        """Rate an answer, by the key that asked for it, within the feedback window."""
        try:
            key = self._authenticate(request)
            rating = parse_rating(await read_body(request, self.spec.max_body_bytes), self.spec.feedback)
            answered = self._answered(rating.answer, key.id if key else ANONYMOUS)
            if answered is None:
                raise not_found(rating.answer)
            self.ledger.rate(answered, rating.score, rating.negative, rating.comment)
            if rating.negative and answered.cache_key is not None and self._cache is not None:
                self._cache.evict(answered.cache_key)  # a cached answer users dislike is not handed out again
        except GatewayError as error:
            return error.response()
        except StoreError:
            log.exception("the ledger could not take a rating")
            return GatewayError(503, "the rating could not be stored; try again", "server_error",
                                "ledger_unavailable").response()
        self.metrics.feedback(answered.model, answered.version, answered.prompt_version, rating.negative)
        return JSONResponse({"object": "feedback", "id": answered.request_id, "score": rating.score,
                             "negative": rating.negative})

    def _answered(self, answer: str, key_id: str) -> Answered | None:
        call = self._unmetered.get(answer)
        if call is not None and call.route is not None:
            if time.perf_counter() - call.started > self.spec.feedback.window_s:
                return None
            found = _answered_by(call, call.key.id if call.key else ANONYMOUS)
            return found if found.key_id == key_id else None
        return self.ledger.answered(answer, key_id, time.time() - self.spec.feedback.window_s)

    async def health(self, request: Request) -> Response:
        """200 while the gateway runs; per model, whether its upstreams answer (replicas are probed now; a hosted
        API is not called, it is reported by whether its key is set)."""
        await probe_all(self.probe_client, self.routes.values())
        now = time.monotonic()
        routes: dict[str, Any] = {}
        for name, route in self.routes.items():
            upstreams = [{"url": u.base_url, "version": u.version, "healthy": u.healthy(now),
                          **({} if u.healthy(now) else {"error": u.last_error})}
                         for u in [*route.rotation.upstreams, *(route.canary.upstreams if route.canary else [])]]
            entry: dict[str, Any] = {"kind": route.spec.kind, "healthy": any(u["healthy"] for u in upstreams),
                                     "upstreams": upstreams}
            if route.spec.kind == "api" and route.spec.api_key_env:
                entry["api_key_env"] = route.spec.api_key_env
                entry["api_key_set"] = bool(os.environ.get(route.spec.api_key_env))
                entry["healthy"] = entry["healthy"] and entry["api_key_set"]
            routes[name] = entry
        status = "ok" if all(entry["healthy"] for entry in routes.values()) else "degraded"
        return JSONResponse({"status": status, "routes": routes,
                             **({"spec_sha256": self.spec_sha256} if self.spec_sha256 else {})})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def _replica_states(self) -> list[ReplicaState]:
        return [ReplicaState(model, replica, upstream.up) for model, replica, upstream in replicas(self.routes.values())
                if upstream.up is not None]

    def _budget_states(self) -> list[BudgetState]:
        try:
            return self.spending.states()
        except StoreError as error:  # the scrape still serves every other series
            log.error("the ledger could not be read for the budget metrics: %s", error)
            return []

    # --- a completion ------------------------------------------------------------------------------------------------

    async def _serve(self, request: Request, kind: Kind) -> Response:
        call = Call(time.perf_counter(), kind)
        try:
            return await self._complete(request, call)
        except GatewayError as error:
            self.finish(call, error.status, reason=f"{error.type}: {error.reason}")
            return error.response()

    def _authenticate(self, request: Request) -> KeySpec | None:
        if not self.keys_required:
            return None
        raw = presented_key(request)
        if raw is None:
            raise GatewayError(401, "no API key: send one as 'Authorization: Bearer KEY'", "authentication_error",
                               "missing_api_key")
        key = self.keys.authenticate(raw)
        if key is None:
            raise GatewayError(401, "the API key is not valid", "authentication_error", "invalid_api_key")
        return key

    async def _complete(self, request: Request, call: Call) -> Response:
        limit = self.spec.max_body_bytes
        check_length(request, limit)
        call.key = key = self._authenticate(request)
        self.stores.refuse_if_down()
        call.request = client = parse(await read_body(request, limit), call.kind)
        route = self.routes.get(client.model)
        if route is None:
            known = [name for name in self.routes if key is None or allowed(key, name)]
            raise GatewayError(404, f"model '{client.model[:100]}' does not exist on this gateway; models: "
                               f"{', '.join(known) or '(none)'}", "invalid_request_error", "model_not_found", "model")
        call.route = route
        caller = caller_of(client.body, key)
        call.version = pinned_version(request, route, key) or version_of(route, caller)
        if key is not None:
            if not allowed(key, client.model):
                raise GatewayError(403, f"key '{key.id}' may not call model '{client.model}'", "permission_error",
                                   "model_not_allowed", "model")
            retry_after = self.stores.admit(key)
            if retry_after is not None:
                raise GatewayError(429, f"key '{key.id}' is over its per-minute limit; retry in {retry_after} s",
                                   "rate_limit_error", "rate_limit_exceeded",
                                   headers={"retry-after": str(retry_after)})
        if call.budgets:
            self.stores.check_budgets(call.budgets)
        prompt, versions = route.prompt_of(call.version)
        rendered = apply_prompt(client, prompt, lambda _: self._variants.pick(versions, caller))
        call.prompt_version = rendered.version if rendered is not None else None
        call.texts = found = texts(client)
        call.prompt_sha256 = prompt_sha256(found.text())
        if route.input_guards and found.places:
            self._guard_input(call, route, found)
        if self._cache is not None:
            cached = self._look_up(request, call, route)
            if cached is not None:
                return cached
        body = self._upstream_body(call, route)
        response = await send(self.client, call, body, self._upstream_headers(route), client.stream)
        if response.status_code != 200:
            if response.status_code >= 500:
                call.upstream_failures.append("status")
            raise await refusal(response)
        if client.stream:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                await response.aclose()
                raise GatewayError(502, f"the upstream answered a streamed request with {content_type or 'no'} "
                                   "content, not an event stream", "upstream_error", "upstream_malformed")
            call.forwarded = True
            self._unmetered[call.request_id] = call
            return StreamRelay(call, response, self.finish, client.include_usage, self.spec.upstream_timeout_s)
        call.forwarded = True
        self._unmetered[call.request_id] = call
        return self._whole(call, route, response)

    def _look_up(self, request: Request, call: Call, route: Route) -> Response | None:
        """The cached answer to this request, replayed; None (and the call told whether to store its answer)
        when there is none."""
        assert self._cache is not None and call.request is not None
        directives = {part.strip().lower() for part in request.headers.get("cache-control", "").split(",")}
        if not cacheable(call.request.body):
            call.cache = "bypass"
            return None
        key = call.key
        tenant = f"team:{key.team}" if key and key.team else f"key:{key.id if key else ANONYMOUS}"
        call.cache_key = cache_key(tenant, route.generation, call.version, call.kind, call.request.body)
        call.cache_store = "no-store" not in directives
        try:
            answer = None if "no-cache" in directives else self._cache.get(call.cache_key)
        except StoreError as error:  # served from the model instead
            log.error("the cache could not be read: %s", error)
            answer = None
        if answer is None:
            call.cache = "miss"
            return None
        call.cache, call.answer = "hit", answer
        self._unmetered[call.request_id] = call
        replayed = replay(answer, call.request_id, call.request.stream, call.request.include_usage)
        headers = {name.decode(): value.decode() for name, value in call.headers()}
        output = answer_output(answer, call.kind)
        task = BackgroundTask(self._finish_after, call, 200, answer.get("usage"), output)
        if call.request.stream:
            return Response(replayed, 200, media_type="text/event-stream", headers=headers, background=task)
        return Response(replayed, 200, media_type="application/json", headers=headers, background=task)

    def _guard_input(self, call: Call, route: Route, found: Texts) -> None:
        assert call.request is not None
        text, written = found.text(), client_text(call.request, found)
        for guard in route.input_guards:
            verdict = check_input(text, guard.input, route.counter, written)
            call.note(verdict)
            if verdict.blocked:
                raise blocked(guard, verdict, "request")
            if verdict.text == text:
                continue
            # Redacted: write the redaction back into each message (checked one by one, so each gets its own).
            if len(found.places) == 1:
                holder, key = found.places[0]
                holder[key] = verdict.text
            else:
                for holder, key in found.places:
                    own = screen_values(holder[key], guard.input, "input")
                    if own.blocked:
                        raise blocked(guard, own, "request")
                    holder[key] = own.text
            text = found.text()

    def _upstream_body(self, call: Call, route: Route) -> bytes:
        assert call.request is not None
        client, body = call.request, call.request.body
        body["model"] = route.upstream_model_of(call.version)
        if client.stream:
            # Usage at the end of the stream, for metering (an upstream that ignores this is counted instead).
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if call.kind == "chat" and route.spec.kind == "replicas" and body.get("max_tokens") is None \
                and body.get("max_completion_tokens") is not None:
            body["max_tokens"] = body["max_completion_tokens"]  # llama-cpp-python's server reads only max_tokens
        if route.max_tokens is not None:
            fields = [name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
            for name in fields:
                body[name] = min(body[name], route.max_tokens)
            if not fields:
                # OpenAI's reasoning models take only max_completion_tokens; self-hosted servers read max_tokens.
                name = "max_completion_tokens" if call.kind == "chat" and route.spec.kind == "api" else "max_tokens"
                body[name] = route.max_tokens
        return json.dumps(body, ensure_ascii=False).encode()

    def _upstream_headers(self, route: Route) -> dict[str, str]:
        env = route.spec.api_key_env
        if route.spec.kind != "api" or not env:
            return _JSON
        secret = os.environ.get(env)  # read per request: a rotated key is picked up without a restart
        if not secret:
            raise GatewayError(502, f"model '{route.spec.model}' needs its API key in the environment variable "
                               f"{env}, which is not set for the gateway", "upstream_error", "upstream_key_missing")
        return {"content-type": "application/json", "authorization": f"Bearer {secret}"}

    def _whole(self, call: Call, route: Route, response: httpx.Response) -> Response:
        raw = response.content
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GatewayError(502, "the upstream's answer is not a JSON object", "upstream_error",
                               "upstream_malformed")
        if isinstance(data.get("id"), str):
            call.answer_id = data["id"]
            self._unmetered[call.answer_id] = call
        places = answer_texts(data, call.kind)
        output = [holder[key] for holder, key in places]
        usage = data.get("usage")
        if route.output_guards:
            try:
                if check_answer(call, places):
                    raw = json.dumps(data, ensure_ascii=False).encode()
            except GatewayError as error:  # blocked: the tokens were spent all the same
                self.finish(call, error.status, usage, output, f"{error.type}: {error.reason}")
                return error.response()
        if call.cache_store:
            call.answer = data
        return Response(raw, 200, media_type="application/json",
                        headers={name.decode(): value.decode() for name, value in call.headers()},
                        background=BackgroundTask(self._finish_after, call, 200, usage, output))

    async def _finish_after(self, call: Call, status: int, usage: Any, output: list[str]) -> None:
        # async so that Starlette runs it on the event loop, not in a thread (the ledger's connection is this
        # thread's), right after the body was sent.
        self.finish(call, status, usage, output, None)

    # --- metering ----------------------------------------------------------------------------------------------------

    def finish(self, call: Call, status: int, usage: dict[str, Any] | None = None, output: list[str] | None = None,
               reason: str | None = None) -> None:
        """Meter, count and audit one request however it ended. `output` is None when no answer came back."""
        try:
            self._finish(call, status, usage, output, reason)
        except Exception:  # noqa: BLE001 - metering must not turn an answered request into a failure
            log.exception("metering a request to %s failed", call.route.spec.model if call.route else "(no model)")
        finally:  # from now on the ledger answers for it
            self._unmetered.pop(call.request_id, None)
            if call.answer_id is not None:
                self._unmetered.pop(call.answer_id, None)

    def _finish(self, call: Call, status: int, usage: dict[str, Any] | None, output: list[str] | None,
                reason: str | None) -> None:
        route = call.route
        model = route.spec.model if route else None
        label = model or "unknown"
        key_id = call.key.id if call.key else (None if self.keys_required else ANONYMOUS)
        key_label = key_id or UNAUTHENTICATED
        team = call.key.team if call.key and call.key.team else NO_TEAM
        seconds = time.perf_counter() - call.started
        input_tokens = output_tokens = 0
        if route is not None and output is not None and (call.forwarded or call.cache == "hit"):
            usd: float | None = 0.0  # a replayed answer asked nothing of the upstream
            if call.forwarded:
                input_tokens, output_tokens = metered_tokens(call, usage, output)
                price = route.spec.price
                usd = None if price is None else priced_usd(price, input_tokens, output_tokens,
                                                            cached_input_tokens(usage))
            answered = _answered_by(call, key_id or ANONYMOUS) if status == 200 else None
            try:
                self.stores.record(model=route.spec.model, key_id=key_id or ANONYMOUS, budgets=call.budgets,
                                   input_tokens=input_tokens, output_tokens=output_tokens, usd=usd,
                                   team=call.key.team if call.key else None, request_id=call.request_id,
                                   answered=answered, forget_before=time.time() - self.spec.feedback.window_s)
            except StoreError:  # the rest (metrics, the audit line) still says what happened
                log.exception("the ledger could not record a request to %s", model)
            self.metrics.tokens(label, key_label, team, input_tokens, output_tokens, call.version)
            if usd:
                self.metrics.spend(label, key_label, team, usd, call.budgets, call.version)
                if call.budgets:
                    self.spending.recorded(call.budgets, usd)
            if call.key is not None:
                self.stores.add_tokens(call.key, input_tokens + output_tokens)
        self.metrics.request(label, key_label, team, status, seconds, call.version)
        if call.cache is not None:
            self.metrics.cache(label, call.cache)
            if call.cache == "miss" and call.cache_store and status == 200 and call.answer is not None \
                    and route is not None and call.cache_key is not None and self._cache is not None:
                try:
                    self._cache.put(call.cache_key, label, route.generation, call.answer)
                except StoreError:  # the answer went out; only its replay is lost
                    log.exception("the cache %s could not store an answer", self._cache)
        prompt = route.prompt_of(call.version)[0] if route is not None else None
        if call.prompt_version is not None and prompt is not None:
            self.metrics.prompt_request(label, prompt.name, call.prompt_version, status)
        if call.ttft is not None:
            self.metrics.ttft(label, call.ttft, call.version)
        if call.itl:
            self.metrics.itl(label, call.itl, call.version)
        good = slo_outcome(call, status, seconds)
        if good is not None:
            self.metrics.slo_request(label, good, call.version)
        for action in call.actions:
            self.metrics.guardrail(label, action.rule, action.action)
        for failure in call.upstream_failures:
            self.metrics.upstream_error(label, failure)
        self.audit.write(key_id=key_id, model=model, prompt_sha256=call.prompt_sha256, input_tokens=input_tokens,
                         output_tokens=output_tokens, actions=[f"{a.rule}:{a.action}" for a in call.actions],
                         status=status, reason=reason, cache=call.cache)


def _answered_by(call: Call, key_id: str) -> Answered:
    assert call.route is not None
    return Answered(call.request_id, call.answer_id, call.route.spec.model, call.version, call.prompt_version, key_id,
                    call.cache_key if call.cache in ("hit", "miss") else None)
