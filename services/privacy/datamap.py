"""The data map and the list of processors (P4.4), generated, never written by hand.

Every configured participant answers `DescribeData` from the field options on its
contracts; the privacy service adds its own record messages (declared the same way in
its protos). This module turns those answers into one map: every personal field with its
category, purpose, retention and erasure strategy, and, per processor outside Gatemesh,
what it receives. It renders the map as JSON-ready dicts and as Markdown for publishing.
A participant that does not answer is named in `unavailable` instead of failing the
whole map, so a published map says plainly when it is incomplete.

Pure functions over plain dicts (the proto JSON mapping of `DescribeDataResponse`, enums
as integers), so a unit test reaches them without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CATEGORIES = {
    1: "account",
    2: "credential",
    3: "payment",
    4: "ledger",
    5: "usage",
    6: "technical",
    7: "support",
    8: "consent",
}
STRATEGIES = {1: "delete", 2: "anonymize", 3: "legal hold"}


@dataclass(frozen=True)
class MapField:
    service: str
    store: str
    field: str
    category: int
    purpose: str
    retention: str
    retention_days: int
    erasure: int
    processors: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.service}.{self.store}.{self.field}"


@dataclass(frozen=True)
class Processor:
    name: str
    receives: tuple[str, ...]
    categories: tuple[int, ...]


@dataclass(frozen=True)
class DataMap:
    generated_at: datetime
    services: tuple[str, ...]
    fields: tuple[MapField, ...]
    processors: tuple[Processor, ...]
    unavailable: tuple[str, ...] = field(default=())


def _store_name(service: str, store: str) -> str:
    """Stores are declared "service.table"; the map keys them by service separately."""
    prefix = f"{service}."
    return store[len(prefix) :] if store.startswith(prefix) else store


def fields_of(service: str, described: Mapping[str, Any]) -> list[MapField]:
    """The personal fields of one DescribeData answer (proto JSON, integer enums)."""
    found = []
    for f in described.get("fields", []):
        personal = f.get("personal", {})
        found.append(
            MapField(
                service=service,
                store=_store_name(service, f.get("store", "")),
                field=f.get("field", ""),
                category=int(personal.get("category", 0)),
                purpose=personal.get("purpose", ""),
                retention=personal.get("retention", ""),
                retention_days=int(personal.get("retention_days", 0)),
                erasure=int(personal.get("erasure", 0)),
                processors=tuple(personal.get("processors", [])),
            )
        )
    return sorted(found, key=lambda m: (m.store, m.field))


def processors_of(fields: Sequence[MapField]) -> list[Processor]:
    """Each processor outside Gatemesh, with the fields and categories it receives (P4.4)."""
    receives: dict[str, list[MapField]] = {}
    for f in fields:
        for name in f.processors:
            receives.setdefault(name, []).append(f)
    return [
        Processor(name, tuple(f.path for f in got), tuple(sorted({f.category for f in got})))
        for name, got in sorted(receives.items())
    ]


def build(described: Mapping[str, Mapping[str, Any]], unavailable: Sequence[str], generated_at: datetime) -> DataMap:
    """The map of every service that answered, in the order given (erasure order)."""
    fields = [f for service, answer in described.items() for f in fields_of(service, answer)]
    return DataMap(
        generated_at=generated_at,
        services=tuple(described),
        fields=tuple(fields),
        processors=tuple(processors_of(fields)),
        unavailable=tuple(unavailable),
    )


def to_json(datamap: DataMap) -> dict[str, Any]:
    """The map as a JSON document (names for enums, for readers without the protos)."""
    return {
        "generated_at": datamap.generated_at.isoformat(),
        "services": list(datamap.services),
        "unavailable": list(datamap.unavailable),
        "fields": [
            {
                "service": f.service,
                "store": f.store,
                "field": f.field,
                "category": CATEGORIES.get(f.category, "unspecified"),
                "purpose": f.purpose,
                "retention": f.retention,
                "retention_days": f.retention_days,
                "erasure": STRATEGIES.get(f.erasure, "unspecified"),
                "processors": list(f.processors),
            }
            for f in datamap.fields
        ],
        "processors": [
            {
                "name": p.name,
                "receives": list(p.receives),
                "categories": [CATEGORIES.get(c, "unspecified") for c in p.categories],
            }
            for p in datamap.processors
        ],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def to_markdown(datamap: DataMap) -> str:
    """The map as a Markdown document: one table per service, then the processors."""
    lines = [
        "# Gatemesh data map",
        "",
        f"Generated {datamap.generated_at.isoformat(timespec='seconds')} from each service's `DescribeData`.",
        "",
    ]
    if datamap.unavailable:
        lines += [f"**Incomplete**: no answer from {', '.join(datamap.unavailable)}.", ""]
    for service in datamap.services:
        lines += [f"## {service}", "", "| store | field | category | purpose | retention | erasure | processors |"]
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for f in (f for f in datamap.fields if f.service == service):
            cells = (
                f.store,
                f.field,
                CATEGORIES.get(f.category, "unspecified"),
                f.purpose,
                f.retention,
                STRATEGIES.get(f.erasure, "unspecified"),
                ", ".join(f.processors),
            )
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    lines += ["## Processors (P4.4)", ""]
    if not datamap.processors:
        lines += ["No personal data goes to a processor outside Gatemesh.", ""]
    for p in datamap.processors:
        categories = ", ".join(CATEGORIES.get(c, "unspecified") for c in p.categories)
        lines += [f"- **{p.name}** ({categories}): {', '.join(p.receives)}"]
    return "\n".join(lines).rstrip() + "\n"
