"""Finding providers: the entry-point group `llmctl.providers` maps a provider name to its class."""
from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from llmctl.errors import LlmctlError
from llmctl.provider import Provider

GROUP = "llmctl.providers"


class ProviderUnavailable(LlmctlError):
    pass


@cache
def get_provider(name: str) -> Provider:
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        raise ProviderUnavailable(
            f"provider '{name}' is not installed in this environment (installed: {installed}); "
            f"a provider registers itself in the '{GROUP}' entry-point group"
        )
    provider = found[name].load()()
    if not isinstance(provider, Provider):
        raise ProviderUnavailable(f"entry point '{name}' in '{GROUP}' does not implement the Provider interface")
    return provider
