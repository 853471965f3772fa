"""Hashes of every table of every service database, to prove a request wrote nothing.

One query per database (an md5 of each table's rows in a stable order, all tables in one
UNION ALL) on connections kept open on an event loop of their own, so that synchronous
code (hypothesis tests, schemathesis hooks) can take one before and after each call in a
few milliseconds on the tests' small tables.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.proxy.mesh import pg_plain

# Columns that record use, not state, left out of the hashes: auth flushes each key's
# last use in the background, whatever became of the call that used it.
BOOKKEEPING: dict[str, set[str]] = {"api_keys": {"last_used_at"}}


class Snapshots:
    """Hashes of every table of every database, on one event loop kept for the module."""

    def __init__(self, databases: dict[str, str]) -> None:
        self.runner = asyncio.Runner()
        self.connections: dict[str, asyncpg.Connection] = {}
        self.queries: dict[str, str] = {}
        for name, url in databases.items():
            self.connections[name] = self.runner.run(asyncpg.connect(pg_plain(url)))

    def _query(self, connection: asyncpg.Connection) -> str:
        rows = self.runner.run(connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        parts = []
        for row in rows:
            table = row["tablename"]
            dropped = ", ".join(f"'{column}'" for column in sorted(BOOKKEEPING.get(table, ())))
            value = f"(to_jsonb(x) - ARRAY[{dropped}]::text[])::text" if dropped else "to_jsonb(x)::text"
            parts.append(
                f"SELECT '{table}' AS t, md5(coalesce(string_agg({value}, '|' ORDER BY {value}), '')) AS h"
                f' FROM "{table}" x'
            )
        return " UNION ALL ".join(parts)

    def take(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, connection in self.connections.items():
            if name not in self.queries:
                self.queries[name] = self._query(connection)
            for row in self.runner.run(connection.fetch(self.queries[name])):
                result[f"{name}.{row['t']}"] = row["h"]
        return result

    def settled(self, quiet_s: float = 0.15, within_s: float = 10.0) -> dict[str, str]:
        """A snapshot once nothing has changed for `quiet_s`: after a served model call,
        whose settle reaches billing just after the answer, so that it is not taken for a
        write of the next request."""
        deadline = time.monotonic() + within_s
        last = self.take()
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.take()
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        for connection in self.connections.values():
            self.runner.run(connection.close())
        self.runner.close()

    @staticmethod
    def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
        """`database.table` names whose rows differ (or that appeared or went)."""
        return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
