"""Generate Python code and the descriptor set from `protos/`.

Output goes to `gen/` (committed; `make gen-check` fails CI when it drifts from the protos):
`gen/gatemesh/...` holds `_pb2.py`, `_pb2.pyi` and `_pb2_grpc.py` modules that import each
other by proto path (`from gatemesh.auth.v1 import auth_pb2`), which works because `gen/`
is a package root that `pyproject.toml` installs. `gen/gatemesh/descriptor.pb` is the
descriptor set (with imports and source info) that Envoy's transcoder and the OpenAPI
generator read. The vendored `google/api` and `google/rpc` protos are not generated: the
`googleapis-common-protos` package provides their Python modules. `buf/validate/validate.proto`
(vendored by `scripts/vendor_protovalidate.py`) is: `protovalidate` imports
`buf.validate.validate_pb2`, and no wheel carries it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
OUT = ROOT / "gen"
# Vendored protos whose Python modules no installed package provides.
VENDORED_GENERATED = ["buf/validate/validate.proto"]


def proto_files() -> list[str]:
    """The project's own protos, as paths relative to `protos/`."""
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "gatemesh").rglob("*.proto"))


def well_known_include() -> str:
    """grpcio-tools ships google/protobuf/*.proto; protoc needs it on the include path."""
    return str(Path(protoc.__file__).parent / "_proto")


def generate(out: Path) -> None:
    """Run protoc into `out`, then add the `__init__.py` files protoc does not write."""
    if out.exists():
        shutil.rmtree(out)
    (out / "gatemesh").mkdir(parents=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{well_known_include()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={out / 'gatemesh' / 'descriptor.pb'}",
        "--include_imports",
        "--include_source_info",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    vendored = ["protoc", f"-I{THIRD_PARTY}", f"-I{well_known_include()}", f"--python_out={out}", f"--pyi_out={out}"]
    if protoc.main([*vendored, *VENDORED_GENERATED]) != 0:
        raise SystemExit("protoc failed on the vendored protos")
    packages = [p for top in ("gatemesh", "buf") for p in [out / top, *(out / top).rglob("*")] if p.is_dir()]
    for package in packages:
        (package / "__init__.py").touch()


def main() -> int:
    generate(OUT)
    print(f"generated {len(proto_files())} protos into {OUT.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
