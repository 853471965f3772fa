"""Local token counting with quicktok (quicktok-v1), whose vocabularies ship in the wheel.

Used twice: to size the credit hold and the rate-limit estimate before a call, and to
bill a call whose upstream reported no usage (or a stream that ended early). The
upstream's own usage report stays the source of truth whenever it exists. Nothing is
downloaded.

Which vocabulary a model uses is decided by our own table (`MODEL_ENCODINGS`), not by
quicktok's `encoding_for_model`: that one maps gpt-4.1, gpt-4.5, o4 and gpt-5 to cl100k
(or knows them not at all), and the counts would be wrong for exactly the models most
used. A model name matches an entry when it is the entry or continues it after `-` or `:`
(`gpt-4o-2024-08-06`, `gpt-4.1-mini`, `o3-pro`); the longest entry wins, a provider
prefix (`openai/`) and a fine-tune prefix (`ft:`) are ignored, and a model no entry
matches is counted with `proxy_tokenizer` (default o200k_base, the newest OpenAI
vocabulary). `tests/proxy/test_tokens.py` checks quicktok's cl100k and o200k vocabularies
against the hashes OpenAI published for them, and cl100k against tiktoken's own.

Chat framing follows OpenAI's published rule of thumb: 3 tokens per message plus 3 to
prime the reply; tool definitions are counted as their JSON text.
"""

from __future__ import annotations

import json
from typing import Any

import quicktok

O200K, CL100K = "o200k_base", "cl100k_base"
MODEL_ENCODINGS: dict[str, str] = {
    # o200k: GPT-4o and everything after it
    "gpt-4o": O200K,
    "chatgpt-4o": O200K,
    "gpt-4.1": O200K,
    "gpt-4.5": O200K,
    "gpt-5": O200K,
    "o1": O200K,
    "o3": O200K,
    "o4": O200K,
    "codex-mini": O200K,
    "computer-use-preview": O200K,
    "omni-moderation": O200K,
    "gpt-oss": "o200k_harmony",
    # cl100k: GPT-4 (before 4o), GPT-3.5 and the current embedding models
    "gpt-4": CL100K,
    "gpt-3.5-turbo": CL100K,
    "gpt-35-turbo": CL100K,  # Azure's spelling
    "text-embedding-ada-002": CL100K,
    "text-embedding-3-small": CL100K,
    "text-embedding-3-large": CL100K,
    "davinci-002": CL100K,
    "babbage-002": CL100K,
    # open-weight families quicktok bundles
    "llama-3": "llama3",
    "llama-3.1": "llama3",
    "llama-3.2": "llama3",
    "llama-3.3": "llama3",
    "llama3": "llama3",
    "meta-llama-3": "llama3",
    "qwen2": "qwen3",
    "qwen2.5": "qwen3",
    "qwen3": "qwen3",
}
_BY_LENGTH = sorted(MODEL_ENCODINGS, key=len, reverse=True)


def encoding_name(model: str) -> str | None:
    """The vocabulary of `model` by our table, or None when no entry matches."""
    name = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    for entry in _BY_LENGTH:
        if name == entry or (name.startswith(entry) and name[len(entry)] in "-:"):
            return MODEL_ENCODINGS[entry]
    return None


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
            name = encoding_name(model)
            found = quicktok.get_encoding(name) if name else self._default
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
