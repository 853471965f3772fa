"""Routing against real HTTP upstreams (fake providers): retries, fallback, breaker, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from services.proxy.router import Router
from services.proxy.settings import ProviderConfig
from services.proxy.upstream import CircuitBreaker, Provider, read_json
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


def chat(mode: str = "", **extra: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "fake_mode": mode, **extra}
    return json.dumps(body).encode()


async def open_circuit(router: Router, breaker: CircuitBreaker) -> None:
    """Trip the breaker (threshold 1) with a 500, then wait until it lets a trial through."""
    with pytest.raises(BadGateway):
        await router.call(router.resolve("m"), "/chat/completions", chat("500"), read_json)
    assert breaker.state == "open"
    await asyncio.sleep(breaker.wait_s)
    assert breaker.state == "half_open"


async def test_a_trial_that_meets_a_429_reopens_the_circuit_with_backoff_then_recovers(
    upstreams: Callable[[str], str],
) -> None:
    flaky = provider("flaky", upstreams(""), threshold=1, max_retries=0)
    flaky.breaker.reset_s = 0.05
    router = Router([flaky], {}, 0.0)
    try:
        await open_circuit(router, flaky.breaker)
        with pytest.raises(Unavailable):  # the trial is rate limited: the provider is not back yet
            await router.call(router.resolve("m"), "/chat/completions", chat("429"), read_json)
        assert flaky.breaker.state == "open"
        assert flaky.breaker.wait_s == pytest.approx(0.1)  # the wait doubled
        await asyncio.sleep(flaky.breaker.wait_s)
        attempt = await router.call(router.resolve("m"), "/chat/completions", chat(), read_json)
        attempt.response.close()
        assert (flaky.breaker.state, flaky.breaker.wait_s) == ("closed", 0.05)
    finally:
        await router.close()


async def test_a_trial_rejected_as_the_clients_fault_closes_the_circuit(upstreams: Callable[[str], str]) -> None:
    flaky = provider("flaky", upstreams(""), threshold=1, max_retries=0)
    flaky.breaker.reset_s = 0.05
    router = Router([flaky], {}, 0.0)
    try:
        await open_circuit(router, flaky.breaker)
        with pytest.raises(InvalidArgument):  # the provider answered 400: it is healthy again
            await router.call(router.resolve("m"), "/chat/completions", b"{not json", read_json)
        assert flaky.breaker.state == "closed"
    finally:
        await router.close()


async def test_a_cancelled_trial_frees_the_slot_for_the_next_call(upstreams: Callable[[str], str]) -> None:
    flaky = provider("flaky", upstreams(""), threshold=1, max_retries=0)
    flaky.breaker.reset_s = 0.05
    router = Router([flaky], {}, 0.0)
    try:
        await open_circuit(router, flaky.breaker)
        slow = chat("slow", fake_delay_ms=2000)
        trial = asyncio.create_task(router.call(router.resolve("m"), "/chat/completions", slow, read_json))
        await asyncio.sleep(0.2)
        with pytest.raises(Unavailable):  # one trial at a time
            await router.call(router.resolve("m"), "/chat/completions", chat(), read_json)
        trial.cancel()  # the client left during the trial
        with pytest.raises(asyncio.CancelledError):
            await trial
        attempt = await router.call(router.resolve("m"), "/chat/completions", chat(), read_json)
        attempt.response.close()
        assert flaky.breaker.state == "closed"
    finally:
        await router.close()


async def test_a_provider_without_its_key_is_never_called(upstreams: Callable[[str], str], monkeypatch) -> None:
    """Its every answer would be a 401 (a 502 to the client); the start-up checks named it."""
    monkeypatch.delenv("GM_TEST_UNSET_PROVIDER_KEY", raising=False)
    good = upstreams("")
    keyless = provider("keyless", good, api_key_env="GM_TEST_UNSET_PROVIDER_KEY", weight=1e6)
    router = Router([keyless, provider("keyed", good, weight=1e-6)], {"a": "m"}, 0.0)
    only_keyless = Router([provider("keyless", good, api_key_env="GM_TEST_UNSET_PROVIDER_KEY")], {}, 0.0)
    try:
        assert [p.name for p in router.resolve("m").providers] == ["keyed"]
        assert router.models() == {"m": "keyed", "a": "keyed"}
        with pytest.raises(Unavailable) as refused:
            only_keyless.resolve("m")
        assert "API key is not configured" in str(refused.value) and "GM_TEST" not in str(refused.value)
        assert only_keyless.models() == {}
    finally:
        await router.close()
        await only_keyless.close()
