"""Local token counting with quicktok (quicktok-v1), whose vocabularies ship in the wheel.

Used twice: to size the credit hold and the rate-limit estimate before a call, and to
bill a call whose upstream reported no usage (or a stream that ended early). The
upstream's own usage report stays the source of truth whenever it exists. quicktok
bundles cl100k_base, o200k_base, Llama 3 and Qwen 3 vocabularies; models it does not
know are counted with `proxy_tokenizer` (default o200k_base). Nothing is downloaded.

Chat framing follows OpenAI's published rule of thumb: 3 tokens per message plus 3 to
prime the reply; tool definitions are counted as their JSON text.
"""

from __future__ import annotations

import json
from typing import Any

import quicktok

PER_MESSAGE = 3
REPLY_PRIMING = 3


class TokenCounter:
    """Counts tokens per model; encodings are loaded once and cached."""

    def __init__(self, default_encoding: str = "o200k_base") -> None:
        self._default = quicktok.get_encoding(default_encoding)
        self._by_model: dict[str, Any] = {}

    def encoding(self, model: str) -> Any:
        found = self._by_model.get(model)
        if found is None:
            try:
                found = quicktok.encoding_for_model(model)
            except (KeyError, ValueError):
                found = self._default
            self._by_model[model] = found
        return found

    def count(self, model: str, text: str) -> int:
        return self.encoding(model).count(text) if text else 0

    def prompt_tokens(self, model: str, body: dict[str, Any]) -> int:
        """The prompt tokens of a chat body: message texts plus framing and tools."""
        encoding = self.encoding(model)
        total = REPLY_PRIMING
        for message in body.get("messages") or ():
            total += PER_MESSAGE
            if isinstance(message, dict):
                total += sum(encoding.count(text) for text in message_texts(message))
        for key in ("tools", "functions", "response_format"):
            if body.get(key):
                total += encoding.count(json.dumps(body[key], separators=(",", ":")))
        return total

    def input_tokens(self, model: str, value: Any) -> int:
        """The tokens of an embeddings `input`: a string, a list of strings, or token ids."""
        items = value if isinstance(value, list) else [value]
        if items and all(isinstance(item, int) for item in items):
            return len(items)
        total = 0
        for item in items:
            if isinstance(item, str):
                total += self.count(model, item)
            elif isinstance(item, list):
                total += len(item)
        return total


def message_texts(message: dict[str, Any]) -> list[str]:
    """The texts of a chat message: content (string or text parts), name, tool-call arguments."""
    texts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        texts.extend(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    if isinstance(message.get("name"), str):
        texts.append(message["name"])
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(str(function.get(key) or "") for key in ("name", "arguments"))
    return texts
