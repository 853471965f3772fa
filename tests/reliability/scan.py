"""Everything a mesh keeps, as text, for secrets scans: every row of every table of every
service database (each row cast to text, every schema but the catalogs), every key and
value in its Redis, every file its processes wrote (logs, and all under the data
directory), and every byte of every span it exported."""

from __future__ import annotations

import asyncio

import asyncpg
from redis import Redis

from tests.proxy.mesh import pg_plain
from tests.reliability.full_mesh import FullMesh

# The fake upstream stands for a provider outside the platform, which sees prompts by its nature.
OUTSIDE = {"upstream.log"}


def everything(mesh: FullMesh) -> dict[str, str]:
    """{where: text} over the mesh's tables, Redis, files and exported spans."""
    texts: dict[str, str] = {}
    for service, url in mesh.databases.items():
        texts.update({f"{service} {name}": text for name, text in asyncio.run(table_texts(url)).items()})
    texts.update(redis_texts(mesh.redis.url))
    texts.update(file_texts(mesh))
    texts["exported spans"] = b"\n".join(mesh.receiver.bodies).decode("utf-8", errors="replace")
    return texts


async def table_texts(url: str) -> dict[str, str]:
    """Every table of a database (all schemas but the catalogs), each row cast to text."""
    connection = await asyncpg.connect(pg_plain(url))
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        texts = {}
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            rows = await connection.fetch(f"SELECT t::text AS line FROM {name} AS t")
            texts[name] = "\n".join(r["line"] for r in rows)
        return texts
    finally:
        await connection.close()


def redis_texts(url: str) -> dict[str, str]:
    """Every key of the mesh's Redis and its value, whatever its type, as text."""
    client = Redis.from_url(url)
    readers = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"set": client.smembers,
        b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        b"stream": lambda k: client.xrange(k),
    }
    texts = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        reader = readers.get(kind)
        texts[f"redis {key!r}"] = f"{key!r} {reader(key) if reader else kind!r}"
    client.close()
    return texts


def file_texts(mesh: FullMesh) -> dict[str, str]:
    """Every log file of the mesh's processes, and every file under the data directory."""
    paths = [p for p in mesh.tmp.rglob("*") if p.is_file() and p.name not in OUTSIDE]
    return {str(path): path.read_bytes().decode("utf-8", errors="replace") for path in paths}


def where(needle: str, texts: dict[str, str]) -> list[str]:
    forms = {needle, needle.encode().hex()}  # bytea columns read as hex
    return [name for name, text in texts.items() if any(form in text for form in forms)]
