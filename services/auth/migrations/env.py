"""Alembic environment of the auth service: runs on the connection `runtime.db.migrate` passes."""

from services.auth.store import metadata
from services.runtime.db import run_migrations_in_env

run_migrations_in_env(metadata)
