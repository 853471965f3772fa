"""What auth promises about personal data and secrets, proven against a real server and
database: nothing secret in plain text (P1.1, P1.6, P6.2), bad input writes nothing,
internal RPCs need the service credential, the participant contract (P8.1-P8.3), and
traces that join client and server spans without carrying secrets."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import participant_pb2
from services.auth.settings import AuthSettings
from services.runtime.clients import service_channel
from services.runtime.telemetry import setup_telemetry
from tests.auth.conftest import ADMIN_TOKEN, PASSWORD, POLICY, SERVICE, SERVICE_TOKEN, user


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def dump_all_tables(auth) -> str:
    """Every row of every table of the auth database, as text."""
    async with auth.app.engine.connect() as conn:
        names = (
            await conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))
        ).scalars()
        dump = []
        for name in list(names):
            dump += [repr(tuple(row)) for row in await conn.execute(text(f'SELECT * FROM "{name}"'))]
    return "\n".join(dump)


async def test_no_password_key_or_session_token_is_stored_in_plain_text_p1_6_p6_2(auth) -> None:
    account, md, key = await auth.user_with_key()
    session = md[0][1].removeprefix("Bearer ")
    rotated = await auth.stub.RotateApiKey(
        auth_pb2.RotateApiKeyRequest(
            key_id=(await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
        ),
        metadata=md,
    )
    await auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=rotated.api_key), metadata=SERVICE)
    await auth.stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="second secret password"), metadata=md
    )
    await auth.app.keys.flush_last_used()
    dump = await dump_all_tables(auth)
    assert account.account_id in dump  # the scan does see the data
    for secret in (PASSWORD, "second secret password", key, key[7:], rotated.api_key, rotated.api_key[7:], session):
        assert secret not in dump
    assert "$argon2id$" in dump


async def count_rows(auth) -> dict[str, int]:
    return await auth.app.store.counts()


BAD_INPUT = [
    (
        "SignUp",
        auth_pb2.SignUpRequest(
            email="not-an-email", password=PASSWORD, age_attested=True, accepted_policy_version=POLICY
        ),
        {"email"},
    ),
    (
        "SignUp",
        auth_pb2.SignUpRequest(
            email="a@example.com", password="short", age_attested=True, accepted_policy_version=POLICY
        ),
        {"password"},
    ),
    ("SignUp", auth_pb2.SignUpRequest(), {"email", "password", "age_attested", "accepted_policy_version"}),
    (
        "SignUp",
        auth_pb2.SignUpRequest(
            email="b@example.com", password="p" * 300, age_attested=True, accepted_policy_version=POLICY
        ),
        {"password"},
    ),
    (
        "SignUp",
        auth_pb2.SignUpRequest(
            email="x" * 5000 + "@example.com", password=PASSWORD, age_attested=True, accepted_policy_version=POLICY
        ),
        {"email"},
    ),
    ("SignIn", auth_pb2.SignInRequest(email="@", password=""), {"email", "password"}),
    ("VerifyKey", auth_pb2.VerifyKeyRequest(api_key="gm-tooshort"), {"api_key"}),
    ("VerifyKey", auth_pb2.VerifyKeyRequest(), {"api_key"}),
    ("VerifyKey", auth_pb2.VerifyKeyRequest(api_key="gm-" + "a" * 43, estimated_tokens=-1), {"estimated_tokens"}),
    ("ReportTokens", auth_pb2.ReportTokensRequest(), {"key_id"}),
]


@pytest.mark.parametrize(("method", "request_message", "fields"), BAD_INPUT)
async def test_bad_input_is_invalid_argument_with_field_violations_and_writes_nothing(
    auth, method, request_message, fields
) -> None:
    before = await count_rows(auth)
    error = await refused(getattr(auth.stub, method)(request_message, metadata=SERVICE))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in rpc_status.from_call(error).details)
    assert {v.field for v in bad.field_violations} == fields
    assert PASSWORD not in error.details()
    assert await count_rows(auth) == before


async def test_bad_key_requests_write_nothing(auth) -> None:
    account, md, _ = await auth.user_with_key()
    before = await count_rows(auth)
    bad_requests = [
        auth_pb2.CreateApiKeyRequest(name=""),
        auth_pb2.CreateApiKeyRequest(name="n" * 101),
        auth_pb2.CreateApiKeyRequest(name="ok", spend_cap_micros=-1, limits={"requests_per_minute": -5}),
        auth_pb2.CreateApiKeyRequest(name="ok", allowed_models=["m" * 201]),
    ]
    for request in bad_requests:
        error = await refused(auth.stub.CreateApiKey(request, metadata=md))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    page = auth_pb2.ListApiKeysRequest(page=common_pb2.PageRequest(page_token="garbage!"))
    assert (await refused(auth.stub.ListApiKeys(page, metadata=md))).code() == grpc.StatusCode.INVALID_ARGUMENT
    email = auth_pb2.ChangeEmailRequest(new_email="nope", password=PASSWORD)
    assert (await refused(auth.stub.ChangeEmail(email, metadata=md))).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await count_rows(auth) == before
    assert (await auth.app.store.account_by_id(account.account_id)).email == account.email


INTERNAL_CALLS = [
    ("VerifyKey", auth_pb2.VerifyKeyRequest(api_key="gm-" + "a" * 43)),
    ("ReportTokens", auth_pb2.ReportTokensRequest(key_id="key_x", token_delta=1)),
    ("ListAnalyticsOptOuts", auth_pb2.ListAnalyticsOptOutsRequest()),
    ("Authenticate", auth_pb2.AuthenticateRequest(credential="anything")),
]


async def test_internal_rpcs_refuse_callers_without_a_service_credential(auth) -> None:
    _, md, key = await auth.user_with_key()
    for credentials in ([], md, user(key), user(ADMIN_TOKEN), [("x-gatemesh-service-token", "wrong")]):
        for method, request in INTERNAL_CALLS:
            error = await refused(getattr(auth.stub, method)(request, metadata=credentials))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (method, credentials)
        subject = common_pb2.SubjectRef(email="x@example.com")
        export = auth.participant.ExportSubject(
            participant_pb2.ExportSubjectRequest(subject=subject), metadata=credentials
        )
        assert (await refused(export)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_data_map_export_rectify_erase_p8_1_p8_2_p8_3(auth) -> None:
    account, _md, key = await auth.user_with_key(name="my key")
    described = await auth.participant.DescribeData(participant_pb2.DescribeDataRequest(), metadata=SERVICE)
    assert ("auth.accounts", "email") in {(f.store, f.field) for f in described.fields}
    subject = common_pb2.SubjectRef(account_id=account.account_id)

    exported = await auth.participant.ExportSubject(
        participant_pb2.ExportSubjectRequest(subject=subject), metadata=SERVICE
    )
    kinds = [r.message for r in exported.records]
    assert kinds.count("gatemesh.auth.v1.AccountRecord") == 1
    assert {
        "gatemesh.auth.v1.ApiKeyRecord",
        "gatemesh.auth.v1.SessionRecord",
        "gatemesh.auth.v1.SecurityEventRecord",
    } <= set(kinds)
    assert "gatemesh.auth.v1.PolicyAcceptanceRecord" in kinds
    text_export = str(exported)
    assert account.email in text_export and "my key" in text_export
    assert "$argon2" not in text_export and key not in text_export

    rectified = await auth.participant.RectifySubject(
        participant_pb2.RectifySubjectRequest(subject=subject, request_id="r1", changes={"email": "fixed@example.com"}),
        metadata=SERVICE,
    )
    assert rectified.updated["auth.accounts"] == 1
    unknown_field = participant_pb2.RectifySubjectRequest(subject=subject, changes={"iban": "x"})
    bad = await refused(auth.participant.RectifySubject(unknown_field, metadata=SERVICE))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT

    erase = participant_pb2.EraseSubjectRequest(subject=subject, request_id="erase-1")
    first = await auth.participant.EraseSubject(erase, metadata=SERVICE)
    assert not first.replayed
    counts = {a.store: a.count for a in first.actions}
    assert counts["auth.api_keys"] == 1 and counts["auth.accounts"] == 1 and counts["auth.sessions"] >= 1
    again = await auth.participant.EraseSubject(erase, metadata=SERVICE)
    assert again.replayed and list(again.actions) == list(first.actions)

    after = await auth.participant.ExportSubject(
        participant_pb2.ExportSubjectRequest(subject=subject), metadata=SERVICE
    )
    assert list(after.records) == []
    dump = await dump_all_tables(auth)
    assert "fixed@example.com" not in dump and account.email not in dump and "my key" not in dump
    assert (await refused(auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE))).code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_one_trace_holds_client_and_server_spans_without_secrets(auth, tmp_path) -> None:
    exporter = InMemorySpanExporter()
    setup_telemetry("auth-test", extra_processors=[SimpleSpanProcessor(exporter)])
    settings = AuthSettings(
        data_dir=tmp_path, service_token=SERVICE_TOKEN, admin_token=ADMIN_TOKEN, key_hmac_secret="x"
    )
    channel = service_channel(auth.address, settings)  # traced, as every service's client
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    try:
        _, md, key = await auth.user_with_key()
        exporter.clear()
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("proxy-call") as parent:
            await stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key, consume_rate_limit=True))
            await stub.Authenticate(auth_pb2.AuthenticateRequest(credential=md[0][1].removeprefix("Bearer ")))
        trace_id = parent.get_span_context().trace_id
    finally:
        await channel.close()
        exporter.shutdown()  # the provider is process-wide: stop collecting for later tests
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    kinds = {(s.name, s.kind) for s in spans}
    assert ("/gatemesh.auth.v1.AuthService/VerifyKey", trace.SpanKind.CLIENT) in kinds
    assert ("/gatemesh.auth.v1.AuthService/VerifyKey", trace.SpanKind.SERVER) in kinds
    assert ("/gatemesh.auth.v1.AuthService/Authenticate", trace.SpanKind.SERVER) in kinds
    exported = repr(
        [(s.name, dict(s.attributes), [dict(e.attributes) for e in s.events]) for s in exporter.get_finished_spans()]
    )
    assert key not in exported and key[7:] not in exported
    assert SERVICE_TOKEN not in exported and md[0][1].removeprefix("Bearer ") not in exported
