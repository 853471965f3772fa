"""Typed settings from environment variables and an optional YAML file.

Every key is flat: the YAML key `redis_url` is the environment variable
`GATEMESH_REDIS_URL`; environment variables win over the file. Complex values (lists,
maps) can be given in the environment as JSON. The YAML file is named by
`GATEMESH_CONFIG`. Each service subclasses `GatemeshSettings` with the keys it alone needs.

Secrets (service token, admin token, key HMAC secret) have no hard-coded defaults: when
unset, they are read from `<data_dir>/secrets.json`, which is created with random values
on first use, so a local mesh is safe by default and the operator CLI finds them too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

LOCAL_SECRETS = ("service_token", "admin_token", "key_hmac_secret")


def config_file() -> Path | None:
    """The YAML configuration file named by GATEMESH_CONFIG, if any."""
    name = os.environ.get("GATEMESH_CONFIG", "").strip()
    return Path(name) if name else None


def load_local_secrets(data_dir: Path) -> dict[str, str]:
    """Read, or create once, the random local secrets under the data directory."""
    return local_secret_file(data_dir / "secrets.json", lambda: {n: secrets.token_urlsafe(32) for n in LOCAL_SECRETS})


def local_secret_file(path: Path, make: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Read a JSON file of local secrets, or create it once (mode 0600) from `make()`;
    processes starting at once agree on one file."""
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    values = make()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values))
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)  # atomic and exclusive: two services starting at once agree
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


class GatemeshSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="GATEMESH_", extra="ignore", validate_default=True)

    data_dir: Path = Field(Path(".gatemesh"), description="Where local state lives (SQLite files, secrets).")
    listen: str = Field("", description="host:port this service binds; default: its own *_addr.")
    auth_addr: str = Field("127.0.0.1:50051", description="Where the auth service is reached.")
    billing_addr: str = Field("127.0.0.1:50052", description="Where the billing service is reached.")
    proxy_addr: str = Field("127.0.0.1:50053", description="Where the proxy service is reached.")
    privacy_addr: str = Field("127.0.0.1:50054", description="Where the privacy service is reached.")
    redis_cluster: bool = Field(
        False, description="redis_url names a node of a Redis Cluster: use the cluster client (docs/deploy.md)."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the Prometheus endpoints bind (0.0.0.0 in a container or a pod)."
    )
    auth_metrics_port: int = Field(0, description="Port of the auth service's Prometheus endpoint; 0: off.")
    billing_metrics_port: int = Field(0, description="Port of the billing service's Prometheus endpoint; 0: off.")
    proxy_metrics_port: int = Field(0, description="Port of the proxy service's Prometheus endpoint; 0: off.")
    privacy_metrics_port: int = Field(0, description="Port of the privacy service's Prometheus endpoint; 0: off.")
    metrics_enabled: bool = Field(
        True, description="false leaves every metric out (no interceptor, no endpoint): to measure their cost."
    )
    metrics_refresh_s: float = Field(
        15.0, description="How often gauges read from PostgreSQL or Redis (holds, settle outbox) are refreshed."
    )
    # Shared: auth enforces it at sign-up; the edge states it in the OpenAPI document.
    auth_policy_version: str = Field(
        "2026-11-01", description="The policy version accepted while privacy has none published (P10.2)."
    )
    redis_url: str = Field("", description="redis://...; empty: an in-process substitute (local only).")
    service_token: SecretStr | None = Field(None, description="Shared credential between services.")
    admin_token: SecretStr | None = Field(None, description="Operator credential for admin RPCs and the CLI.")
    key_hmac_secret: SecretStr | None = Field(None, description="Server secret for API-key HMACs.")
    tls_cert_file: str = Field("", description="PEM certificate for this service's gRPC port (enables TLS).")
    tls_key_file: str = Field("", description="PEM private key for tls_cert_file.")
    tls_ca_file: str = Field(
        "", description="PEM CA: with it, servers require and clients present certificates (mTLS)."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    grpc_max_message_bytes: int = Field(16 * 1024 * 1024, description="gRPC send/receive limit.")
    grpc_max_metadata_bytes: int = Field(
        64 * 1024, ge=8192, description="Largest metadata (headers) a service accepts on a call; beyond: refused."
    )
    grpc_handshake_timeout_s: float = Field(
        10.0, gt=0, description="A connection to a service that has not finished its handshake by then is closed."
    )
    grpc_max_connection_idle_s: float = Field(
        300.0, gt=0, description="A connection to a service with no call for this long is closed (GOAWAY)."
    )
    shutdown_grace_s: float = Field(10.0, description="Seconds in-flight calls get on SIGTERM.")
    health_interval_s: float = Field(
        5.0, gt=0, description="How often a service checks its database and Redis for its gRPC health status."
    )
    health_timeout_s: float = Field(
        2.0, gt=0, description="A dependency that does not answer its health check within this is unreachable."
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="The event loop a service runs on: uvloop (less CPU per call; where installed) or asyncio.",
    )
    migrate_only: bool = Field(
        False,
        description="Migrate this service's database, then exit without serving (the Kubernetes migration Job).",
    )
    run_background: bool = Field(
        True,
        description="Run this service's background jobs (sweepers, watchers); false on extra instances of a"
        " service scaled out, which then only answer calls.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _fill_local_secrets(self) -> Self:
        missing = [name for name in LOCAL_SECRETS if getattr(self, name) is None]
        if missing:
            local = load_local_secrets(self.data_dir)
            for name in missing:
                object.__setattr__(self, name, SecretStr(local[name]))
        return self

    def secret(self, name: str) -> str:
        """The plain value of a secret setting."""
        value: Any = getattr(self, name)
        return value.get_secret_value() if value is not None else ""

    def sqlite_url(self, service: str) -> str:
        """The embedded default database of a service: one SQLite file each."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"
