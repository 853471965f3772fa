"""Vendor `buf/validate/validate.proto` from the npm package `@bufbuild/protovalidate`.

buf cannot fetch modules here, and neither protovalidate wheel carries the proto or its
`_pb2` module. The npm package's generated `validate_pb.js` embeds the file's serialized
`FileDescriptorProto` (base64, as protobuf-es writes it: dependencies, default JSON names
and source info stripped). This script decodes it, restores the dependencies from the
`fileDesc(..., [deps])` call, prints the descriptor back as proto2 source into
`protos/third_party/buf/validate/validate.proto`, and proves the round trip: protoc
compiles the printed file to exactly the embedded descriptor. The printed file carries no
comments (the descriptor has none); every rule and its CEL expression is there.

Why a printer of our own: no maintained Python library turns a descriptor back into a
.proto file, and buf lint needs source. It covers what validate.proto uses (proto2
messages, nested enums, oneofs, extensions, reserved ranges, extension ranges, options
with message values) and fails loudly on anything else, via the round-trip check.

Run `python scripts/vendor_protovalidate.py` after `npm install` when the npm package's
version in package.json changes; `--check` only verifies the committed file.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import re
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_encoding, text_format
from google.protobuf.descriptor import FieldDescriptor
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "node_modules/@bufbuild/protovalidate/dist/esm/gen/buf/validate/validate_pb.js"
TARGET = ROOT / "protos" / "third_party" / "buf" / "validate" / "validate.proto"
F = descriptor_pb2.FieldDescriptorProto
LABELS = {F.LABEL_OPTIONAL: "optional", F.LABEL_REPEATED: "repeated", F.LABEL_REQUIRED: "required"}
TYPES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in F.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}
MAX_FIELD = 536870912  # exclusive end of `to max` ranges


def embedded_descriptor(source: str) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor embedded in protobuf-es generated code, with its dependencies restored."""
    match = re.search(r'fileDesc\("([A-Za-z0-9+/]+)"(?:, \[([A-Za-z0-9_., ]*)\])?\)', source)
    if match is None:
        raise SystemExit("no fileDesc(...) call found in validate_pb.js")
    data = match.group(1) + "=" * (-len(match.group(1)) % 4)
    fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(data))
    for dep in (match.group(2) or "").split(","):
        name = dep.strip().rpartition(".")[2].removeprefix("file_")
        if name:
            fdp.dependency.append(_dependency_path(name))
    return fdp


def _dependency_path(js_name: str) -> str:
    """`google_protobuf_field_mask` -> `google/protobuf/field_mask.proto` (well-known types only)."""
    if not js_name.startswith("google_protobuf_"):
        raise SystemExit(f"unexpected dependency {js_name}: only well-known types are supported")
    return "google/protobuf/" + js_name.removeprefix("google_protobuf_") + ".proto"


class Printer:
    """Prints a FileDescriptorProto as .proto source; options are read back through a pool
    that holds the file, so its own extensions (`(buf.validate.predefined)`) print by name."""

    def __init__(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        self.fdp = fdp
        # In the default pool, where the runtime's option classes live, so that parsing an
        # option message again resolves the file's own extensions by number.
        pool = descriptor_pool.Default()
        pool.Add(fdp)
        message_factory.GetMessageClassesForFiles([fdp.name], pool)
        self.lines: list[str] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text if text else "")

    def render(self) -> str:
        fdp = self.fdp
        self.emit(0, "// Vendored by scripts/vendor_protovalidate.py from @bufbuild/protovalidate (Apache-2.0).")
        self.emit(0, "// Generated from the package's embedded descriptor: do not edit.")
        self.emit(0, f'syntax = "{fdp.syntax or "proto2"}";')
        self.emit(0, "")
        self.emit(0, f"package {fdp.package};")
        self.emit(0, "")
        for dep in fdp.dependency:
            self.emit(0, f'import "{dep}";')
        self.emit(0, "")
        self.options(0, fdp.options)
        for message in fdp.message_type:
            self.emit(0, "")
            self.message(0, message, f"{fdp.package}.{message.name}")
        for enum in fdp.enum_type:
            self.emit(0, "")
            self.enum(0, enum)
        self.extensions(0, fdp.extension)
        return "\n".join(self.lines) + "\n"

    def message(self, depth: int, message: descriptor_pb2.DescriptorProto, full_name: str) -> None:
        self.emit(depth, f"message {message.name} {{")
        self.options(depth + 1, message.options)
        printed_oneofs: set[int] = set()
        for field in message.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                if field.oneof_index in printed_oneofs:
                    continue
                printed_oneofs.add(field.oneof_index)
                self.oneof(depth + 1, message, field.oneof_index)
                continue
            self.field(depth + 1, field, label=True)
        for nested in message.nested_type:
            self.message(depth + 1, nested, f"{full_name}.{nested.name}")
        for enum in message.enum_type:
            self.enum(depth + 1, enum)
        for r in message.extension_range:
            end = "max" if r.end == MAX_FIELD else str(r.end - 1)
            self.emit(depth + 1, f"extensions {r.start} to {end};")
        self.reserved(depth + 1, message.reserved_range, message.reserved_name, exclusive_end=True)
        self.extensions(depth + 1, message.extension)
        self.emit(depth, "}")

    def oneof(self, depth: int, message: descriptor_pb2.DescriptorProto, index: int) -> None:
        oneof = message.oneof_decl[index]
        self.emit(depth, f"oneof {oneof.name} {{")
        self.options(depth + 1, oneof.options)
        for field in message.field:
            if field.HasField("oneof_index") and field.oneof_index == index:
                self.field(depth + 1, field, label=False)
        self.emit(depth, "}")

    def field(self, depth: int, field: F, label: bool) -> None:
        kind = field.type_name if field.type_name else TYPES[field.type]
        prefix = f"{LABELS[field.label]} " if label else ""
        extras = []
        if field.HasField("default_value"):
            value = field.default_value
            extras.append(f'default = "{value}"' if field.type == F.TYPE_STRING else f"default = {value}")
        if field.HasField("json_name"):
            extras.append(f'json_name = "{field.json_name}"')
        extras += self.option_items(field.options)
        suffix = f" [{', '.join(extras)}]" if extras else ""
        self.emit(depth, f"{prefix}{kind} {field.name} = {field.number}{suffix};")

    def enum(self, depth: int, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.emit(depth, f"enum {enum.name} {{")
        for value in enum.value:
            self.emit(depth + 1, f"{value.name} = {value.number};")
        self.reserved(depth + 1, enum.reserved_range, enum.reserved_name, exclusive_end=False)
        self.emit(depth, "}")

    def reserved(self, depth: int, ranges, names, exclusive_end: bool) -> None:  # type: ignore[no-untyped-def]
        for r in ranges:
            end = r.end - 1 if exclusive_end else r.end
            self.emit(depth, f"reserved {r.start};" if end == r.start else f"reserved {r.start} to {end};")
        for name in names:
            self.emit(depth, f'reserved "{name}";')

    def extensions(self, depth: int, extensions) -> None:  # type: ignore[no-untyped-def]
        by_extendee: dict[str, list[F]] = {}
        for ext in extensions:
            by_extendee.setdefault(ext.extendee, []).append(ext)
        for extendee, fields in by_extendee.items():
            self.emit(depth, "")
            self.emit(depth, f"extend {extendee} {{")
            for ext in fields:
                copy = F()
                copy.CopyFrom(ext)
                copy.ClearField("json_name")  # protoc derives it again
                self.field(depth + 1, copy, label=True)
            self.emit(depth, "}")

    def options(self, depth: int, options) -> None:  # type: ignore[no-untyped-def]
        for item in self.option_items(options):
            self.emit(depth, f"option {item};")

    def option_items(self, options) -> list[str]:  # type: ignore[no-untyped-def]
        items = []
        resolved = type(options).FromString(options.SerializeToString())
        for fd, value in resolved.ListFields():
            name = f"({fd.full_name})" if fd.is_extension else fd.name
            values = value if fd.is_repeated else [value]
            items.extend(f"{name} = {_literal(fd, v)}" for v in values)
        return items


def _literal(fd: FieldDescriptor, value: object) -> str:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        body = text_format.MessageToString(value, as_one_line=True)  # type: ignore[arg-type]
        return "{" + (f" {body} " if body else "") + "}"
    if fd.type == FieldDescriptor.TYPE_STRING:
        return '"' + text_encoding.CEscape(str(value), as_utf8=True) + '"'
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[int(value)].name  # type: ignore[call-overload]
    return str(value)


def _import_well_known() -> None:
    """Load the well-known types validate.proto imports into the default pool."""
    from google.protobuf import descriptor_pb2 as _d  # noqa: F401
    from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2  # noqa: F401


def compiled(proto: Path, include: Path) -> descriptor_pb2.FileDescriptorProto:
    """What protoc makes of the printed file."""
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        name = str(proto.relative_to(include))
        args = ["protoc", f"-I{include}", f"-I{well_known}", f"--descriptor_set_out={out}", name]
        if protoc.main(args) != 0:
            raise SystemExit("protoc could not compile the printed validate.proto")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]


def stripped(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor as protobuf-es embeds it: no source info, no default JSON names."""
    # Parsed again, now that the pool knows validate.proto's extensions, so that options
    # compare as fields, not as unknown bytes.
    copy = descriptor_pb2.FileDescriptorProto.FromString(fdp.SerializeToString())
    copy.ClearField("source_code_info")

    def strip(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            if field.json_name == _camel(field.name):
                field.ClearField("json_name")
        for nested in message.nested_type:
            strip(nested)

    for message in copy.message_type:
        strip(message)
    return copy


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed file, write nothing")
    args = parser.parse_args()
    _import_well_known()
    embedded = embedded_descriptor(SOURCE.read_text())
    text = Printer(embedded).render()
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} differs from the npm package: run this script", file=sys.stderr)
            return 1
    else:
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        TARGET.write_text(text)
    again = stripped(compiled(TARGET, ROOT / "protos" / "third_party"))
    want = stripped(embedded)
    if again != want:
        diff = difflib.unified_diff(str(want).splitlines(), str(again).splitlines(), "embedded", "printed", lineterm="")
        print("\n".join(list(diff)[:80]), file=sys.stderr)
        raise SystemExit("round trip failed: the printed proto does not compile to the embedded descriptor")
    print(f"{TARGET.relative_to(ROOT)}: round trip OK ({len(embedded.message_type)} messages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
