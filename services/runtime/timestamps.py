"""Proto `Timestamp` <-> `datetime`, one way for every service.

Stored times are naive UTC and API times aware; a proto Timestamp has no zone. So: a naive
datetime is read as UTC, an unset Timestamp (zero seconds and nanos, the proto3 default) is
"no time" (None), and a Timestamp read back is an aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: datetime) -> Timestamp:
    """A datetime as a Timestamp; a naive one is taken as UTC."""
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


def optional_timestamp(moment: datetime | None) -> Timestamp | None:
    """`to_timestamp`, with None (an unset field) for None."""
    return None if moment is None else to_timestamp(moment)


def from_timestamp(stamp: Timestamp) -> datetime | None:
    """A set Timestamp as an aware UTC datetime; an unset one (all zero) as None."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
