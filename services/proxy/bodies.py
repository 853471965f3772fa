"""The OpenAI request and usage bodies as the gateway reads and shapes them.

Bodies stay raw bytes except where a field must be read (parsed once) or the request
changed (alias, stream usage option). Errors name the field, never quote the body.
"""

from __future__ import annotations

import json
from typing import Any

from services.runtime.errors import InvalidArgument, Unauthenticated, Violations

from .router import Route

USAGE_OPTION = b'"stream_options":{"include_usage":true},'


def usage_tokens(usage: Any) -> tuple[int, int, bool] | None:
    """(input, output, estimated=False) from an OpenAI usage object, or None."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion, False


def require_key(api_key: str) -> None:
    if not api_key:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", openai_code="invalid_api_key")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not (never quoting it)."""
    try:
        body = json.loads(raw)
    except ValueError as error:
        where = f"line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise InvalidArgument(f"the request body is not valid JSON ({where})".replace(" ()", "")) from None
    except RecursionError:  # nesting past the parser's depth: a hostile body, not our fault
        raise InvalidArgument("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body


def embedding_input_ok(value: Any) -> bool:
    """OpenAI's embeddings input: text, texts, token ids or token-id arrays, none empty (the
    upstream would refuse anything else, after a hold was placed for it)."""

    def token_ids(items: Any) -> bool:
        return isinstance(items, list) and bool(items) and all(type(t) is int and t >= 0 for t in items)

    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    return all(isinstance(v, str) for v in value) or token_ids(value) or all(token_ids(v) for v in value)


def validate_chat(body: dict[str, Any]) -> tuple[str, bool]:
    """(model, stream) of a chat body; every problem reported at once."""
    violations = Violations()
    model = body.get("model")
    violations.check(isinstance(model, str) and bool(model), "model", "must be a non-empty string")
    messages = body.get("messages")
    violations.check(isinstance(messages, list) and bool(messages), "messages", "must be a non-empty array")
    if isinstance(messages, list):
        violations.check(all(isinstance(m, dict) for m in messages), "messages", "each message must be an object")
    stream = body.get("stream", False)
    violations.check(stream is None or isinstance(stream, bool), "stream", "must be a boolean")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
        violations.check(ok, key, "must be a positive integer")
    violations.raise_if_any()
    return str(model), bool(stream)


def upstream_chat_body(raw: bytes, body: dict[str, Any], route: Route, stream: bool) -> tuple[bytes, bool]:
    """The body for the upstream (the client's bytes unless the model or stream options
    must change) and whether the client itself asked for usage on its stream."""
    changed = route.model != route.public_model
    if changed:
        body["model"] = route.model
    wants_usage = False
    if stream:
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if not wants_usage:
            if "stream_options" not in body and not changed:
                start = raw.index(b"{") + 1
                return raw[:start] + USAGE_OPTION + raw[start:], False
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            changed = True
    return (json.dumps(body, separators=(",", ":")).encode() if changed else raw), wants_usage
