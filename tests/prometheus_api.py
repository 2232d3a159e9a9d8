"""Reading a real Prometheus's HTTP API from tests, waiting (never asserting on the clock) for what it will see."""
from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

DEADLINE_S = 180  # generous: a busy machine is slow, never wrong


def api(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]


def eventually(check: Callable[[], Any], what: str) -> Any:
    """The first truthy result of `check`, polled until DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)
