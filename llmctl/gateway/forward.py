"""Forwarding a request to a route's upstreams: failover across its replicas before any byte reaches the client,
and the upstream's failures and refusals as the client's errors (502, 504, or the upstream's own 4xx)."""
from __future__ import annotations

import json
from typing import Any

import httpx

from llmctl.gateway.call import Call
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.transport import UpstreamClient


async def send(client: UpstreamClient, call: Call, body: bytes, headers: dict[str, str],
               stream: bool) -> httpx.Response:
    """POST to the route's upstreams in turn until one answers. Only a refused (or timed-out) connection moves on to
    the next replica, and marks the one that refused down for a while: nothing was sent, so nothing is repeated."""
    assert call.route is not None
    route = call.route
    failures: list[str] = []
    retried_stale = False
    upstreams = route.rotation_of(call.version).order()
    index = 0
    while index < len(upstreams):
        upstream = upstreams[index]
        url = upstream.chat_url if call.kind == "chat" else upstream.completions_url
        try:
            response = await client.post(url, body, headers, stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            reason = error_text(exc)
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
            raise GatewayError(502, f"upstream {upstream.base_url} broke the connection: {error_text(exc)}",
                               "upstream_error", "upstream_error") from None
        except httpx.TimeoutException:
            call.upstream_failures.append("timeout")
            raise _timeout(client) from None
        except httpx.HTTPError as exc:
            call.upstream_failures.append("error")
            raise GatewayError(502, f"upstream {upstream.base_url} failed: {error_text(exc)}", "upstream_error",
                               "upstream_error") from None
        if upstream.down_until:
            upstream.mark_up()
        return response
    raise GatewayError(502, f"no upstream of model '{route.spec.model}' is reachable: {'; '.join(failures)}",
                       "upstream_error", "upstream_unreachable")


def _timeout(client: UpstreamClient) -> GatewayError:
    return GatewayError(504, f"the upstream did not answer within {client.timeout.read:g} s", "upstream_timeout",
                        "upstream_timeout")


def error_text(exc: Exception) -> str:
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

