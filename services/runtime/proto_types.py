"""Protobuf descriptors and custom options, typed in one place.

Two mismatches between the stubs, each cast once here so that the callers (access, request
validation, the participants, the edge's descriptors and OpenAPI document) need no ignore:

- protoc's generated .pyi types a custom option (`gatemesh.common.v1.access`,
  `google.api.http`, `buf.validate.field`, `google.api.field_behavior`) as a plain
  FieldDescriptor; types-protobuf's `HasExtension` and `Extensions[...]` take its stub-only
  extension descriptor type instead.
- types-protobuf gives a message's `DESCRIPTOR` as the pure-Python Descriptor or upb's twin
  of it, while its own `Any.Is` and every other API take the Python class. At run time both
  pass `isinstance(d, Descriptor)` (protobuf's descriptor metaclass), so the cast is true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

if TYPE_CHECKING:
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor


def option_extension(options: Message, extension: FieldDescriptor) -> Any:
    """The custom option `extension` on a descriptor's `options` (`options.Extensions[...]`):
    its default when unset (0, an empty message, an empty list)."""
    return options.Extensions[_handle(extension)]


def has_option_extension(options: Message, extension: FieldDescriptor) -> bool:
    """Whether the singular custom option `extension` is set on `options` (`HasExtension`;
    protobuf refuses the question for a repeated one)."""
    return options.HasExtension(_handle(extension))


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    """A message's (or message class's) descriptor, as the Descriptor every API takes."""
    return cast(Descriptor, message.DESCRIPTOR)


def _handle(extension: FieldDescriptor) -> _ExtensionFieldDescriptor[Any, Any]:
    return cast("_ExtensionFieldDescriptor[Any, Any]", extension)
