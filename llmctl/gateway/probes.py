"""Health probes of the self-hosted replicas: each one's model list is asked for, on /health and every
`probe_interval_s` in the background, so that `llmctl_gateway_upstream_up` says a replica is down with no traffic
to find it out. Hosted APIs are not probed (their provider's status is not ours to page on)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

import anyio
import httpx

from llmctl.gateway.call import Route
from llmctl.gateway.routing import Upstream

log = logging.getLogger("llmctl.gateway")

# Well under the interval between probes, and long enough for a server answering other requests.
PROBE_TIMEOUT_S = 2.0


def replicas(routes: Iterable[Route]) -> Iterator[tuple[str, str, Upstream]]:
    """(model, replica, upstream) of every replica; the replica is its index in the route's list, `canary-N` for a
    rollout's new version."""
    for route in routes:
        if route.spec.kind == "replicas":
            for index, upstream in enumerate(route.rotation.upstreams):
                yield route.spec.model, str(index), upstream
            for index, upstream in enumerate(route.canary.upstreams if route.canary else []):
                yield route.spec.model, f"canary-{index}", upstream


async def probe(client: httpx.AsyncClient, upstream: Upstream) -> None:
    """Ask the replica for its models; a refused connection also takes it out of rotation for a while (as a
    request's would), an answer puts it back."""
    try:
        response = await client.get(upstream.models_url, timeout=PROBE_TIMEOUT_S)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        upstream.mark_down(str(exc) or type(exc).__name__)
        return
    except httpx.TimeoutException:
        # Connected, slow to answer: busy, not down (llama.cpp's server answers nothing else while it generates).
        upstream.up = True
        return
    except httpx.HTTPError:
        upstream.up = False  # connected, then the connection broke: it did not answer
        return
    upstream.mark_up()
    upstream.up = response.status_code < 500


async def probe_all(client: httpx.AsyncClient, routes: Iterable[Route]) -> None:
    async with anyio.create_task_group() as group:
        for _, _, upstream in replicas(routes):
            group.start_soon(probe, client, upstream)


async def probe_forever(client: httpx.AsyncClient, routes: Callable[[], Iterable[Route]], interval_s: float) -> None:
    """Until cancelled. The first round is one interval after the start, not at once: the replicas have just
    answered apply's readiness check, and until a probe has answered the gauge is absent rather than guessed."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await probe_all(client, list(routes()))  # read each round: a reload may have changed them
        except Exception:  # noqa: BLE001 - a bug in one round must not end the probes for the process's life
            log.exception("probing the replicas failed")
