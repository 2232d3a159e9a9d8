"""Which engine series show saturation (queue length, KV-cache use), for the engine version llmctl deploys."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Saturation:
    version: str
    queue: str | None
    kv_cache: str | None


@cache
def _table() -> dict[str, Saturation]:
    data = yaml.safe_load(resources.files("llmctl.monitor").joinpath("data/engine_metrics.yaml").read_text())
    return {engine: Saturation(str(entry["version"]), entry.get("queue"), entry.get("kv_cache"))
            for engine, entry in data.items()}


def saturation(engine: str) -> Saturation | None:
    """None: the engine exports no metrics (llama-cpp-python's server)."""
    return _table().get(engine)
