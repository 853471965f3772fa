"""Alembic environment of the privacy service: runs on the connection `runtime.db.migrate` passes."""

from services.privacy.tables import METADATA
from services.runtime.db import run_migrations_in_env

run_migrations_in_env(METADATA)
