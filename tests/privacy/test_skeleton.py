"""The privacy service starts as its own process on PostgreSQL, migrated, and serves."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.support import free_port, service_process


async def test_privacy_starts_migrated_on_postgres(pg_database, tmp_path: Path) -> None:
    url = await pg_database("privacy")
    address = f"127.0.0.1:{free_port()}"
    env = {"GATEMESH_DATA_DIR": str(tmp_path), "GATEMESH_PRIVACY_DATABASE_URL": url, "GATEMESH_LISTEN": address}
    with service_process("services.privacy", env, address, tmp_path / "privacy.log"):
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            version = await conn.fetchval("SELECT version_num FROM alembic_version_privacy")
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        finally:
            await conn.close()
    assert version == migrations_head()
    assert {"privacy_requests", "privacy_steps", "privacy_audit", "privacy_exports"} <= tables


def migrations_head() -> str:
    """The newest revision (0001, then each revision built on it, e.g. 0002_policy_versions)."""
    from alembic.script import ScriptDirectory

    from services.privacy.store import MIGRATIONS
    from services.runtime.db import alembic_config

    return str(ScriptDirectory.from_config(alembic_config(MIGRATIONS, "privacy")).get_current_head())


def test_the_migrations_create_exactly_the_tables_declared(tmp_path: Path) -> None:
    """0001 (and what follows) build the schema `tables.py` declares, nothing more or less."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from services.privacy.store import MIGRATIONS
    from services.privacy.tables import METADATA
    from services.runtime.db import alembic_config

    config = alembic_config(MIGRATIONS, "privacy")
    engine = create_engine(f"sqlite:///{tmp_path / 'privacy.db'}")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), METADATA)
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))] == []


def test_the_edge_routes_and_documents_the_privacy_service(tmp_path: Path) -> None:
    """The edge config is generated from the annotations: privacy's REST routes need no
    edge change (self-service under /api/v1/privacy, staff under /api/v1/admin/privacy)."""
    from services.edge import config, openapi
    from services.edge.settings import EdgeSettings

    settings = EdgeSettings(data_dir=tmp_path, edge_tls_cert_file="", edge_tls_key_file="")
    files = config.EdgeFiles(
        descriptor=str(tmp_path / "d.pb"), openapi=str(tmp_path / "openapi.json"), docs=str(tmp_path)
    )
    boot = config.bootstrap(settings, files, ["privacy"])
    manager = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    transcoder = next(f for f in manager["http_filters"] if f["name"] == config.TRANSCODER)["typed_config"]
    assert sorted(transcoder["services"]) == ["gatemesh.privacy.v1.PolicyService", "gatemesh.privacy.v1.PrivacyService"]
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["privacy"]
    paths = openapi.document(["privacy"])["paths"]
    assert {"/api/v1/privacy/requests", "/api/v1/admin/privacy/requests/{request_id}/approve"} <= set(paths)
