"""Which provider serves a call: weighted choice, retries with backoff, fallback.

For each call the providers of the model are put in a weighted random order (a provider
with twice the weight comes first twice as often); providers whose circuit is open are
skipped. Each is tried up to `1 + max_retries` times with exponential backoff before the
next one is. An attempt only counts as a success once `prime` has read what must be read
before the first byte goes to the client (the whole JSON body, or the first stream
event), so a failure up to that point is retried or falls back; after it, never.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import aiohttp

from services.runtime import metrics
from services.runtime.errors import BadGateway, DeadlineExceeded, DomainError, InvalidArgument, NotFound, Unavailable

from .checks import key_missing
from .settings import ProxySettings
from .upstream import Admission, CircuitBreaker, Provider, UpstreamFailure

T = TypeVar("T")
Prime = Callable[[aiohttp.ClientResponse], Awaitable[T]]


@dataclass
class Attempt(Generic[T]):
    """A call the upstream accepted: who served it, the open response, what prime read."""

    provider: Provider
    response: aiohttp.ClientResponse
    primed: T


@dataclass(frozen=True)
class Route:
    """A public model name resolved: the name sent upstream and who serves it."""

    public_model: str
    model: str
    providers: tuple[Provider, ...]


class Router:
    """Resolves models and runs the attempts of a call."""

    def __init__(self, providers: list[Provider], aliases: dict[str, str], backoff_s: float) -> None:
        self.providers = providers
        self.aliases = dict(aliases)
        self.backoff_s = backoff_s
        # Providers whose api_key_env is unset would answer every call with 401: they are
        # routed to never (the start-up checks named them), only remembered for the error.
        self._by_model: dict[str, list[Provider]] = {}
        self._keyless: dict[str, list[Provider]] = {}
        for provider in providers:
            routes = self._keyless if key_missing(provider.config, os.environ) else self._by_model
            for model in provider.config.models:
                routes.setdefault(model, []).append(provider)

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> Router:
        providers = [
            Provider(config, CircuitBreaker(settings.proxy_breaker_failures, settings.proxy_breaker_reset_s))
            for config in settings.providers
        ]
        return cls(providers, settings.model_aliases, settings.proxy_retry_backoff_s)

    def models(self) -> dict[str, str]:
        """Every public model name (aliases included) a provider with its API key in place
        serves -> the first such provider."""
        found = {model: providers[0].name for model, providers in self._by_model.items()}
        for alias, target in self.aliases.items():
            if target in self._by_model:
                found[alias] = self._by_model[target][0].name
        return found

    def resolve(self, public_model: str) -> Route:
        model = self.aliases.get(public_model, public_model)
        providers = self._by_model.get(model)
        if not providers and model in self._keyless:  # the operator was told by setting at start
            raise Unavailable(
                f"The model '{public_model}' is not available: its provider's API key is not configured",
                reason="provider_key_missing",
            )
        if not providers:
            raise NotFound(f"The model '{public_model}' does not exist", openai_code="model_not_found", param="model")
        return Route(public_model, model, tuple(providers))

    @staticmethod
    def order(providers: tuple[Provider, ...]) -> list[Provider]:
        """A weighted random order (Efraimidis-Spirakis keys)."""
        if len(providers) == 1:
            return list(providers)
        return sorted(providers, key=lambda p: random.random() ** (1.0 / p.weight), reverse=True)

    async def call(self, route: Route, path: str, body: bytes, prime: Prime[T]) -> Attempt[T]:
        """Run attempts until one is accepted and primed; a DomainError when none is."""
        failures: list[UpstreamFailure] = []
        for provider in self.order(route.providers):
            admission = provider.breaker.admit()
            if admission is None:
                continue
            try:
                return await self._attempts(provider, admission, route.model, path, body, prime, failures)
            except _NextProvider:
                continue
            except BaseException:
                admission.abandoned()  # cancelled, or failed in a way that says nothing of the provider
                raise
        raise exhausted(failures)

    async def _attempts(
        self,
        provider: Provider,
        admission: Admission,
        model: str,
        path: str,
        body: bytes,
        prime: Prime[T],
        failures: list[UpstreamFailure],
    ) -> Attempt[T]:
        """Up to `1 + max_retries` attempts at one provider; every outcome goes to its breaker."""
        for attempt in range(provider.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, failures[-1]))
            try:
                result = await self._attempt(provider, model, path, body, prime)
            except UpstreamFailure as failure:
                metrics.upstream_failed(provider.name, model, failure.kind, failure.status)
                failures.append(failure)
                admission.failed(failure)
                if not failure.retryable:
                    raise client_error(failure) from None
                if provider.breaker.state != "closed":
                    break
                continue
            admission.answered()
            return result
        raise _NextProvider

    async def _attempt(self, provider: Provider, model: str, path: str, body: bytes, prime: Prime[T]) -> Attempt[T]:
        """One attempt, counted and timed: until `prime` has read the whole answer, or the
        first event of a stream (its time to first token)."""
        metrics.upstream_attempt(provider.name, model)
        start = time.perf_counter()
        response = await provider.post(path, body)
        try:
            primed = await prime(response)
        except TimeoutError:
            response.close()
            raise UpstreamFailure("timeout") from None
        except (aiohttp.ClientError, ValueError):
            response.close()
            raise UpstreamFailure("protocol") from None
        except BaseException:
            response.close()
            raise
        streamed = response.content_type == "text/event-stream"
        metrics.upstream_answered(provider.name, model, time.perf_counter() - start, streamed)
        return Attempt(provider, response, primed)

    def _delay(self, attempt: int, failure: UpstreamFailure) -> float:
        delay = self.backoff_s * (2 ** (attempt - 1))
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, 2.0))
        return delay * (0.5 + random.random() / 2)

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()


class _NextProvider(Exception):
    """Every attempt at one provider failed (or its circuit opened): try the next one."""


def client_error(failure: UpstreamFailure) -> DomainError:
    """An upstream 4xx that is the request's fault, passed on with the upstream's message."""
    message = failure.message or f"the upstream provider rejected the request (HTTP {failure.status})"
    if failure.status == 404:
        return NotFound(message, openai_code="model_not_found")
    if failure.status in (400, 413, 422):
        return InvalidArgument(message)
    return BadGateway(f"the upstream provider refused the call (HTTP {failure.status})", reason="upstream_error")


def exhausted(failures: list[UpstreamFailure]) -> DomainError:
    """The error after every attempt failed: 504 if all timed out, 503 if none could take it, else 502."""
    if not failures:
        return Unavailable("no upstream provider is available for this model (circuit open)", reason="upstream_down")
    kinds = {failure.kind for failure in failures}
    if kinds == {"timeout"}:
        return DeadlineExceeded("the upstream provider timed out", reason="upstream_timeout")
    if kinds == {"connect"}:
        return Unavailable("the upstream provider cannot be reached", reason="upstream_down")
    if all(failure.status == 429 for failure in failures):
        return Unavailable(
            "the upstream providers are overloaded; retry later", reason="upstream_busy", retry_after_s=1
        )
    return BadGateway("the upstream provider failed", reason="upstream_error")
