"""The public REST edge: Envoy's gRPC-JSON transcoder configured from the protos.

`config` builds the Envoy bootstrap, `openapi` the OpenAPI document, `launch` starts Envoy
for `gatemesh up`; `python -m services.edge` writes the config and execs Envoy.
"""
