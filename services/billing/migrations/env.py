"""Alembic environment of the billing service: runs on the connection `runtime.db.migrate` passes."""

from services.billing.store import METADATA
from services.runtime.db import run_migrations_in_env

run_migrations_in_env(METADATA)
