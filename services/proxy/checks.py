"""Start-up checks of the routing configuration: mistakes reported at start, by setting.

Each of these would otherwise surface later, on a user's call: a provider whose
`api_key_env` names an unset or empty variable answers every call with HTTP 401 (a 502
"upstream refused the call"); a served model without a price is refused with 503
`model_not_priced` while `/v1/models` listed it; a price for a model no provider serves,
or an alias to an unknown model, is a typo that silently does nothing. Each is a warning
naming the setting; where nothing at all could be called (providers configured, none of
their models servable) the result is fatal and the start is refused. The proxy runs the
checks that need no price list when it starts and the price checks once it has fetched
the prices; `gatemesh up` runs all of them before it starts anything. Pure functions: no
I/O beyond the environment mapping they are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .settings import ProviderConfig


@dataclass(frozen=True)
class Finding:
    """One configuration mistake: the setting it is in, and what it will cause."""

    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


def key_missing(provider: ProviderConfig, environ: Mapping[str, str]) -> bool:
    """Whether the provider names a key variable that is unset or empty."""
    return bool(provider.api_key_env) and not environ.get(provider.api_key_env, "").strip()


def servable_models(providers: Iterable[ProviderConfig], environ: Mapping[str, str]) -> set[str]:
    """The models at least one provider with its key in place serves."""
    return {model for p in providers if not key_missing(p, environ) for model in p.models}


def provider_findings(providers: list[ProviderConfig], environ: Mapping[str, str]) -> list[Finding]:
    return [
        Finding(
            f"providers[{p.name}].api_key_env",
            f"the environment variable {p.api_key_env} is unset or empty, so {p.name} would refuse every call"
            f" (HTTP 401); set it, or remove api_key_env if {p.name} needs no key",
        )
        for p in providers
        if key_missing(p, environ)
    ]


def alias_findings(aliases: Mapping[str, str], served: set[str]) -> list[Finding]:
    return [
        Finding(f"model_aliases.{alias}", f"points to '{target}', which no provider in `providers` serves")
        for alias, target in sorted(aliases.items())
        if target not in served
    ]


def price_findings(providers: list[ProviderConfig], priced: set[str]) -> list[Finding]:
    """Served models without a price, and prices for models nobody serves."""
    served: dict[str, str] = {}
    for p in providers:
        for model in p.models:
            served.setdefault(model, p.name)
    unpriced = [
        Finding(
            f"providers[{provider}].models",
            f"'{model}' has no price in `prices`, so calls to it would be refused (model_not_priced)",
        )
        for model, provider in sorted(served.items())
        if model not in priced
    ]
    unserved = [
        Finding(f"prices.{model}", f"'{model}' is priced but no provider in `providers` serves it")
        for model in sorted(priced - served.keys())
    ]
    return unpriced + unserved


def callable_models(
    providers: list[ProviderConfig], aliases: Mapping[str, str], environ: Mapping[str, str], priced: set[str] | None
) -> set[str]:
    """Public model names (aliases included) a call could succeed for; with `priced` None
    (the prices are not known yet) a model counts as priced."""
    servable = servable_models(providers, environ)
    targets = {model: model for model in servable} | {a: t for a, t in aliases.items() if t in servable}
    return {name for name, model in targets.items() if priced is None or model in priced}


def check_routing(
    providers: list[ProviderConfig],
    aliases: Mapping[str, str],
    environ: Mapping[str, str],
    priced: set[str] | None = None,
) -> tuple[list[Finding], str | None]:
    """Every finding, and the reason to refuse the start (None: start, with warnings).

    A mesh configured with no providers at all still starts (accounts and billing work);
    one whose providers can serve nothing is refused."""
    served = {model for p in providers for model in p.models}
    findings = provider_findings(providers, environ) + alias_findings(aliases, served)
    if priced is not None:
        findings += price_findings(providers, priced)
    fatal = None
    if providers and not callable_models(providers, aliases, environ, priced):
        fatal = "no model could be called: every configured provider lacks its API key or every served model its price"
    return findings, fatal
