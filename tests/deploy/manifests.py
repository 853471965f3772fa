"""Reading the deployment files the way the cluster and compose will: every Kubernetes
document (base and rendered overlays), the compose file, and what each container is told.

`cross_check_*` return a list of problems (empty when the files agree with the code), so a
test can also show that a wrong manifest is caught.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import GatemeshSettings
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.30.0"  # the schemas manifests are validated against (kubernetes-validate)
# Standard variables the OpenTelemetry SDK and Envoy config generator read (not settings).
OTEL_VARIABLES = {
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
}
# Read by the runtime itself rather than a settings field: the YAML file to load.
RUNTIME_VARIABLES = {"GATEMESH_CONFIG"}
GRPC_SERVICES = ("auth", "billing", "proxy", "privacy")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_documents() -> list[dict[str, Any]]:
    """Every document of the files the base kustomization lists."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_all(K8S / "base" / name)]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl is needed to render the overlays (Debian: apt-get install kubernetes-client)")
    return found


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of an overlay (or of the base), its documents."""
    path = K8S / ("base" if overlay == "base" else f"overlays/{overlay}")
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def compose_file() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@dataclass
class Container:
    """A container as its manifest runs it: where, which command, which environment."""

    where: str
    command: list[str]
    env: dict[str, str | None]  # None: the value comes from a Secret
    ports: dict[str, int] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    image: str = ""

    @property
    def service(self) -> str | None:
        """`auth` for `python -m services.auth`, None for anything else (Envoy's collector...)."""
        if self.command[:2] == ["python", "-m"] and self.command[2].startswith("services."):
            return self.command[2].split(".", 1)[1]
        return None


def config_maps(docs: Documents) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


Documents = list[dict[str, Any]] | tuple[dict[str, Any], ...]


def pod_specs(docs: Documents) -> Iterator[tuple[str, dict[str, Any], dict]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            template = doc["spec"]["template"]
            yield doc["metadata"]["name"], template["spec"], template.get("metadata", {}).get("annotations", {})


def k8s_containers(docs: Documents) -> list[Container]:
    maps = config_maps(docs)
    found = []
    for workload, spec, pod_annotations in pod_specs(docs):
        for c in spec["containers"]:
            env: dict[str, str | None] = {}
            for source in c.get("envFrom", []):
                env.update(maps[source["configMapRef"]["name"]])
            for item in c.get("env", []):
                env[item["name"]] = item.get("value")
            found.append(
                Container(
                    where=f"{workload}/{c['name']}",
                    command=list(c.get("command") or []),
                    env=env,
                    ports={p.get("name", str(p["containerPort"])): p["containerPort"] for p in c.get("ports", [])},
                    probes=[c[k] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in c],
                    annotations=pod_annotations,
                    image=c["image"],
                )
            )
    return found


def compose_containers() -> list[Container]:
    found = []
    for name, service in compose_file()["services"].items():
        command = service.get("command") or []
        found.append(
            Container(
                where=f"compose/{name}",
                command=list(command) if isinstance(command, list) else command.split(),
                env={k: str(v) for k, v in (service.get("environment") or {}).items()},
                probes=[service["healthcheck"]] if "healthcheck" in service else [],
                image=service.get("image", ""),
            )
        )
    return found


def settings_class(service: str) -> type[GatemeshSettings]:
    """The settings class `services.<service>.settings` defines (its service reads it)."""
    module = importlib.import_module(f"services.{service}.settings")
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, GatemeshSettings) and cls is not GatemeshSettings and cls.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services.{service}.settings defines {classes}"
    return classes[0]


def setting_variables(service: str) -> set[str]:
    return {f"GATEMESH_{name.upper()}" for name in settings_class(service).model_fields}


def provider_key_variables(settings_yaml: str) -> set[str]:
    """The variables the configured providers read their keys from (`api_key_env`)."""
    data = yaml.safe_load(settings_yaml) or {}
    return {p["api_key_env"] for p in data.get("providers", []) if p.get("api_key_env")}


def module_exists(service: str) -> bool:
    try:
        return importlib.util.find_spec(f"services.{service}.__main__") is not None
    except ModuleNotFoundError:
        return False


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def cross_check_env(containers: list[Container], allowed_extra: set[str]) -> list[str]:
    """Every variable a container is given is a setting its service reads (or a standard
    OpenTelemetry variable, or a provider key variable); every command runs a service."""
    problems = []
    for c in containers:
        if c.service is None:
            continue
        if not module_exists(c.service):
            problems.append(f"{c.where}: no module services.{c.service}.__main__")
            continue
        known = setting_variables(c.service) | OTEL_VARIABLES | RUNTIME_VARIABLES | allowed_extra
        problems += [f"{c.where}: {name} is not a setting of {c.service}" for name in sorted(set(c.env) - known)]
    return problems
