"""`runtime.participant`'s rendered export pages: `JsonRenderer` gives exactly the proto JSON
mapping `json_format` gives for a record message, and `json_page` encodes ExportedRecords
that parse back with their counts (the form the privacy service stores untouched)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gatemesh.privacy.v1 import participant_pb2
from gatemesh.proxy.v1 import proxy_pb2
from services.proxy.participant import RENDER, log_record
from services.proxy.store import RequestLogRow
from services.runtime.participant import JsonRenderer, json_page, rfc3339

MOMENTS = [
    datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 12, 0, 0, 250_000, tzinfo=UTC),
    datetime(2026, 11, 1, 12, 0, 0, 250_001, tzinfo=UTC),
    datetime(2026, 11, 1, 14, 0, 0, 7, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 11, 1, 12, 0, 0, 1000),  # naive: UTC
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_timestamps_render_as_json_format_does(moment: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    assert rfc3339(moment) == stamp.ToJsonString()


def row(n: int) -> RequestLogRow:
    return RequestLogRow(
        request_id=f"req_{n}", account_id="acct_1", key_id="" if n % 2 else "key_1", model='m "q" \\ ü\n',
        provider="p", status_code=200 * (n % 2), latency_ms=n, created_at=MOMENTS[n % len(MOMENTS)],
        input_tokens=2**40 * n, output_tokens=0, cost_micros=n, outcome="ok", tokens_estimated=bool(n % 2),
        endpoint="chat" if n % 3 else "", stream=bool(n % 3),
    )  # fmt: skip


def test_request_log_rows_render_as_json_format_does() -> None:
    """Defaults left out, int64 as strings, escapes: equal to MessageToDict of the record."""
    rows = [row(n) for n in range(6)]
    expected = [json_format.MessageToDict(log_record(r), preserving_proto_field_name=True) for r in rows]
    assert [RENDER.data(r.model_dump()) for r in rows] == expected
    page = json_page("proxy", RENDER.records(r.model_dump() for r in rows))
    assert dict(page.record_counts) == {"gatemesh.proxy.v1.RequestLogRecord": 6} and not page.records
    parsed = json.loads(b"[" + page.records_json + b"]")
    assert [r["data"] for r in parsed] == expected
    back = json_format.ParseDict(parsed[5]["data"], proxy_pb2.RequestLogRecord())
    assert back.input_tokens == 5 * 2**40 and back.model == 'm "q" \\ ü\n'


def test_messages_it_cannot_render_fail_at_once() -> None:
    with pytest.raises(TypeError):
        JsonRenderer(participant_pb2.ExportedRecord.DESCRIPTOR)  # a Struct field
