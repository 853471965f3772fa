"""The mesh observed as an operator sees it: `gatemesh up` (auth, billing, proxy, Envoy) on
PostgreSQL and Redis with every Prometheus endpoint on and spans exported over OTLP to the
receiver stand-in.

- Metrics: each service's endpoint and the edge's (Envoy's statistics) answer with the
  metrics docs/metrics.md names, and no label value holds an account or key id, an email
  or an API key.
- Tracing: one REST chat call is one trace, from the edge (Envoy's span) through the proxy
  to auth, billing and the upstream HTTP call (its `traceparent` reaching the upstream), and
  no exported span holds the prompt, the key, the password or the email (P3.2, P6.2).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.edge_mesh import MODEL, PASSWORD, Mesh, User, running_mesh
from tests.otlp_receiver import ReceivedSpan

pytestmark = pytest.mark.e2e

# What each endpoint must export once a paid chat call and a stream went through.
EXPECTED = {
    "auth": {"grpc_server_handled_total", "grpc_server_handling_seconds", "gatemesh_background_runs_total"},
    "billing": {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "gatemesh_holds_outstanding",
        "gatemesh_holds_outstanding_micros",
    },
    "proxy": {
        "grpc_server_handled_total",
        "gatemesh_upstream_requests_total",
        "gatemesh_upstream_request_seconds",
        "gatemesh_upstream_first_token_seconds",
        "gatemesh_circuit_breaker_state",
        "gatemesh_coalesced_batch_size",
        "gatemesh_settle_outbox_depth",
        "gatemesh_settle_outbox_oldest_age_seconds",
    },
    "edge": {"envoy_http_downstream_rq_total", "envoy_cluster_upstream_rq_total"},
}
SERVICES_IN_TRACE = ("gatemesh-edge", "gatemesh-proxy", "gatemesh-auth", "gatemesh-billing")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("e2e-observed")) as running:
        yield running


def scrape(url: str) -> dict[str, list[dict[str, str]]]:
    """Metric name (the family's, and each sample's: counters end in _total) -> label sets."""
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200, url
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(reply.text):
        found.setdefault(family.name, [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample.labels)
            found[family.name].append(sample.labels)
    return found


def chat(mesh: Mesh, user: User, text: str, **extra: object) -> str:
    client = openai.OpenAI(base_url=f"{mesh.url}/v1", api_key=user.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        **extra,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


def test_every_endpoint_exports_its_metrics_and_no_label_names_a_person(mesh: Mesh) -> None:
    user = mesh.rest_user()
    chat(mesh, user, "count these words")
    client = openai.OpenAI(base_url=f"{mesh.url}/v1", api_key=user.api_key, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    user.settled_balance()
    time.sleep(1.0)  # probes refresh every 0.5 s
    forbidden = [user.account_id, user.api_key, user.api_key[:12], user.email, "@"]
    for name, url in mesh.metrics_urls().items():
        families = scrape(url)
        missing = EXPECTED[name] - set(families)
        assert not missing, f"{name} lacks {sorted(missing)}"
        values = [value for samples in families.values() for labels in samples for value in labels.values()]
        leaked = [value for value in values if any(bad and bad in value for bad in forbidden)]
        assert not leaked, f"{name} labels hold personal data or keys: {leaked[:3]}"
    proxy = scrape(mesh.metrics_urls()["proxy"])
    assert {"provider": "primary", "model": MODEL} in proxy["gatemesh_upstream_requests_total"]


def test_a_chat_call_is_one_trace_from_the_edge_to_the_upstream_p3_2(mesh: Mesh) -> None:
    """P3.2 and P6.2: the trace covers every hop and carries no content, key, password or email."""
    user = mesh.rest_user()
    canary = f"CANARY{secrets.token_hex(8)}"
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    answer = chat(
        mesh, user, f"repeat {canary}", extra_body={"fake_mode": "echo"}, extra_headers={"traceparent": traceparent}
    )
    assert canary in answer
    user.settled_balance()

    def services_seen() -> set[str]:
        return {span.service for span in mesh.receiver.snapshot() if span.trace_id == trace_id}

    def orphans() -> list[ReceivedSpan]:
        """Spans whose parent has not arrived (each service exports on its own schedule: a
        batch's server span in billing can arrive before the proxy's client span it hangs from)."""
        spans = [span for span in mesh.receiver.snapshot() if span.trace_id == trace_id]
        by_id = {span.span.span_id.hex() for span in spans}
        return [span for span in spans if span.service != "gatemesh-edge" and span.parent_span_id not in by_id]

    deadline = time.monotonic() + 20  # Envoy flushes its spans every 5 s
    while (not set(SERVICES_IN_TRACE) <= services_seen() or orphans()) and time.monotonic() < deadline:
        time.sleep(0.2)
    spans = [span for span in mesh.receiver.snapshot() if span.trace_id == trace_id]
    assert set(SERVICES_IN_TRACE) <= services_seen(), sorted(services_seen())
    assert not orphans(), [(span.service, span.name) for span in orphans()]
    assert any(_upstream_call(span) for span in spans), [(s.service, s.name) for s in spans]
    assert any(_method(span, "VerifyKey") for span in spans if span.service == "gatemesh-auth")
    assert any(_method(span, "Hold") for span in spans if span.service == "gatemesh-billing")
    received = httpx.get(f"{mesh.upstream}/_fake/traceparents").json()
    assert any(header.split("-")[1] == trace_id for header in received)
    for secret in (canary, user.api_key, PASSWORD, user.email):
        assert not mesh.receiver.contains(secret)


def _upstream_call(span: ReceivedSpan) -> bool:
    """The proxy's HTTP client span to the upstream (aiohttp client instrumentation)."""
    attributes = {a.key: a.value.string_value for a in span.span.attributes}
    url = attributes.get("url.full") or attributes.get("http.url") or ""
    return span.service == "gatemesh-proxy" and span.span.kind == 3 and url.endswith("/v1/chat/completions")


def _method(span: ReceivedSpan, prefix: str) -> bool:
    return span.name.rsplit("/", 1)[-1].startswith(prefix)
