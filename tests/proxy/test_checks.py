"""The routing checks, as pure functions: each mistake is found and named by its setting,
and only a configuration that could serve nothing is fatal."""

from __future__ import annotations

from services.proxy.checks import callable_models, check_routing
from services.proxy.settings import ProviderConfig


def provider(name: str, models: list[str], key_env: str = "") -> ProviderConfig:
    return ProviderConfig(name=name, base_url="http://127.0.0.1:9/v1", models=models, api_key_env=key_env)


def settings_of(findings) -> list[str]:
    return [finding.setting for finding in findings]


def test_a_clean_configuration_has_no_findings() -> None:
    findings, fatal = check_routing([provider("a", ["m"], "KEY")], {"alias": "m"}, {"KEY": "sk-1"}, {"m"})
    assert (findings, fatal) == ([], None)


def test_an_unset_or_empty_key_variable_is_named() -> None:
    providers = [provider("a", ["m"], "A_KEY"), provider("b", ["m"], "B_KEY"), provider("c", ["m"])]
    findings, fatal = check_routing(providers, {}, {"B_KEY": "  "})
    assert settings_of(findings) == ["providers[a].api_key_env", "providers[b].api_key_env"]
    assert "A_KEY" in str(findings[0]) and fatal is None  # provider c needs no key


def test_prices_and_aliases_are_checked_against_what_is_served() -> None:
    providers = [provider("a", ["m", "unpriced"])]
    findings, fatal = check_routing(providers, {"typo": "gone", "ok": "m"}, {}, {"m", "nowhere"})
    assert settings_of(findings) == ["model_aliases.typo", "providers[a].models", "prices.nowhere"]
    assert "'unpriced'" in str(findings[1]) and fatal is None


def test_nothing_callable_is_fatal_but_no_providers_is_not() -> None:
    assert check_routing([provider("a", ["m"], "K")], {}, {})[1] is not None
    assert check_routing([provider("a", ["m"])], {}, {}, priced=set())[1] is not None
    assert check_routing([], {}, {}, priced=set())[1] is None


def test_callable_models_need_a_keyed_provider_and_a_price() -> None:
    providers = [provider("a", ["m", "x"]), provider("b", ["k"], "K")]
    aliases = {"alias": "m", "broken": "k"}
    assert callable_models(providers, aliases, {}, {"m", "k"}) == {"m", "alias"}
    assert callable_models(providers, aliases, {"K": "v"}, None) == {"m", "x", "k", "alias", "broken"}
