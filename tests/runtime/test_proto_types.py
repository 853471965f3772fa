"""Custom options and descriptors read through the runtime's one typed place: the values the
callers (access, validation, the edge) rely on, set and unset."""

from __future__ import annotations

from buf.validate import validate_pb2
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.timestamp_pb2 import Timestamp

from gatemesh.billing.v1 import billing_pb2
from gatemesh.common.v1 import common_pb2
from services.runtime.proto_types import descriptor_of, has_option_extension, option_extension

SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"]


def test_a_method_option_set_and_unset() -> None:
    hold = SERVICE.methods_by_name["Hold"].GetOptions()
    prices = SERVICE.methods_by_name["ListPrices"].GetOptions()
    assert has_option_extension(hold, common_pb2.access)
    assert option_extension(hold, common_pb2.access) == common_pb2.ACCESS_INTERNAL
    assert option_extension(prices, common_pb2.access) == common_pb2.ACCESS_PUBLIC
    assert not has_option_extension(hold, annotations_pb2.http)  # internal: no REST route
    assert has_option_extension(prices, annotations_pb2.http)
    assert option_extension(prices, annotations_pb2.http).get == "/api/v1/prices"


def test_field_options_repeated_and_message() -> None:
    fields = billing_pb2.HoldRequest.DESCRIPTOR.fields_by_name
    account = fields["account_id"].GetOptions()
    assert list(option_extension(account, field_behavior_pb2.field_behavior)) == [field_behavior_pb2.REQUIRED]
    assert option_extension(account, validate_pb2.field).string.pattern.startswith("^[A-Za-z0-9")
    unset = Timestamp.DESCRIPTOR.fields_by_name["seconds"].GetOptions()
    assert list(option_extension(unset, field_behavior_pb2.field_behavior)) == []  # the default: empty
    assert not has_option_extension(unset, validate_pb2.field)


def test_a_descriptor_of_a_message_or_its_class_is_a_descriptor() -> None:
    assert descriptor_of(Timestamp) is descriptor_of(Timestamp()) is Timestamp.DESCRIPTOR
    assert isinstance(descriptor_of(Timestamp), Descriptor)
