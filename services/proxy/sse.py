"""Server-sent events from an upstream chat stream: split, inspect, filter, without copying.

The proxy forwards upstream events as they arrive (whole events, several per read when
they come together; CRLF line ends become LF, so `\r\n\r\n` separates events too) and
only looks inside the few that matter: the usage chunk (asked for with
`stream_options.include_usage`, hidden from a client that did not ask for it) and
`[DONE]`. Everything else passes as raw bytes. The events are kept in memory for the
length of the call only, so that a stream that ends without usage (cut, client gone,
provider that reports none) can be counted locally.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

USAGE = re.compile(rb'"usage"\s*:\s*\{')
DONE = b"data: [DONE]"


@dataclass
class StreamState:
    """What the proxy learned from an upstream stream so far."""

    client_wants_usage: bool
    usage: dict[str, Any] | None = None
    done: bool = False
    events: list[bytes] = field(default_factory=list)
    _pending: bytes = b""

    def feed(self, data: bytes) -> bytes:
        """Take raw upstream bytes; return the complete events to forward to the client."""
        buffer = self._pending + data if self._pending else data
        if b"\r" in buffer:  # CRLF line ends (allowed by SSE) are forwarded as LF
            buffer = buffer.replace(b"\r\n", b"\n")
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

    def _inspect(self, event: bytes) -> bytes:
        if event.startswith(DONE):
            self.done = True
            return event
        self.events.append(event)
        if not USAGE.search(event):
            return event
        chunk = _data_json(event)
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
            if not self.client_wants_usage and not chunk.get("choices"):
                return b""  # the usage chunk the proxy asked for on the client's behalf
        return event

    def output_text(self) -> str:
        """The text the upstream produced so far (content, refusals, tool-call arguments)."""
        parts: list[str] = []
        for event in (single for blob in self.events for single in blob.split(b"\n\n") if single):
            chunk = _data_json(event)
            for choice in chunk.get("choices") or () if isinstance(chunk, dict) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    parts.extend(_delta_texts(delta))
        return "".join(parts)


def _delta_texts(delta: dict[str, Any]) -> list[str]:
    texts = [delta[key] for key in ("content", "refusal", "reasoning_content") if isinstance(delta.get(key), str)]
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(value for value in (function.get("name"), function.get("arguments")) if isinstance(value, str))
    return texts


def _data_json(event: bytes) -> Any:
    """The JSON of an event's data lines, or None."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def error_event(body: dict[str, Any]) -> bytes:
    """An error sent inside a stream that has already begun (the SDKs raise APIError on it)."""
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
