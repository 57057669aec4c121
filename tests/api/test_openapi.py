"""The OpenAPI document: served, committed, and valid OpenAPI 3.0.3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from routing_engine.entrypoints.api import openapi
from routing_engine.settings import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "openapi.json"


def test_the_committed_document_is_what_the_app_serves(client: TestClient) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert json.loads(Path(COMMITTED).read_text()) == served, (
        "openapi.json is stale: regenerate it with `make openapi`")


def test_the_document_is_valid_openapi_3_0_3(client: TestClient) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert served["openapi"] == "3.0.3"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in OPENAPI_30_VALIDATOR.iter_errors(served)]
    assert not errors, errors[:5]


def test_the_document_is_public_and_every_operation_names_its_security(client: TestClient) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert set(served["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, item in served["paths"].items():
        for method, op in item.items():
            public = op["x-required-role"] == "none"
            assert bool(op["security"]) != public, f"{method} {path}"
            if not public:
                assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


@pytest.mark.parametrize(("given", "expected"), [
    ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"type": "integer", "nullable": True}),
    ({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}, {"allOf": [{"$ref": "#/x"}], "nullable": True}),
    ({"anyOf": [{"enum": ["a"], "type": "string"}, {"type": "null"}]},
     {"enum": ["a", None], "type": "string", "nullable": True}),
    ({"const": True, "type": "boolean"}, {"enum": [True], "type": "boolean"}),
    ({"type": "integer", "exclusiveMinimum": 0}, {"type": "integer", "minimum": 0, "exclusiveMinimum": True}),
    ({"type": "string", "contentMediaType": "application/octet-stream"}, {"type": "string", "format": "binary"}),
    ({"$ref": "#/x", "description": "d"}, {"allOf": [{"$ref": "#/x"}], "description": "d"}),
    ({"type": "string", "examples": ["a", "b"]}, {"type": "string", "example": "a"}),
])
def test_json_schema_2020_12_is_rewritten_in_its_openapi_3_0_spelling(given: dict[str, object],
                                                                       expected: dict[str, object]) -> None:
    assert openapi.downgrade_schema(given) == expected


def test_a_construct_without_a_3_0_spelling_is_an_error_not_a_silent_document() -> None:
    with pytest.raises(ValueError, match="prefixItems"):
        openapi.downgrade({"openapi": "3.1.0", "paths": {}, "components": {"schemas": {
            "T": {"type": "array", "prefixItems": [{"type": "integer"}]}}}})
