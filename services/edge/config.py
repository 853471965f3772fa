"""The Envoy bootstrap of the edge, built from settings and the descriptor set.

One listener (HTTPS when a certificate is configured) runs three HTTP filters: the Lua
error filter (`errors.lua`), the gRPC-JSON transcoder (every service of the mesh that
carries `google.api.http` rules) and the router. After transcoding the request path is
the gRPC method (`/gatemesh.auth.v1.AuthService/SignUp`); the transcoder clears the
route cache, so routes pick the cluster by that path: one route per RPC that has an HTTP
rule, so nothing else (INTERNAL and ADMIN RPCs) is reachable through the edge, not even
by a gRPC client. The only
hand-written routes serve the generated OpenAPI document at `/openapi.json` and the API
reference page (Swagger UI, from the `swagger-ui-bundle-v2` package's files) at `/docs`;
other methods on them are a 405 with `Allow`.

Choices and why (see also FACTS.md "The edge"):
- route `timeout: 0s`: long SSE streams must not be cut after Envoy's default 15 s;
- `max_request_body_size` raised and kept below the services' `grpc_max_message_bytes`,
  or an oversized body comes back as a misleading 429;
- HTTP/2 upstream clusters (gRPC), with circuit-breaker limits high enough for load;
- client limits (`client_limits`): header size and count (431), headers and whole
  request within a time (slowloris, trickled bodies: 408), idle connections closed, an
  HTTP/2 stream cap, and a connection limit in the overload manager, all settings;
- `use_remote_address` and `x-forwarded-for` overwritten with the address Envoy trusts,
  so auth's security log sees the client IP and a client cannot forge it;
- errors from the services get their OpenAI body and status in the Lua filter; Envoy's
  own replies (unknown path, service down, body too large) get the same shape from
  `local_reply_config`. The Lua filter also answers wrong methods (405 + `Allow`) and bad
  JSON bodies before the transcoder, from a table of the routes generated here
  (`lua_source`), accepts a date alone in timestamp query parameters, and drops request
  headers gRPC metadata cannot carry (or that are the mesh's own). `grpc-status` is never
  removed by route config (that turns every error into a 200).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from gatemesh.common.v1 import common_pb2

from . import observability
from .descriptors import HTTP_BODY, HttpMethod, http_methods, messages, query_fields, rest_services
from .settings import MESH_SERVICES, EdgeSettings

F = descriptor_pb2.FieldDescriptorProto
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
LUA = "envoy.filters.http.lua"
TYPE = "@type"
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
# The API reference page's assets: (file in the swagger-ui-bundle-v2 package, content type).
DOCS_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
DOCS_PAGE = "index.html"
DOCS_INIT = "gatemesh-init.js"
STATIC_METHODS = "GET, HEAD"
DRAIN_S = 2.0
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Envoy's local replies: status -> (OpenAI error type, code).
LOCAL_REPLIES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("not_found_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    431: ("invalid_request_error", "request_headers_too_large"),
    408: ("api_error", "timeout"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
    504: ("api_error", "timeout"),
}


@dataclass(frozen=True)
class EdgeFiles:
    """Files the config names, as Envoy will see them (local paths or container paths)."""

    descriptor: str
    openapi: str
    docs: str  # the directory with the API reference page and its assets (see docs.py)


def lua_pattern(template: str) -> str:
    """A path template (`/api/v1/keys/{key_id}`) as an anchored Lua pattern."""
    parts = re.split(r"(\{[^}]+\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            out.append(".+" if "**" in part else "[^/]+")
        else:
            out.append(re.sub(r"([%^$().\[\]*+?-])", r"%\1", part))
    return "^" + "".join(out) + "$"


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_fields(
    fields: Iterable[descriptor_pb2.FieldDescriptorProto], skip: AbstractSet[str] = frozenset()
) -> dict[str, str]:
    """{JSON name: "true" or the nested message's FIELDS key}, proto and lowerCamel names alike
    (the transcoder takes both)."""
    entries: dict[str, str] = {}
    for field in fields:
        if field.name in skip:
            continue
        nested = field.type == F.TYPE_MESSAGE and not field.type_name.startswith(".google.")
        value = lua_string(field.type_name.lstrip(".")) if nested else "true"
        for name in {field.name, field.json_name or field.name}:
            entries[name] = value
    return entries


def lua_table(entries: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{lua_string(k)}] = {v}" for k, v in sorted(entries.items())) + "}"


def body_types(methods: Iterable[HttpMethod]) -> dict[str, descriptor_pb2.DescriptorProto]:
    """The messages a parsed body may hold, by full name (without the leading dot)."""
    index = messages()
    found: dict[str, descriptor_pb2.DescriptorProto] = {}
    pending = [m.method.input_type for m in methods if m.rule.body and m.method.input_type != HTTP_BODY]
    while pending:
        name = pending.pop()
        if name.lstrip(".") in found or name not in index or name.startswith(".google."):
            continue
        found[name.lstrip(".")] = index[name]
        pending.extend(f.type_name for f in index[name].field if f.type == F.TYPE_MESSAGE)
    return found


def lua_tables(methods: Iterable[HttpMethod]) -> str:
    """ROUTES (pattern, method, whether the transcoder parses a JSON body, the FIELDS key of
    its root), FIELDS (the members each body message may have) and TIMESTAMP_PARAMS, for
    errors.lua. A root without the fields its path binds: those come from the path."""
    methods = list(methods)
    index = messages()
    routes, times, fields = [], set(), {}
    for position, item in enumerate(methods):
        verb, template = item.verb_and_path()
        parsed = bool(item.rule.body) and item.method.input_type != HTTP_BODY
        root = "nil"
        if parsed and item.rule.body == "*":
            bound = set(re.findall(r"\{([^}=]+)", template))
            root = lua_string(f"route:{position}")
            fields[f"route:{position}"] = lua_table(lua_fields(index[item.method.input_type].field, bound))
        pattern, method = lua_string(lua_pattern(template)), lua_string(verb.upper())
        routes.append(f"  {{{pattern}, {method}, {str(parsed).lower()}, {root}}},")
        times.update(query_fields(item))
    for name, message in body_types(methods).items():
        fields[name] = lua_table(lua_fields(message.field))
    names = ", ".join(f"[{lua_string(name)}] = true" for name in sorted(times))
    field_lines = "\n".join(f"  [{lua_string(k)}] = {v}," for k, v in sorted(fields.items()))
    return (
        "local ROUTES = {\n" + "\n".join(routes) + "\n}\n"
        "local FIELDS = {\n" + field_lines + "\n}\n"
        "local TIMESTAMP_PARAMS = {" + names + "}\n\n"
    )


def lua_source(mesh_services: Sequence[str] = MESH_SERVICES) -> str:
    methods = [item for item in http_methods() if item.mesh_service in mesh_services]
    return lua_tables(methods) + (files("services.edge") / "errors.lua").read_text()


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def disabled() -> dict[str, Any]:
    return {TYPE: "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


def error_format(kind: str, code: str) -> dict[str, Any]:
    return {
        "json_format": {"error": {"message": "%LOCAL_REPLY_BODY%", "type": kind, "param": None, "code": code}},
        "content_type": "application/json",
    }


def local_reply_config() -> dict[str, Any]:
    mappers = [
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"edge.{status}"}}
                }
            },
            "body_format_override": error_format(kind, code),
        }
        for status, (kind, code) in LOCAL_REPLIES.items()
    ]
    # Any other error Envoy itself replies with; not a default body_format, which would also
    # rewrite the /openapi.json direct response.
    catch_all = {
        "status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 400, "runtime_key": "edge.error"}}}
    }
    mappers.append({"filter": catch_all, "body_format_override": error_format("api_error", "edge_error")})
    return {"mappers": mappers}


def static_routes(path: str, filename: str, content_type: str) -> list[dict[str, Any]]:
    """A file served by Envoy itself for GET and HEAD; any other method is a 405 with Allow."""
    read = {"headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}]}
    served = {
        "match": {"path": path, **read},
        "direct_response": {"status": 200, "body": {"filename": filename}},
        "response_headers_to_add": [header("content-type", content_type)],
        "typed_per_filter_config": {TRANSCODER: disabled(), LUA: disabled()},
    }
    refused = {
        "match": {"path": path},
        "direct_response": {"status": 405, "body": {"inline_string": f"only {STATIC_METHODS} are allowed here"}},
        "response_headers_to_add": [header("allow", STATIC_METHODS)],
        "typed_per_filter_config": {TRANSCODER: disabled(), LUA: disabled()},
    }
    return [served, refused]


def docs_routes(directory: str) -> list[dict[str, Any]]:
    page = f"{directory}/{DOCS_PAGE}"
    result = static_routes(DOCS_PATH, page, "text/html; charset=utf-8")
    result += static_routes(f"{DOCS_PATH}/", page, "text/html; charset=utf-8")
    result += static_routes(f"{DOCS_PATH}/{DOCS_INIT}", f"{directory}/{DOCS_INIT}", DOCS_ASSETS["swagger-ui-bundle.js"])
    for name, content_type in DOCS_ASSETS.items():
        result += static_routes(f"{DOCS_PATH}/{name}", f"{directory}/{name}", content_type)
    return result


def routes(files_: EdgeFiles, services: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The static pages, then one route per RPC with an HTTP rule (its gRPC path, which the
    transcoder leaves a REST call with, or a gRPC client sends). Per RPC, not per service:
    a prefix would forward gRPC to every method of the service, INTERNAL and ADMIN ones too
    (Hold, Settle, VerifyKey; with mutual TLS the edge's client certificate would make any
    caller a service). An INTERNAL RPC is never routed, even with an HTTP rule. Any other
    path has no route: 404."""
    result = static_routes(OPENAPI_PATH, files_.openapi, "application/json") + docs_routes(files_.docs)
    cluster_of = {name: mesh_service for mesh_service, names in services.items() for name in names}
    for item in http_methods():
        cluster = cluster_of.get(item.service_full_name)
        if cluster is not None and item.access not in (common_pb2.ACCESS_UNSPECIFIED, common_pb2.ACCESS_INTERNAL):
            path = f"/{item.service_full_name}/{item.method.name}"
            result.append({"match": {"path": path}, "route": {"cluster": cluster, "timeout": "0s"}})
    return result


def transcoder(settings: EdgeSettings, files_: EdgeFiles, services: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "name": TRANSCODER,
        "typed_config": {
            TYPE: "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": files_.descriptor,
            "services": [name for names in services.values() for name in names],
            "request_validation_options": {"reject_unknown_method": True, "reject_unknown_query_parameters": True},
            "print_options": {"always_print_primitive_fields": True, "preserve_proto_field_names": True},
            "convert_grpc_status": False,
            "case_insensitive_enum_parsing": True,
            "max_request_body_size": settings.edge_max_request_body_bytes,
            "max_response_body_size": settings.grpc_max_message_bytes,
        },
    }


def lua_filter(mesh_services: Sequence[str]) -> dict[str, Any]:
    return {
        "name": LUA,
        "typed_config": {
            TYPE: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": lua_source(mesh_services)},
        },
    }


def seconds(value: float) -> str:
    """A protobuf Duration in JSON form."""
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def client_limits(settings: EdgeSettings) -> dict[str, Any]:
    """What a client may hold and how long it may take, so that slow or idle clients and
    oversized headers are refused early without starving anyone (docs/edge.md "Limits"):
    headers must arrive within `request_headers_timeout` (slowloris), the whole request
    within `request_timeout` (a trickled body; the answer is not limited, streams are long),
    a connection with nothing in flight is closed after `idle_timeout`, and HTTP/2 gets the
    flow-control windows and stream cap Envoy recommends for an edge."""
    return {
        "max_request_headers_kb": settings.edge_max_request_headers_kb,
        "request_headers_timeout": seconds(settings.edge_request_headers_timeout_s),
        "request_timeout": seconds(settings.edge_request_timeout_s),
        "stream_idle_timeout": seconds(settings.edge_stream_idle_timeout_s),
        # After idle_timeout a used connection is drained before it is closed (HTTP/2: the
        # GOAWAY); Envoy's 5 s default kept idle keep-alive connections 8 s past it.
        "drain_timeout": seconds(DRAIN_S),
        "common_http_protocol_options": {
            "idle_timeout": seconds(settings.edge_idle_timeout_s),
            "max_headers_count": settings.edge_max_request_headers,
        },
        "http2_protocol_options": {
            "max_concurrent_streams": settings.edge_max_concurrent_streams,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
    }


def connection_manager(settings: EdgeSettings, files_: EdgeFiles, services: dict[str, list[str]]) -> dict[str, Any]:
    route_config = {
        "name": "edge",
        "max_direct_response_body_size_bytes": 16 * 1024 * 1024,
        "virtual_hosts": [
            {
                "name": "gatemesh",
                "domains": ["*"],
                "routes": routes(files_, services),
                # The client address Envoy trusts (after edge_trusted_hops), never a forged one.
                "request_headers_to_add": [header("x-forwarded-for", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")],
            }
        ],
    }
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            TYPE: HCM_TYPE,
            "stat_prefix": "edge",
            "codec_type": "AUTO",
            "server_name": "gatemesh",
            "use_remote_address": True,
            "xff_num_trusted_hops": settings.edge_trusted_hops,
            "route_config": route_config,
            "local_reply_config": local_reply_config(),
            **client_limits(settings),
            "http_filters": [
                lua_filter(list(services)),
                transcoder(settings, files_, services),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }


def downstream_tls(settings: EdgeSettings) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            TYPE: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": settings.edge_tls_cert_file},
                        "private_key": {"filename": settings.edge_tls_key_file},
                    }
                ],
            },
        },
    }


def upstream_tls(settings: EdgeSettings, host: str) -> dict[str, Any]:
    """TLS to the services, as their own clients use it (mutual when certificates exist)."""
    context: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": settings.tls_ca_file}}}
    if settings.tls_cert_file and settings.tls_key_file:
        context["tls_certificates"] = [
            {
                "certificate_chain": {"filename": settings.tls_cert_file},
                "private_key": {"filename": settings.tls_key_file},
            }
        ]
    context["alpn_protocols"] = ["h2"]
    tls: dict[str, Any] = {
        TYPE: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": context,
    }
    if not is_ip(host):
        tls["sni"] = host
    return {"name": "envoy.transport_sockets.tls", "typed_config": tls}


def cluster(settings: EdgeSettings, name: str) -> dict[str, Any]:
    host, port = split_address(getattr(settings, f"{name}_addr"))
    more = [split_address(address) for address in settings.edge_extra_endpoints.get(name, [])]
    endpoints = [{"endpoint": {"address": socket_address(h, p)}} for h, p in [(host, port), *more]]
    result: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                TYPE: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "10s"}}
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [{"max_connections": 10000, "max_pending_requests": 10000, "max_requests": 10000}]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints}],
        },
    }
    if settings.tls_ca_file:
        result["transport_socket"] = upstream_tls(settings, host)
    return result


def bootstrap(
    settings: EdgeSettings,
    files_: EdgeFiles,
    mesh_services: Sequence[str] | None = None,
    otlp: observability.OtlpTarget | None = None,
) -> dict[str, Any]:
    """The whole Envoy bootstrap as a dict (YAML- and JSON-serialisable); with `otlp`,
    requests are traced and their spans exported there."""
    wanted = [s for s in (mesh_services or settings.edge_services) if s in MESH_SERVICES]
    services = rest_services(wanted)
    manager = connection_manager(settings, files_, services)
    if otlp is not None:
        manager["typed_config"]["tracing"] = observability.tracing(otlp)
    chain: dict[str, Any] = {"filters": [manager]}
    if settings.edge_tls:
        chain["transport_socket"] = downstream_tls(settings)
        # A client that opens a connection and never finishes the handshake is closed too.
        chain["transport_socket_connect_timeout"] = seconds(settings.edge_request_headers_timeout_s)
    listener = {
        "name": "edge",
        "address": socket_address(settings.edge_host, settings.edge_port),
        "enable_reuse_port": False,  # a taken edge_port fails the start instead of sharing it
        "per_connection_buffer_limit_bytes": 1024 * 1024,
        "filter_chains": [chain],
    }
    config: dict[str, Any] = {
        "node": {"id": "gatemesh-edge", "cluster": "gatemesh-edge"},
        "static_resources": {"listeners": [listener], "clusters": [cluster(settings, name) for name in services]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        TYPE: "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": settings.edge_max_connections,
                    },
                }
            ]
        },
    }
    if settings.edge_admin_port:
        config["admin"] = {"address": socket_address("127.0.0.1", settings.edge_admin_port)}
    observe(config, settings, otlp)
    return config


def observe(config: dict[str, Any], settings: EdgeSettings, otlp: observability.OtlpTarget | None) -> None:
    """Add the metrics listener and the clusters that metrics and tracing need."""
    resources = config["static_resources"]
    if settings.edge_metrics_port and settings.edge_admin_port:
        resources["listeners"].append(observability.metrics_listener(settings.edge_host, settings.edge_metrics_port))
        resources["clusters"].append(observability.admin_cluster(settings.edge_admin_port))
    if otlp is not None:
        resources["clusters"].append(observability.otlp_cluster(otlp))


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, width=120)


def write(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(config))
    tmp.replace(path)
    return path


EXAMPLE_FILES = EdgeFiles(
    descriptor="/etc/gatemesh/descriptor.pb", openapi="/etc/gatemesh/openapi.json", docs="/etc/gatemesh/docs"
)


def example_settings() -> EdgeSettings:
    """A multi-host deployment: services by DNS name, HTTPS on 0.0.0.0:8443.

    Built with `model_construct` so that neither the environment nor a data directory
    changes it: `deploy/envoy/envoy.yaml` must be exactly what this produces.
    """
    return EdgeSettings.model_construct(
        auth_addr="auth:50051",
        billing_addr="billing:50052",
        proxy_addr="proxy:50053",
        privacy_addr="privacy:50054",
        edge_host="0.0.0.0",
        edge_port=8443,
        edge_admin_port=9901,
        edge_tls_cert_file="/etc/gatemesh/tls/edge.crt",
        edge_tls_key_file="/etc/gatemesh/tls/edge.key",
        edge_trusted_hops=0,
    )


def example() -> dict[str, Any]:
    return bootstrap(example_settings(), EXAMPLE_FILES)
