"""deploy/compose.yaml validated against the compose specification's schema and
cross-checked against the code (settings, ports, health checks, commands, images); the
Prometheus scrape config names every metrics port the stack opens.

The schema is tests/deploy/compose_spec.json, vendored unchanged from Debian's
docker-compose 1.29.2 package (`/usr/lib/python3/dist-packages/compose/config/compose_spec.json`,
the compose-spec project's JSON schema as that release shipped it): the version the stack's
own docker-compose reads, and no Python package ships the schema on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    GRPC_SERVICES,
    compose_containers,
    compose_file,
    cross_check_env,
    port_of,
    provider_key_variables,
    settings_class,
)
from tests.support import ROOT

SCHEMA = Path(__file__).with_name("compose_spec.json")


def validator() -> jsonschema.Validator:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_follows_the_compose_specification() -> None:
    errors = sorted(validator().iter_errors(compose_file()), key=str)
    assert errors == []


def test_a_wrong_compose_file_is_refused() -> None:
    broken = compose_file()
    broken["services"]["proxy"]["healthcheck"]["retries"] = "many"
    broken["services"]["proxy"]["restart_policy"] = "always"
    assert len(list(validator().iter_errors(broken))) >= 2


def settings_file() -> str:
    return (DEPLOY / "gatemesh.yaml").read_text()


def test_every_variable_is_a_setting_the_service_reads() -> None:
    containers = compose_containers()
    assert {c.service for c in containers} >= {*GRPC_SERVICES, "edge"}
    assert cross_check_env(containers, provider_key_variables(settings_file())) == []


def test_the_settings_file_holds_only_settings() -> None:
    keys = set(yaml.safe_load(settings_file()))
    readers = {name: set(settings_class(name).model_fields) for name in (*GRPC_SERVICES, "edge")}
    assert keys <= set().union(*readers.values())
    assert "providers" in readers["proxy"] and "prices" in readers["billing"]


def test_health_checks_and_addresses_match_what_each_service_listens_on() -> None:
    for c in compose_containers():
        if c.service in GRPC_SERVICES:
            own = port_of(c.env[f"GATEMESH_{c.service.upper()}_ADDR"] or "")
            (check,) = c.probes
            assert check["test"][1:4] == ["python", "-m", "services.runtime.probe"], c.where
            assert port_of(check["test"][4]) == own, c.where
        if c.service == "edge":
            (check,) = c.probes
            assert f":{c.env['GATEMESH_EDGE_PORT']}/openapi.json" in " ".join(check["test"])


def test_prometheus_scrapes_every_metrics_port_the_stack_opens() -> None:
    opened = {
        int(value)
        for c in compose_containers()
        for name, value in c.env.items()
        if re.fullmatch(r"GATEMESH_[A-Z]+_METRICS_PORT", name) and value
    }
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {port_of(t) for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert len(opened) == 5
    assert opened == scraped


def test_images_are_the_ones_make_images_builds() -> None:
    makefile = (ROOT / "Makefile").read_text()
    services = compose_file()["services"]
    for name, service in services.items():
        if "profiles" in service:
            continue  # pulled where a registry is reachable (see the file's comment)
        tag = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", service["image"])
        assert tag, name
        assert f"-t {tag.group(1)} ." in makefile, name
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / "infra" / "Dockerfile").is_file()


@pytest.mark.parametrize("name", ["auth", "billing", "proxy", "privacy", "edge"])
def test_every_mesh_container_uses_host_networking_and_the_shared_settings(name: str) -> None:
    service = compose_file()["services"][name]
    assert service["network_mode"] == "host"
    assert service["environment"]["GATEMESH_CONFIG"] == "/etc/gatemesh/gatemesh.yaml"
