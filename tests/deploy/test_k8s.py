"""deploy/k8s validated, not read by eye: every manifest of the base and of the rendered
overlays against Kubernetes' schemas (kubernetes-validate, a pinned version), and
cross-checked against the code: every variable set is a setting the service reads, every
port and probe is where the service listens, every command and image exists."""

from __future__ import annotations

import dataclasses

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    GRPC_SERVICES,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    base_documents,
    config_maps,
    cross_check_env,
    k8s_containers,
    port_of,
    provider_key_variables,
    rendered,
)

SETS = ("base", *OVERLAYS)


def documents(which: str) -> tuple[dict, ...]:
    return rendered(which)


@pytest.mark.parametrize("which", SETS)
def test_every_manifest_is_valid_for_the_pinned_kubernetes_version(which: str) -> None:
    docs = documents(which)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "Job"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_base_files_themselves_are_valid() -> None:
    for doc in base_documents():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_refused() -> None:
    deployment = next(d for d in documents("base") if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def allowed_extra(docs: tuple[dict, ...]) -> set[str]:
    return provider_key_variables(config_maps(docs)["gatemesh-settings"]["gatemesh.yaml"])


@pytest.mark.parametrize("which", SETS)
def test_every_variable_is_a_setting_the_service_reads(which: str) -> None:
    docs = documents(which)
    containers = k8s_containers(docs)
    assert {c.service for c in containers} >= {*GRPC_SERVICES, "edge"}
    assert cross_check_env(containers, allowed_extra(docs)) == []


def test_a_renamed_setting_is_caught() -> None:
    docs = documents("base")
    containers = k8s_containers(docs)
    proxy = next(c for c in containers if c.where == "proxy/proxy")
    renamed = {
        ("GATEMESH_PROXY_METRICS_PORTS" if k == "GATEMESH_PROXY_METRICS_PORT" else k): v for k, v in proxy.env.items()
    }
    problems = cross_check_env([dataclasses.replace(proxy, env=renamed)], allowed_extra(docs))
    assert problems == ["proxy/proxy: GATEMESH_PROXY_METRICS_PORTS is not a setting of proxy"]
    moved = dataclasses.replace(proxy, command=["python", "-m", "services.proxies"])
    assert cross_check_env([moved], set()) == ["proxy/proxy: no module services.proxies.__main__"]


@pytest.mark.parametrize("which", SETS)
def test_ports_probes_and_addresses_match_what_the_services_listen_on(which: str) -> None:
    docs = documents(which)
    env = config_maps(docs)["gatemesh-env"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for c in k8s_containers(docs):
        if c.service in GRPC_SERVICES and not c.where.startswith("gatemesh-migrate"):
            grpc_port = port_of(c.env["GATEMESH_LISTEN"] or "")
            assert c.ports["grpc"] == grpc_port, c.where
            assert port_of(env[f"GATEMESH_{c.service.upper()}_ADDR"]) == grpc_port, c.where
            assert {p["grpc"]["port"] for p in c.probes} == {grpc_port}, c.where
            assert len(c.probes) >= 2, f"{c.where}: readiness and liveness"
            service_ports = {p["name"]: p for p in services[c.service]["spec"]["ports"]}
            assert service_ports["grpc"]["port"] == grpc_port
            assert env[f"GATEMESH_{c.service.upper()}_ADDR"].split(":")[0] == c.service
        if c.service == "edge":
            assert c.ports["http"] == int(c.env["GATEMESH_EDGE_PORT"] or 0)
            assert all(p["httpGet"]["port"] == "http" and p["httpGet"]["path"] == "/openapi.json" for p in c.probes)
        if c.service in (*GRPC_SERVICES, "edge") and not c.where.startswith("gatemesh-migrate"):
            metrics = int(c.env[f"GATEMESH_{c.service.upper()}_METRICS_PORT"] or 0)
            assert metrics and c.ports["metrics"] == metrics, c.where
            assert c.annotations["prometheus.io/port"] == str(metrics), c.where


@pytest.mark.parametrize("which", SETS)
def test_images_secrets_and_selectors_refer_to_what_exists(which: str) -> None:
    docs = documents(which)
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    image = kustomization["images"][0]["newName"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    for c in k8s_containers(docs):
        if c.service is not None:
            assert c.image.startswith(image + ":"), (c.where, c.image)
    assert all(value.count("REPLACE_ME") >= 1 for value in secret["stringData"].values()), "placeholders only"
    for doc in docs:
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret["stringData"], ref
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    for doc in docs:
        if doc["kind"] == "PodDisruptionBudget":
            wanted = doc["spec"]["selector"]["matchLabels"]
            assert any(wanted.items() <= labels.items() for labels in pods), doc["metadata"]["name"]
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]["name"]
            assert target == "proxy" and any(d["metadata"]["name"] == target for d in docs if d["kind"] == "Deployment")


def test_the_migration_job_migrates_every_service_and_serves_nothing() -> None:
    containers = [c for c in k8s_containers(documents("production")) if c.where.startswith("gatemesh-migrate")]
    assert sorted(c.service for c in containers) == sorted(GRPC_SERVICES)
    assert all(c.env["GATEMESH_MIGRATE_ONLY"] == "true" for c in containers)


def test_background_work_runs_once_where_it_is_not_leased() -> None:
    """Billing's sweepers and chain watcher: one worker replica (Recreate); its API replicas
    run none. Auth, proxy and privacy run theirs on every replica (idempotent or leased)."""
    docs = documents("production")
    by_name = {c.where.split("/")[0]: c for c in k8s_containers(docs)}
    assert by_name["billing"].env["GATEMESH_RUN_BACKGROUND"] == "false"
    assert by_name["billing-worker"].env["GATEMESH_RUN_BACKGROUND"] == "true"
    worker = next(d for d in docs if d["metadata"]["name"] == "billing-worker" and d["kind"] == "Deployment")
    assert worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"]["type"] == "Recreate"


def test_the_collector_config_is_the_one_in_deploy_otel() -> None:
    collector = config_maps(documents("base"))["otel-collector"]["collector.yaml"]
    assert yaml.safe_load(collector) == yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())


def test_overlays_scale_as_documented() -> None:
    replicas = {
        which: {d["metadata"]["name"]: d["spec"].get("replicas") for d in documents(which) if d["kind"] == "Deployment"}
        for which in OVERLAYS
    }
    assert set(replicas["dev"].values()) == {1}
    assert replicas["production"]["edge"] == 3 and replicas["production"]["auth"] == 3
    hpa = next(d for d in documents("production") if d["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 30)
