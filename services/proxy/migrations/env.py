"""Alembic environment of the proxy: migrations run on the connection `migrate` passes."""

from services.proxy.store import metadata
from services.runtime.db import run_migrations_in_env

run_migrations_in_env(metadata)
