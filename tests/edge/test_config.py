"""The edge's generated artefacts: the Envoy bootstrap (validated by Envoy itself), the
committed deployment example, and the OpenAPI document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatemesh.common.v1 import common_pb2
from services.edge import config, openapi
from services.edge.__main__ import envoy_binary
from services.edge.descriptors import descriptor_path, http_methods
from services.edge.docs import write_docs
from services.edge.settings import EdgeSettings
from tests.support import ROOT


def settings(tmp_path: Path, **values: Any) -> EdgeSettings:
    secrets = {"service_token": "s", "admin_token": "a", "key_hmac_secret": "k"}
    return EdgeSettings(data_dir=tmp_path, **secrets, **values)


def files(tmp_path: Path) -> config.EdgeFiles:
    doc = tmp_path / "openapi.json"
    doc.write_text("{}")
    docs = write_docs(tmp_path / "docs")
    return config.EdgeFiles(descriptor=str(descriptor_path()), openapi=str(doc), docs=str(docs))


def hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_every_annotated_service_is_transcoded_and_routed_to_its_cluster(tmp_path: Path) -> None:
    boot = config.bootstrap(settings(tmp_path), files(tmp_path), ["auth", "billing", "proxy"])
    manager = hcm(boot)
    transcoder = manager["http_filters"][1]["typed_config"]
    assert transcoder["services"] == [
        "gatemesh.auth.v1.AuthService",
        "gatemesh.billing.v1.BillingService",
        "gatemesh.proxy.v1.ProxyService",
    ]
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True
    assert transcoder["convert_grpc_status"] is False
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    by_path = {r["match"].get("path"): r["route"] for r in routes if "route" in r}
    assert by_path["/gatemesh.proxy.v1.ProxyService/ChatCompletions"] == {"cluster": "proxy", "timeout": "0s"}
    # Only RPCs with an HTTP rule are routed: no prefix, no INTERNAL or ADMIN method.
    assert not [r for r in routes if "prefix" in r["match"]]
    assert "/gatemesh.billing.v1.BillingService/Hold" not in by_path
    assert "/gatemesh.auth.v1.AuthService/AdminGetAccount" not in by_path
    direct = [r for r in routes if "direct_response" in r]
    served = {r["match"]["path"] for r in direct if r["direct_response"]["status"] == 200}
    refused = {r["match"]["path"] for r in direct if r["direct_response"]["status"] == 405}
    assert {"/openapi.json", "/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= served == refused
    clusters = boot["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == ["auth", "billing", "proxy"]
    for cluster in clusters:
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]


def test_filters_run_lua_before_the_transcoder(tmp_path: Path) -> None:
    names = [f["name"] for f in hcm(config.bootstrap(settings(tmp_path), files(tmp_path)))["http_filters"]]
    assert names == [config.LUA, config.TRANSCODER, "envoy.filters.http.router"]


def test_body_limit_must_stay_below_the_grpc_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grpc_max_message_bytes"):
        settings(tmp_path, edge_max_request_body_bytes=16 * 1024 * 1024)
    boot = config.bootstrap(settings(tmp_path, edge_max_request_body_bytes=1000), files(tmp_path))
    assert hcm(boot)["http_filters"][1]["typed_config"]["max_request_body_size"] == 1000


def test_tls_only_when_a_certificate_is_configured(tmp_path: Path) -> None:
    plain = config.bootstrap(settings(tmp_path), files(tmp_path))
    assert "transport_socket" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]
    tls = config.bootstrap(settings(tmp_path, edge_tls_cert_file="c.pem", edge_tls_key_file="k.pem"), files(tmp_path))
    socket = tls["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
    assert socket["typed_config"]["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "filename": "c.pem"
    }


def test_services_behind_mutual_tls_get_tls_clusters(tmp_path: Path) -> None:
    s = settings(tmp_path, tls_ca_file="ca.pem", tls_cert_file="c.pem", tls_key_file="k.pem")
    for cluster in config.bootstrap(s, files(tmp_path))["static_resources"]["clusters"]:
        context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert context["validation_context"] == {"trusted_ca": {"filename": "ca.pem"}}
        assert context["tls_certificates"][0]["private_key"] == {"filename": "k.pem"}


def test_envoy_accepts_the_generated_config(tmp_path: Path) -> None:
    s = settings(tmp_path, edge_admin_port=19901, edge_tls_cert_file="", edge_tls_key_file="")
    path = config.write(config.bootstrap(s, files(tmp_path)), tmp_path / "envoy.yaml")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_committed_deploy_example_is_what_the_generator_produces() -> None:
    committed = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    regenerate = "python -m services.edge --example > deploy/envoy/envoy.yaml"
    assert committed == config.render(config.example()), f"the example drifted; run: {regenerate}"
    example = yaml.safe_load(committed)
    assert {c["type"] for c in example["static_resources"]["clusters"]} == {"STRICT_DNS"}


def test_openapi_documents_every_http_rule_with_its_verb() -> None:
    doc = openapi.document()
    for item in http_methods():
        verb, template = item.verb_and_path()
        operation = doc["paths"][openapi.openapi_path(template)][verb]
        assert operation["operationId"] == f"{item.service.name}_{item.method.name}"
        assert ("security" in operation) == (item.access != common_pb2.ACCESS_PUBLIC)
    json.dumps(doc)  # serialisable


def test_openapi_describes_streams_path_parameters_and_proto_field_names() -> None:
    doc = openapi.document()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    revoke = doc["paths"]["/api/v1/keys/{key_id}"]["delete"]
    key_id = {"type": "string", "maxLength": 40, "minLength": 1}
    assert revoke["parameters"][0] == {"name": "key_id", "in": "path", "required": True, "schema": key_id}
    sign_up = doc["components"]["schemas"]["gatemesh.auth.v1.SignUpRequest"]
    assert "accepted_policy_version" in sign_up["properties"]
    assert "13 or older" in sign_up["properties"]["age_attested"]["description"]
    refs = json.dumps(doc).count('"$ref": "#/components/schemas/')
    assert refs > 0
    for name in doc["components"]["schemas"]:
        assert doc["components"]["schemas"][name], f"empty schema {name}"


def test_openapi_states_the_rules_the_protos_declare() -> None:
    """Required fields, formats, lengths, ranges and allowed values, as the runtime enforces them."""
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    sign_up = schemas["gatemesh.auth.v1.SignUpRequest"]
    assert sign_up["required"] == ["email", "password", "age_attested", "accepted_policy_version"]
    assert sign_up["properties"]["email"] == {"type": "string", "maxLength": 254, "format": "email", "minLength": 1}
    assert sign_up["properties"]["password"]["minLength"] == 12
    assert sign_up["properties"]["age_attested"]["enum"] == [True]
    page = {p["name"]: p for p in doc["paths"]["/api/v1/keys"]["get"]["parameters"]}
    assert page["page.page_size"]["schema"] == {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1000}
    statement = {p["name"]: p for p in doc["paths"]["/api/v1/statements/{month}"]["get"]["parameters"]}
    assert statement["month"]["schema"]["pattern"] == "^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$"
    assert statement["format"]["schema"]["enum"] == ["json", "csv"]
    key = schemas["gatemesh.auth.v1.CreateApiKeyRequest"]
    assert key["properties"]["allowed_models"]["maxItems"] == 100
    assert key["properties"]["allowed_models"]["items"] == {"type": "string", "minLength": 1, "maxLength": 200}
    # 64-bit integers: integers with their range in requests, strings as the edge prints them.
    assert key["properties"]["spend_cap_micros"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 10**15,
        "description": "0: no cap.",
    }
    assert key["properties"]["limits"] == {"$ref": "#/components/schemas/gatemesh.auth.v1.KeyLimits.Input"}
    assert schemas["gatemesh.auth.v1.KeyLimits"]["properties"]["tokens_per_minute"]["type"] == "string"
    checkout = schemas["gatemesh.billing.v1.CreateCheckoutSessionRequest"]
    assert checkout["properties"]["amount_micros"]["exclusiveMinimum"] is True
    assert set(checkout["required"]) == {"amount_micros", "success_url", "cancel_url", "idempotency_key"}


def test_openapi_names_openai_fields_of_the_raw_bodies() -> None:
    doc = openapi.document()
    body_of = {
        path: doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for path in ("/v1/chat/completions", "/v1/embeddings")
    }
    schemas = doc["components"]["schemas"]
    chat = schemas[body_of["/v1/chat/completions"].rsplit("/", 1)[1]]
    assert chat["required"] == ["model", "messages"]
    assert {"model", "messages", "stream", "max_tokens", "temperature", "tools"} <= set(chat["properties"])
    assert chat["additionalProperties"] is True  # the body stays raw: every field reaches the upstream
    embeddings = schemas[body_of["/v1/embeddings"].rsplit("/", 1)[1]]
    assert embeddings["required"] == ["model", "input"]
    models = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "data" in schemas[models["$ref"].rsplit("/", 1)[1]]["properties"]


def test_gatemesh_openapi_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import main

    assert main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(openapi.render(openapi.document()))


def test_the_edge_exposes_only_services_that_exist() -> None:
    from services.edge.launch import landed, landed_services

    assert landed("auth") and not landed("no_such_service")
    assert set(landed_services()) <= {"auth", "billing", "proxy", "privacy"}
    assert "auth" in landed_services()


def test_an_internal_rpc_is_never_routed_even_with_an_http_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge is the way in from outside: a service-only RPC that got an HTTP rule by
    mistake still has no route (with mutual TLS the edge's certificate would make any
    caller a service)."""
    real = list(http_methods())
    internal = real[0].method.__deepcopy__()
    internal.name = "InternalByMistake"
    internal.options.Extensions[common_pb2.access] = common_pb2.ACCESS_INTERNAL
    unset = real[0].method.__deepcopy__()
    unset.name = "UnsetByMistake"
    unset.options.ClearExtension(common_pb2.access)
    fakes = [
        item.__class__(item.file, item.service, 0, m, 0, item.rule)
        for item, m in ((real[0], internal), (real[0], unset))
    ]
    monkeypatch.setattr(config, "http_methods", lambda: iter([*real, *fakes]))
    services = {real[0].mesh_service: [real[0].service_full_name]}
    paths = {r["match"].get("path") for r in config.routes(files(tmp_path), services)}
    assert f"/{real[0].service_full_name}/{real[0].method.name}" in paths
    assert not {p for p in paths if p and p.endswith(("InternalByMistake", "UnsetByMistake"))}
