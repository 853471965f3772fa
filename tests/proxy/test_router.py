"""Routing against real HTTP upstreams (fake providers): retries, fallback, breaker, errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from services.proxy.domain import read_json
from services.proxy.router import Router
from services.proxy.settings import ProviderConfig
from services.proxy.upstream import CircuitBreaker, Provider
from services.runtime.errors import BadGateway, DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from tests.support import free_port

from .conftest import clear, received

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def provider(name: str, base_url: str, threshold: int = 5, **extra: object) -> Provider:
    config = ProviderConfig(name=name, base_url=base_url, models=["m"], **extra)  # type: ignore[arg-type]
    return Provider(config, CircuitBreaker(threshold, reset_s=60))


async def test_fallback_after_5xx_reaches_the_healthy_provider(upstreams: Callable[[str], str]) -> None:
    bad, good = upstreams("500"), upstreams("")
    clear(bad)
    router = Router([provider("bad", bad, weight=1000), provider("good", good, weight=0.001)], {}, 0.0)
    try:
        attempt = await router.call(router.resolve("m"), "/chat/completions", BODY, read_json)
        assert attempt.provider.name == "good"
        assert attempt.primed[1]["usage"]["completion_tokens"] == 8
        assert len(received(bad)) == 2  # the first try and one retry (max_retries=1)
    finally:
        await router.close()


async def test_breaker_opens_and_skips_a_failing_provider(upstreams: Callable[[str], str]) -> None:
    bad = upstreams("500")
    failing = provider("bad", bad, threshold=2, max_retries=0)
    router = Router([failing], {}, 0.0)
    try:
        for _ in range(2):
            with pytest.raises(BadGateway):
                await router.call(router.resolve("m"), "/chat/completions", BODY, read_json)
        assert failing.breaker.state == "open"
        clear(bad)
        with pytest.raises(Unavailable):
            await router.call(router.resolve("m"), "/chat/completions", BODY, read_json)
        assert received(bad) == []  # not even tried
    finally:
        await router.close()


async def test_client_errors_are_not_retried(upstreams: Callable[[str], str]) -> None:
    good = upstreams("")
    router = Router([provider("good", good)], {}, 0.0)
    try:
        with pytest.raises(InvalidArgument):
            await router.call(router.resolve("m"), "/chat/completions", b"{not json", read_json)
        with pytest.raises(NotFound):
            router.resolve("unknown-model")
    finally:
        await router.close()


async def test_connection_refused_is_unavailable_and_timeouts_are_504(upstreams: Callable[[str], str]) -> None:
    down = Router([provider("down", f"http://127.0.0.1:{free_port()}/v1")], {}, 0.0)
    slow = Router([provider("slow", upstreams(""), timeout_s=0.2, max_retries=0)], {}, 0.0)
    body = json.dumps({"model": "m", "messages": [], "fake_mode": "slow", "fake_delay_ms": 1500}).encode()
    try:
        with pytest.raises(Unavailable):
            await down.call(down.resolve("m"), "/chat/completions", BODY, read_json)
        with pytest.raises(DeadlineExceeded):
            await slow.call(slow.resolve("m"), "/chat/completions", body, read_json)
    finally:
        await down.close()
        await slow.close()


async def test_upstream_429_everywhere_is_a_retryable_503(upstreams: Callable[[str], str]) -> None:
    router = Router([provider("busy", upstreams("429"), max_retries=0)], {}, 0.0)
    try:
        with pytest.raises(Unavailable) as caught:
            await router.call(router.resolve("m"), "/chat/completions", BODY, read_json)
        assert caught.value.retry_after_s == 1
    finally:
        await router.close()


def test_weighted_order_follows_weights() -> None:
    heavy = provider("heavy", "http://x", weight=9)
    light = provider("light", "http://y", weight=1)
    firsts = [Router.order((heavy, light))[0].name for _ in range(2000)]
    assert 0.85 < firsts.count("heavy") / 2000 < 0.95


def test_aliases_resolve_and_are_listed() -> None:
    router = Router([provider("p", "http://x")], {"fast": "m", "dangling": "nope"}, 0.0)
    route = router.resolve("fast")
    assert (route.public_model, route.model) == ("fast", "m")
    assert router.models() == {"m": "p", "fast": "p"}
