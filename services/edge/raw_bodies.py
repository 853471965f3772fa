"""The documented schemas of the raw-body methods: the OpenAI-compatible API and the card
processor's webhook.

`/v1/chat/completions`, `/v1/embeddings` and `/v1/models` travel as `google.api.HttpBody`,
so the descriptor set says nothing about their fields. The proxy checks only what it must
route and meter (`model`, `messages`, `input`, `stream`, `max_tokens`,
`max_completion_tokens`: see `services/proxy/bodies.py`) and passes every other field to
the upstream unchanged, which judges it. These schemas name the fields OpenAI's API
defines, so that generated clients and readers see the familiar shape; they constrain
exactly what the proxy checks and describe the rest (`additionalProperties` stays open:
fields added by OpenAI or a provider still reach the upstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}
MESSAGE = {
    "type": "object",
    "description": "One message of the conversation, as OpenAI defines it; passed to the upstream unchanged.",
    "properties": {
        "role": {"type": "string", "description": "system, developer, user, assistant or tool"},
        "content": {"description": "Text, or an array of content parts (text, image_url, ...)."},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
    "additionalProperties": True,
}


def _passed_on(description: str) -> dict[str, Any]:
    """A field the proxy does not check: documented, left to the upstream to judge."""
    return {"description": f"{description} Passed to the upstream unchanged."}


CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's chat completion request. Fields not listed reach the upstream too.",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "A model listed by GET /v1/models."},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "stream": {
            "type": "boolean",
            "nullable": True,
            "description": "Server-sent events; the proxy asks the upstream for usage on the stream.",
        },
        "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "stream_options": _passed_on("{include_usage: boolean}."),
        "temperature": _passed_on("Sampling temperature, 0 to 2."),
        "top_p": _passed_on("Nucleus sampling, 0 to 1."),
        "n": _passed_on("How many choices to generate."),
        "stop": _passed_on("Up to 4 sequences where generation stops (string or array)."),
        "presence_penalty": _passed_on("-2 to 2."),
        "frequency_penalty": _passed_on("-2 to 2."),
        "logit_bias": _passed_on("Token id to bias, -100 to 100."),
        "logprobs": _passed_on("Return log probabilities (boolean)."),
        "top_logprobs": _passed_on("0 to 20."),
        "response_format": _passed_on('{"type": "text" | "json_object" | "json_schema", ...}.'),
        "seed": _passed_on("Best-effort determinism (integer)."),
        "tools": _passed_on("Functions the model may call (array)."),
        "tool_choice": _passed_on('"none", "auto", "required" or a named tool.'),
        "parallel_tool_calls": _passed_on("Boolean."),
        "user": _passed_on("An end-user identifier."),
    },
    "additionalProperties": True,
}
CHAT_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's chat completion object, as the upstream returned it.",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "example": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": MESSAGE,
                    "finish_reason": {"type": "string", "nullable": True},
                },
            },
        },
        "usage": USAGE,
    },
}
EMBEDDINGS_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's embeddings request. Fields not listed reach the upstream too.",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "An embedding model listed by GET /v1/models."},
        "input": {
            "description": "Text or tokens to embed: a string, an array of strings, an array of token ids, "
            "or an array of token-id arrays; not empty.",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                TOKEN_IDS,
                {"type": "array", "minItems": 1, "items": TOKEN_IDS},
            ],
        },
        "encoding_format": _passed_on('"float" or "base64".'),
        "dimensions": _passed_on("Output dimensions, for models that support it."),
        "user": _passed_on("An end-user identifier."),
    },
    "additionalProperties": True,
}


def _list_of(kind: str, item_properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """OpenAI's `{"object": "list", "data": [...]}` envelope around items of one kind."""
    item = {"type": "object", "properties": {"object": {"type": "string", "example": kind}, **item_properties}}
    properties = {"object": {"type": "string", "example": "list"}, "data": {"type": "array", "items": item}}
    return {"type": "object", "properties": {**properties, **extra}}


EMBEDDINGS_RESPONSE = _list_of(
    "embedding",
    {
        "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
    },
    model={"type": "string"},
    usage=USAGE,
)
MODELS_RESPONSE = _list_of(
    "model", {"id": {"type": "string"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}
)

STRIPE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "A Stripe event, verified against the Stripe-Signature header before anything is read.",
    "additionalProperties": True,
}
WEBHOOK_REPLY: dict[str, Any] = {
    "type": "object",
    "properties": {"received": {"type": "boolean"}, "outcome": {"type": "string"}},
}
STRIPE_SIGNATURE = {
    "name": "Stripe-Signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "The card processor's signature of the body (400 when missing, refused when wrong).",
}


@dataclass(frozen=True)
class RawBody:
    """What a raw-body method takes and returns, for the document."""

    name: str
    response: dict[str, Any]
    request: dict[str, Any] | None = None
    headers: tuple[dict[str, Any], ...] = field(default_factory=tuple)


RAW_BODIES: dict[str, RawBody] = {
    "gatemesh.proxy.v1.ProxyService.ChatCompletions": RawBody("ChatCompletion", CHAT_RESPONSE, CHAT_REQUEST),
    "gatemesh.proxy.v1.ProxyService.Embeddings": RawBody("Embeddings", EMBEDDINGS_RESPONSE, EMBEDDINGS_REQUEST),
    "gatemesh.proxy.v1.ProxyService.ListModels": RawBody("Models", MODELS_RESPONSE),
    "gatemesh.billing.v1.BillingService.HandleStripeWebhook": RawBody(
        "StripeWebhook", WEBHOOK_REPLY, STRIPE_EVENT, (STRIPE_SIGNATURE,)
    ),
}
