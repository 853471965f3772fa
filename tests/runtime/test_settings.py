"""Settings: YAML file, environment precedence, and local secrets created once."""

from __future__ import annotations

import stat

import pytest

from services.runtime.settings import GatemeshSettings


def test_yaml_then_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gatemesh.yaml"
    config.write_text("auth_addr: 10.0.0.1:1\nredis_url: redis://from-file\n")
    monkeypatch.setenv("GATEMESH_CONFIG", str(config))
    monkeypatch.setenv("GATEMESH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEMESH_REDIS_URL", "redis://from-env")
    settings = GatemeshSettings()
    assert settings.auth_addr == "10.0.0.1:1"
    assert settings.redis_url == "redis://from-env"


def test_local_secrets_are_random_private_and_stable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEMESH_CONFIG", raising=False)
    first = GatemeshSettings(data_dir=tmp_path)
    second = GatemeshSettings(data_dir=tmp_path)
    assert first.secret("service_token") == second.secret("service_token")
    assert len(first.secret("key_hmac_secret")) >= 32
    assert first.secret("admin_token") != first.secret("service_token")
    mode = (tmp_path / "secrets.json").stat().st_mode
    assert not mode & (stat.S_IRWXG | stat.S_IRWXO)
    other = GatemeshSettings(data_dir=tmp_path / "elsewhere")
    assert other.secret("service_token") != first.secret("service_token")


def test_secret_settings_are_not_printed(tmp_path) -> None:
    settings = GatemeshSettings(data_dir=tmp_path, admin_token="super-secret-admin")
    assert "super-secret-admin" not in repr(settings)
