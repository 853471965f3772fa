"""What the proxy checks itself in an embeddings body before placing a hold (schemathesis
found `"input": true` reaching the upstream as a 502)."""

from __future__ import annotations

import pytest

from services.proxy.bodies import embedding_input_ok


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1], [2, 3]]])
def test_openai_input_shapes_are_accepted(value: object) -> None:
    assert embedding_input_ok(value)


@pytest.mark.parametrize("value", [None, True, 3, "", [], [True], [1, "a"], [[], [1]], [[1.5]], [-1], {"text": "a"}])
def test_other_inputs_are_refused(value: object) -> None:
    assert not embedding_input_ok(value)
