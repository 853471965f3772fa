"""The rules of policy versions without a server (P10.1): which version is current, what
a publication may say, and auth's fallback when privacy cannot be asked (P10.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from services.auth.policy_version import PublishedPolicy
from services.privacy.policy import PolicyVersion, check_publish, current_of, upcoming_of
from services.runtime.errors import InvalidArgument
from tests.support import free_port

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def version(name: str, days: float) -> PolicyVersion:
    return PolicyVersion(name, NOW + timedelta(days=days), "", NOW - timedelta(days=60), "operator")


def test_current_is_the_latest_in_effect_and_upcoming_the_next_P10_1() -> None:
    versions = [version("a", -30), version("c", 10), version("b", -1), version("d", 20)]
    assert current_of(versions, NOW).version == "b"
    assert upcoming_of(versions, NOW).version == "c"
    assert current_of(versions, NOW + timedelta(days=10)).version == "c"
    assert current_of([version("later", 1)], NOW) is None and upcoming_of([version("a", -1)], NOW) is None


@pytest.mark.parametrize(
    ("name", "effective", "summary", "field"),
    [
        ("", NOW, "", "version"),
        ("-leading-dash", NOW, "", "version"),
        ("x" * 65, NOW, "", "version"),
        ("ok", None, "", "effective_at"),
        ("ok", NOW - timedelta(minutes=5), "", "effective_at"),
        ("ok", NOW + timedelta(days=1), "", "effective_at"),  # not after the latest (in 2 days)
        ("ok", NOW + timedelta(days=3), "s" * 2001, "summary"),
    ],
)
def test_a_publication_is_checked_field_by_field_P10_1(name, effective, summary, field) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_publish(name, effective, summary, NOW, version("latest", 2))
    assert field in refused.value.field_violations


def test_a_valid_publication_passes_with_clock_skew_tolerated_P10_1() -> None:
    assert check_publish("2026-12-02", NOW - timedelta(seconds=30), "", NOW, None) == NOW - timedelta(seconds=30)
    assert check_publish("v3", NOW + timedelta(days=3), "why", NOW, version("v2", 2)) == NOW + timedelta(days=3)


async def test_auth_falls_back_to_its_setting_when_privacy_is_unreachable_P10_2() -> None:
    """A privacy outage must not stop sign-ups: the configured version stands in."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:  # nobody listens
        current = PublishedPolicy(channel, "2026-11-01", cache_s=30)
        assert await current() == "2026-11-01"
        assert await current() == "2026-11-01"  # cached: no second failing call waits
