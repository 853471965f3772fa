"""Server-sent events from an upstream chat stream: split, inspect, filter, without copying.

The proxy forwards upstream events as they arrive (whole events, several per read when
they come together) and only looks inside the few that matter: the usage chunk (asked for
with `stream_options.include_usage`, hidden from a client that did not ask for it) and
`[DONE]`. Everything else passes as raw bytes. The events are kept in memory for the
length of the call only, so that a stream that ends without usage (cut, client gone,
provider that reports none) can be counted locally.

The format is read as the HTML standard's event-stream parsing rules say ("Interpreting an
event stream"): lines end in CR LF, LF or a bare CR (all forwarded as LF, a CR LF split
across two reads included); a blank line ends an event; a line starting with `:` is a
comment; `field:value` drops one space after the colon if there is one (`data:[DONE]` and
`data: [DONE]` are the same event), and a line without a colon is a field with an empty
value; an event's data is its `data` lines joined by LF; a leading byte order mark is
ignored. Written here rather than taken from an SSE client library (httpx-sse,
sseclient): those parse a stream they own into decoded event objects, while the proxy must
forward the upstream's bytes untouched as they arrive and look inside only a few events.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

USAGE = re.compile(rb'"usage"\s*:\s*\{')
DONE = b"[DONE]"
BOM = b"\xef\xbb\xbf"


@dataclass
class StreamState:
    """What the proxy learned from an upstream stream so far."""

    client_wants_usage: bool
    usage: dict[str, Any] | None = None
    done: bool = False
    events: list[bytes] = field(default_factory=list)
    _pending: bytes = b""
    _started: bool = False
    _after_cr: bool = False  # the last read ended in CR: an LF that opens the next is its pair

    def feed(self, data: bytes) -> bytes:
        """Take raw upstream bytes; return the complete events to forward to the client."""
        data = self._normalize(data)
        buffer = self._pending + data if self._pending else data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._pending = buffer
            return b""
        self._pending = buffer[end + 2 :]
        complete = buffer[: end + 2]
        if not USAGE.search(complete) and DONE not in complete:
            self.events.append(complete)
            return complete
        return b"".join(self._inspect(event + b"\n\n") for event in complete.split(b"\n\n")[:-1])

    def _normalize(self, data: bytes) -> bytes:
        """LF line ends only, a leading byte order mark dropped."""
        if not data:
            return data
        if not self._started:
            self._started = True
            data = data.removeprefix(BOM)
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        self._after_cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _inspect(self, event: bytes) -> bytes:
        data = event_data(event)
        if data == DONE:
            self.done = True
            return event
        self.events.append(event)
        if data is None or not USAGE.search(data):
            return event
        chunk = _json(data)
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
            if not self.client_wants_usage and not chunk.get("choices"):
                return b""  # the usage chunk the proxy asked for on the client's behalf
        return event

    def output_text(self) -> str:
        """The text the upstream produced so far (content, refusals, tool-call arguments)."""
        parts: list[str] = []
        for event in (single for blob in self.events for single in blob.split(b"\n\n") if single):
            data = event_data(event)
            chunk = _json(data) if data is not None else None
            for choice in chunk.get("choices") or () if isinstance(chunk, dict) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    parts.extend(_delta_texts(delta))
        return "".join(parts)


def event_data(event: bytes) -> bytes | None:
    """The data of one event (LF line ends, no blank line inside): its `data` fields'
    values joined by LF, or None when it has no data field (nothing to dispatch)."""
    values: list[bytes] = []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # the blank line that ends the event, or a comment
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue
        values.append(value[1:] if colon and value.startswith(b" ") else value)
    return b"\n".join(values) if values else None


def _delta_texts(delta: dict[str, Any]) -> list[str]:
    texts = [delta[key] for key in ("content", "refusal", "reasoning_content") if isinstance(delta.get(key), str)]
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(value for value in (function.get("name"), function.get("arguments")) if isinstance(value, str))
    return texts


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def error_event(body: dict[str, Any]) -> bytes:
    """An error sent inside a stream that has already begun (the SDKs raise APIError on it)."""
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
