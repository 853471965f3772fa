"""Unit tests of auth's rules and Redis adapters, without a server: validation, hashing,
key material, paging, the key cache's revocation guarantees, rate limits, throttling."""

from __future__ import annotations

import asyncio

import pytest

from services.auth.domain import Hmac, Origin, Passwords, check_email, check_password, normalize_email
from services.auth.keycache import REVOKED, UNKNOWN, KeyCache, KeyEntry
from services.auth.keys import KEY_RE, KeySpec, check_key_format, decode_page, encode_page_token
from services.auth.limits import RateLimiter, SignInThrottle
from services.runtime.errors import InvalidArgument, Violations

ENTRY = KeyEntry("acct_1", "key_1", 1, ("m",), 0, 10, 100, 0.0, False)


def violations(check, *args) -> dict[str, str]:
    v = Violations()
    check(v, *args)
    return v.items


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a@example.com", True),
        ("first.last+tag@sub.example.co", True),
        ("", False),
        ("no-at-sign", False),
        ("two@@example.com", False),
        ("spaces in@example.com", False),
        ("a@nodot", False),
        ("a@" + "x" * 250 + ".com", False),
    ],
)
def test_email_validation(email: str, ok: bool) -> None:
    assert (violations(check_email, "email", email) == {}) is ok


def test_email_is_normalized() -> None:
    assert normalize_email("  Me@Example.COM ") == "me@example.com"


@pytest.mark.parametrize(("password", "ok"), [("", False), ("x" * 11, False), ("x" * 12, True), ("x" * 257, False)])
def test_password_length_rules(password: str, ok: bool) -> None:
    assert (violations(check_password, "password", password) == {}) is ok


def test_origin_takes_the_first_forwarded_hop_and_drops_garbage() -> None:
    assert Origin.of("203.0.113.1, 10.0.0.1", "127.0.0.1", "ua").ip == "203.0.113.1"
    assert Origin.of("", "::1", "ua").ip == "::1"
    assert Origin.of("not-an-ip", "", "ua").ip == ""
    assert len(Origin.of("", "", "u" * 2000).user_agent) == 512


async def test_passwords_are_argon2id_and_verify_p6_2() -> None:
    passwords = Passwords(1, 1024, 1)
    stored = await passwords.hash("a long password")
    assert stored.startswith("$argon2id$") and "a long password" not in stored
    assert await passwords.verify(stored, "a long password")
    assert not await passwords.verify(stored, "another password")
    assert not await passwords.verify("", "a long password")  # unknown account: dummy hash, refused
    assert not await passwords.verify("not a hash", "a long password")


def test_hmac_is_keyed() -> None:
    assert Hmac("one")("gm-x") != Hmac("two")("gm-x")
    assert len(Hmac("one")("gm-x")) == 64


def test_key_format() -> None:
    assert KEY_RE.fullmatch("gm-" + "A" * 43)
    assert violations(check_key_format, "api_key", "gm-" + "A" * 42)
    assert violations(check_key_format, "api_key", "sk-" + "A" * 43)
    assert violations(check_key_format, "api_key", "") == {"api_key": "is required"}


def test_key_spec_rules() -> None:
    v = Violations()
    KeySpec(name="", allowed_models=["", "x"], spend_cap_micros=-1, rpm=-1, tpm=-1).check(v)
    assert set(v.items) == {
        "name",
        "allowed_models",
        "spend_cap_micros",
        "limits.requests_per_minute",
        "limits.tokens_per_minute",
    }


def test_page_tokens_round_trip_and_garbage_is_refused() -> None:
    assert decode_page(0, "") == (0, 50)
    assert decode_page(5000, encode_page_token(20)) == (20, 1000)
    with pytest.raises(InvalidArgument):
        decode_page(10, "%%%")
    with pytest.raises(InvalidArgument):
        decode_page(-1, "")


async def test_cache_fills_local_and_redis_and_serves_without_loading(redis) -> None:
    cache = KeyCache(redis, local_ttl_s=60, redis_ttl_s=60)
    loads = []

    async def load(key_hash: str):
        loads.append(key_hash)
        return ENTRY

    assert await cache.lookup("h1", load) == ENTRY
    assert await cache.lookup("h1", load) == ENTRY
    assert cache.local("h1") == ENTRY
    other = KeyCache(redis, local_ttl_s=60, redis_ttl_s=60)  # another instance: reads Redis
    assert await other.lookup("h1", load) == ENTRY
    assert loads == ["h1"]


async def test_revocation_tombstone_cannot_be_overwritten_by_a_slow_reader(redis) -> None:
    """A reader that loaded the key before the revocation must not resurrect it."""
    cache = KeyCache(redis, local_ttl_s=60, redis_ttl_s=60)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_load(_key_hash: str):
        started.set()
        await release.wait()
        return ENTRY  # what the database said before the revocation

    reader = asyncio.create_task(cache.lookup("h2", slow_load))
    await started.wait()
    await cache.revoke(["h2"])
    release.set()
    await reader
    assert cache.local("h2") is None  # the racing read was not cached locally
    fresh = KeyCache(redis, local_ttl_s=60, redis_ttl_s=60)

    async def never(_key_hash: str):
        raise AssertionError("must be served from the tombstone")

    assert await fresh.lookup("h2", never) == REVOKED


async def test_listener_drops_entries_revoked_elsewhere(redis) -> None:
    listener = KeyCache(redis, local_ttl_s=60, redis_ttl_s=60)
    task = asyncio.create_task(listener.listen())
    await asyncio.wait_for(listener.listening.wait(), 5)

    async def load(_key_hash: str):
        return ENTRY

    await listener.lookup("h3", load)
    await KeyCache(redis, local_ttl_s=60, redis_ttl_s=60).revoke(["h3"])
    for _ in range(100):
        if listener.local("h3") is None:
            break
        await asyncio.sleep(0.01)
    assert listener.local("h3") is None
    task.cancel()


async def test_unknown_keys_are_cached_briefly(redis) -> None:
    cache = KeyCache(redis, local_ttl_s=0, redis_ttl_s=300)

    async def load(_key_hash: str):
        return UNKNOWN

    await cache.lookup("h4", load)
    assert 0 < await redis.ttl("gm:auth:key:h4") <= 30


async def test_rate_limiter_counts_requests_and_tokens(redis) -> None:
    limiter = RateLimiter(redis)
    seconds, _ = await redis.time()
    if seconds % 60 > 55:
        await asyncio.sleep(61 - seconds % 60)
    first = await limiter.consume("k", rpm=2, tpm=100, tokens=60)
    assert (first.allowed, first.remaining_requests, first.remaining_tokens) == (True, 1, 40)
    assert not (await limiter.consume("k", rpm=2, tpm=100, tokens=50)).allowed  # tokens over
    await limiter.adjust_tokens("k", -30)
    assert (await limiter.consume("k", rpm=2, tpm=100, tokens=50)).allowed
    over = await limiter.consume("k", rpm=2, tpm=100, tokens=0)
    assert not over.allowed and 1 <= over.retry_after_s <= 60


async def test_sign_in_throttle_stores_no_email_or_ip(redis) -> None:
    throttle = SignInThrottle(redis, "secret", max_account=2, max_ip=10, window_s=60)
    assert await throttle.retry_after("a@example.com", "203.0.113.1") is None
    await throttle.failed("a@example.com", "203.0.113.1")
    await throttle.failed("a@example.com", "203.0.113.1")
    assert 1 <= await throttle.retry_after("a@example.com", "203.0.113.1") <= 60
    names = b" ".join(await redis.keys("gm:auth:signin:*"))
    assert b"example.com" not in names and b"203.0.113.1" not in names
    await throttle.succeeded("a@example.com")
    assert await throttle.retry_after("a@example.com", "203.0.113.1") is None
