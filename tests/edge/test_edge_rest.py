"""The edge in front of a real auth service: REST from the annotations, OpenAI-shaped
errors with the right status, Envoy's own replies in the same shape, body limits, client
IPs, trace context, the OpenAPI document, and TLS.

One auth process (PostgreSQL, Redis) and one Envoy serve the whole module; billing's
routes are configured but nothing listens there, which is how a service outage looks.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.edge import openapi
from tests.edge.edge_support import running_edge, self_signed
from tests.otlp_receiver import OtlpReceiver
from tests.support import REDIS_PROXY, create_database, drop_database, free_port, service_process

POLICY = "2026-11-01"
PASSWORD = "correct horse battery staple"
BODY_LIMIT = 256 * 1024
GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "gm-error-json", "gm-http-status")


@dataclass
class Edge:
    url: str
    database: str
    receiver: OtlpReceiver
    tmp: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    database = asyncio.run(create_database("edge_auth"))
    port = free_port()
    env = {
        "GATEMESH_DATA_DIR": str(tmp / "data"),
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}",  # nobody listens: an outage
        "GATEMESH_AUTH_DATABASE_URL": database,
        "GATEMESH_REDIS_URL": REDIS_PROXY,
        "GATEMESH_AUTH_ARGON2_TIME_COST": "1",
        "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "1024",
        "GATEMESH_AUTH_ARGON2_PARALLELISM": "1",
        "GATEMESH_EDGE_PORT": str(port),
        "GATEMESH_EDGE_MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
    }
    url = f"http://127.0.0.1:{port}"
    try:
        with OtlpReceiver() as receiver:
            auth_env = {**env, **receiver.otel_env(), "OTEL_SERVICE_NAME": "auth"}
            with (
                service_process("services.auth", auth_env, env["GATEMESH_AUTH_ADDR"], tmp / "auth.log"),
                running_edge(env, url, tmp / "edge.log", ["auth", "billing"]),
            ):
                yield Edge(url, database, receiver, tmp, env)
    finally:
        asyncio.run(drop_database(database))


def sign_up_body(email: str | None = None) -> dict[str, object]:
    return {
        "email": email or f"edge-{secrets.token_hex(4)}@example.com",
        "password": PASSWORD,
        "age_attested": True,
        "accepted_policy_version": POLICY,
    }


def assert_openai_error(reply: httpx.Response, status: int, kind: str) -> dict[str, object]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["type"] == kind
    assert isinstance(error["message"], str) and error["message"]
    for name in GRPC_HEADERS:
        assert name not in reply.headers
    return error


def test_sign_up_through_rest_returns_proto_json_without_grpc_headers(edge: Edge) -> None:
    body = sign_up_body()
    reply = httpx.post(f"{edge.url}/api/v1/accounts", json=body)
    assert reply.status_code == 200, reply.text
    account = reply.json()["account"]
    assert account["email"] == body["email"]
    assert account["account_id"].startswith("acct_")
    assert account["analytics_opt_out"] is False  # primitive fields are always printed
    for name in (*GRPC_HEADERS, "grpc-accept-encoding"):
        assert name not in reply.headers


def test_session_and_api_key_through_rest(edge: Edge) -> None:
    body = sign_up_body()
    assert httpx.post(f"{edge.url}/api/v1/accounts", json=body).status_code == 200
    session = httpx.post(f"{edge.url}/api/v1/sessions", json={"email": body["email"], "password": PASSWORD}).json()
    headers = {"authorization": f"Bearer {session['session_token']}"}
    created = httpx.post(f"{edge.url}/api/v1/keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 200, created.text
    key_id = created.json()["key"]["key_id"]
    listed = httpx.get(f"{edge.url}/api/v1/keys", headers=headers).json()
    assert [k["key_id"] for k in listed["keys"]] == [key_id]
    revoked = httpx.delete(f"{edge.url}/api/v1/keys/{key_id}", headers=headers)
    assert revoked.status_code == 200, revoked.text


def test_service_errors_keep_their_status_and_openai_body(edge: Edge) -> None:
    body = sign_up_body()
    httpx.post(f"{edge.url}/api/v1/accounts", json=body)
    duplicate = assert_openai_error(httpx.post(f"{edge.url}/api/v1/accounts", json=body), 409, "invalid_request_error")
    assert duplicate["param"] == "email"
    bad = httpx.get(f"{edge.url}/api/v1/me", headers={"authorization": "Bearer not-a-credential"})
    assert_openai_error(bad, 401, "authentication_error")
    missing = assert_openai_error(httpx.post(f"{edge.url}/api/v1/accounts", json={}), 400, "invalid_request_error")
    assert "email" in str(missing["message"])


def test_rules_declared_on_the_protos_answer_400_naming_the_field(edge: Edge) -> None:
    """The runtime's interceptor enforces the contract's rules; the edge shows them OpenAI's way."""
    body = {**sign_up_body(), "email": "not-an-address", "password": "short"}
    error = assert_openai_error(httpx.post(f"{edge.url}/api/v1/accounts", json=body), 400, "invalid_request_error")
    assert error["param"] == "email"
    assert "email: must be a valid email address" in str(error["message"])
    assert "password: must be at least 12 characters" in str(error["message"])
    account = sign_up_body()
    httpx.post(f"{edge.url}/api/v1/accounts", json=account)
    session = httpx.post(f"{edge.url}/api/v1/sessions", json={"email": account["email"], "password": PASSWORD})
    headers = {"authorization": f"Bearer {session.json()['session_token']}"}
    page = httpx.get(f"{edge.url}/api/v1/keys", params={"page.page_size": "-1"}, headers=headers)
    error = assert_openai_error(page, 400, "invalid_request_error")
    assert error["param"] == "page.page_size"


def test_malformed_json_and_wrong_types_get_400_naming_the_problem(edge: Edge) -> None:
    json_type = {"content-type": "application/json"}
    broken = httpx.post(f"{edge.url}/api/v1/accounts", content=b'{"email": ', headers=json_type)
    error = assert_openai_error(broken, 400, "invalid_request_error")
    # Worded as /v1/chat/completions words it, never the parser's text (which quotes the body).
    assert error["message"] == "the request body is not valid JSON (line 1 column 11)"
    for body, where in [(b"secret-text", "line 1 column 1"), (b'{\n "a": 1,\n "b": tru}', "line 3 column 7")]:
        error = assert_openai_error(httpx.post(f"{edge.url}/api/v1/keys", content=body), 400, "invalid_request_error")
        assert error["message"] == f"the request body is not valid JSON ({where})"
    trailing = httpx.post(f"{edge.url}/api/v1/accounts", content=b'{"email": "a@example.com",}')
    assert "line 1 column 27" in str(assert_openai_error(trailing, 400, "invalid_request_error")["message"])
    listed = httpx.post(f"{edge.url}/api/v1/sessions", content=b"[1, 2]")
    error = assert_openai_error(listed, 400, "invalid_request_error")
    assert error["message"] == "the request body must be a JSON object"
    wrong = httpx.post(f"{edge.url}/api/v1/accounts", json={**sign_up_body(), "password": 1234567})
    error = assert_openai_error(wrong, 400, "invalid_request_error")
    assert error["message"] == "password: must be a string" and error["param"] == "password"
    assert "1234567" not in wrong.text
    query = httpx.get(f"{edge.url}/api/v1/keys?colour=blue", headers={"authorization": "Bearer x"})
    assert "colour" in str(assert_openai_error(query, 400, "invalid_request_error")["message"])


def test_timestamps_in_query_strings_take_a_date_alone_or_say_which_form(edge: Edge) -> None:
    """The CLI's forms (2026-01-31, 2026-01-31T12:00) reach the service (here billing, which
    is down: 503); anything else is a 400 that names the forms, not the parser's text."""
    for since in ("2026-01-31", "2026-01-31T12:00", "2026-01-31 12:00:30", "2026-01-31T12:00:00+02:00"):
        reply = httpx.get(f"{edge.url}/api/v1/usage", params={"since": since}, headers={"authorization": "Bearer x"})
        assert reply.status_code == 503, (since, reply.text)
    bad = httpx.get(f"{edge.url}/api/v1/usage", params={"until": "yesterday"}, headers={"authorization": "Bearer x"})
    error = assert_openai_error(bad, 400, "invalid_request_error")
    assert error["param"] == "until"
    assert error["message"] == "until: must be a date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z)"


def test_a_wrong_method_is_405_with_allow(edge: Edge) -> None:
    for method, path, allow in [
        ("PUT", "/api/v1/accounts", "POST"),
        ("GET", "/api/v1/keys/key_1", "DELETE"),
        ("TRACE", "/api/v1/keys", "GET, POST"),
        ("DELETE", "/api/v1/prices", "GET"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("TRACE", "/docs", "GET, HEAD"),
    ]:
        reply = httpx.request(method, f"{edge.url}{path}")
        assert_openai_error(reply, 405, "invalid_request_error")
        assert reply.headers["allow"] == allow, (method, path)


def test_the_api_reference_page_and_its_assets_are_served_by_the_edge(edge: Edge) -> None:
    """Swagger UI from a package's files, over /openapi.json: nothing comes from elsewhere."""
    page = httpx.get(f"{edge.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/docs/") for source in sources)
    for source in sources:
        asset = httpx.get(f"{edge.url}{source}")
        assert asset.status_code == 200 and len(asset.content) > 0, source
    init = httpx.get(f"{edge.url}/docs/gatemesh-init.js").text
    assert '"/openapi.json"' in init and "validatorUrl: null" in init
    bundle = httpx.get(f"{edge.url}/docs/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text and bundle.headers["content-type"].startswith("application/javascript")


def test_unknown_path_is_an_openai_404(edge: Edge) -> None:
    error = assert_openai_error(httpx.post(f"{edge.url}/v1/nothing-here", json={}), 404, "not_found_error")
    assert "/v1/nothing-here" in str(error["message"])
    # Only annotated services are exposed: a participant method is not reachable by path.
    internal = httpx.post(f"{edge.url}/gatemesh.privacy.v1.PrivacyParticipant/DescribeData", json={})
    assert_openai_error(internal, 404, "not_found_error")


def test_a_service_that_is_down_is_an_openai_503(edge: Edge) -> None:
    reply = httpx.get(f"{edge.url}/api/v1/balance", headers={"authorization": "Bearer x"})
    assert_openai_error(reply, 503, "api_error")


def test_request_body_limit_is_a_413_below_the_grpc_limit(edge: Edge) -> None:
    small = httpx.post(f"{edge.url}/api/v1/accounts", json=sign_up_body("x" * (BODY_LIMIT // 2)))
    assert small.status_code == 400  # reached auth, which rejects the address
    big = httpx.post(f"{edge.url}/api/v1/accounts", json=sign_up_body("x" * (BODY_LIMIT * 2)))
    assert_openai_error(big, 413, "invalid_request_error")


async def test_auth_sees_the_client_address_not_a_forged_forwarded_for(edge: Edge) -> None:
    body = sign_up_body()
    forged = {"x-forwarded-for": "203.0.113.9", "user-agent": "edge-test"}
    async with httpx.AsyncClient(base_url=edge.url) as client:
        await client.post("/api/v1/accounts", json=body)
        wrong = {"email": body["email"], "password": "wrong password!"}
        reply = await client.post("/api/v1/sessions", json=wrong, headers=forged)
    assert reply.status_code == 401
    conn = await asyncpg.connect(edge.database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        ips = {row["ip"] for row in await conn.fetch("SELECT ip FROM security_events")}
    finally:
        await conn.close()
    assert "127.0.0.1" in ips
    assert "203.0.113.9" not in ips


def test_w3c_trace_context_passes_through_the_edge(edge: Edge) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    httpx.post(f"{edge.url}/api/v1/accounts", json=sign_up_body(), headers=headers)
    # Child spans (database, Redis) of the server span may be exported first: wait for the
    # server span itself, whose parent is the caller's span from `traceparent`.
    spans = edge.receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.service == "auth" and s.parent_span_id == parent
    )
    assert spans, "no auth span continues the caller's trace"


def test_openapi_document_is_served_and_matches_the_generator(edge: Edge) -> None:
    reply = httpx.get(f"{edge.url}/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == json.loads(openapi.render(openapi.document(["auth", "billing"])))


def test_tls_at_the_edge(edge: Edge) -> None:
    """P6.1: with a certificate configured, the edge speaks HTTPS."""
    cert, key = self_signed(edge.tmp)
    port = free_port()
    env = {
        **edge.env,
        "GATEMESH_EDGE_PORT": str(port),
        "GATEMESH_EDGE_TLS_CERT_FILE": str(cert),
        "GATEMESH_EDGE_TLS_KEY_FILE": str(key),
        "GATEMESH_DATA_DIR": str(edge.tmp / "tls-data"),
    }
    url = f"https://127.0.0.1:{port}"
    with running_edge(env, url, edge.tmp / "edge-tls.log", ["auth"]):
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert client.post(f"{url}/api/v1/accounts", json=sign_up_body()).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/openapi.json")  # an unknown certificate is refused
