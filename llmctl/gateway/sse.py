"""Server-sent events read from an upstream as bytes: the `data` of each event, nothing decoded that need not be."""
from __future__ import annotations


class EventReader:
    """Feed raw bytes as they arrive; get back the data of each complete event (a blank line ends an event).
    Comments, `event:`, `id:` and `retry:` fields are dropped: OpenAI-style streams carry everything in `data`."""

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return events

    def close(self) -> list[bytes]:
        """What an upstream that ended without the final blank line still sent."""
        events = self.feed(b"\n\n") if self._tail or self._data else []
        self._tail = b""
        return events
