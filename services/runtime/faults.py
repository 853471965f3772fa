"""Which exceptions mean that a store (PostgreSQL, Redis) was unreachable rather than that
the code or the request was wrong.

The shared interceptor answers those with UNAVAILABLE instead of INTERNAL, and logs them by
type only: before, they were INTERNAL with a traceback whose driver text carried the failed
statement's parameters (account ids, idempotency keys) into the log, and a REST client got
a 500 for what a retry would have served (found by `tests/reliability/test_process_faults.py`:
connections ended with `pg_terminate_backend` under load). By then the pool has discarded
the dead connection, so the retry gets a new one; `again_if_connection_lost` retries a
transaction once on the spot where no caller would (the proxy's request-log writer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc

# SQLSTATE classes of a connection the server ended: 08 (connection exception) and 57P
# (operator intervention: pg_terminate_backend, a shutdown, "cannot connect now").
LOST_SQLSTATES = ("08", "57P")


def connection_lost(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) says the database connection was
    lost, not that the statement was wrong: retrying on a new connection may succeed. The
    pool has by then discarded the connection (SQLAlchemy invalidates it)."""
    seen: BaseException | None = error
    for _ in range(8):  # a driver error is wrapped a few times, never more
        if seen is None:
            return False
        if isinstance(seen, exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, exc.DisconnectionError | ConnectionError | asyncpg.ConnectionDoesNotExistError):
            return True
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(LOST_SQLSTATES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def store_unreachable(error: BaseException) -> bool:
    """A lost database connection or an unreachable Redis: the call may succeed when
    retried (UNAVAILABLE, which callers and REST clients retry), unlike a bug (INTERNAL)."""
    return connection_lost(error) or isinstance(error, RedisConnectionError | RedisTimeoutError)


T = TypeVar("T")


async def again_if_connection_lost(action: Callable[[], Awaitable[T]]) -> T:
    """Run `action` (a whole transaction, safe to repeat when it failed), and once more if
    its database connection was lost: the pool hands the second run a new connection, so a
    server that ended the connection (a restart, `pg_terminate_backend`) costs nothing."""
    try:
        return await action()
    except Exception as error:
        if not connection_lost(error):
            raise
    return await action()
