"""PromQL spelled one way for the rules, the dashboard and the monitor view."""
from __future__ import annotations

from prometheus_client.utils import floatToGoString


def select(metric: str, *matchers: str, **labels: str) -> str:
    """`metric{label="value",...}`: config names are letters, digits, '.', '_' and '-', so they need no escaping."""
    matching = [*(f'{label}="{value}"' for label, value in labels.items()), *matchers]
    return metric + "{" + ",".join(matching) + "}" if matching else metric


def duration(seconds: float) -> str:
    """Prometheus durations take no fractions: 5400 s is 90m, not 1.5h; the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(round(seconds * 1000))}ms"


def le(seconds: float) -> str:
    """The `le` label value the gateway's histograms give this boundary (prometheus_client's formatting)."""
    return floatToGoString(seconds)
