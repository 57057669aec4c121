"""Property-based run of the whole OpenAPI document against the app in process, as admin:
valid and invalid requests alike must never end in a 5xx, and every answer must match the
document (status codes listed, bodies of the documented schema).

Bounded so CI stays fast: a few examples per operation (WARP_SCHEMATHESIS_EXAMPLES raises it).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from routing_engine.api.principals import Role
from tests.api.conftest import Api, Keys, make_carrier

EXAMPLES = int(os.environ.get("WARP_SCHEMATHESIS_EXAMPLES", "6"))


@pytest.fixture
def api_schema(app: FastAPI) -> Any:
    return schemathesis.from_asgi("/api/v1/openapi.json", app, validate_schema=True,
                                  data_generation_methods=[schemathesis.DataGenerationMethod.positive,
                                                           schemathesis.DataGenerationMethod.negative])


@pytest.fixture
def admin_key(api_keys: Keys, client: Any) -> str:
    key = api_keys.make(Role.ADMIN, name="fuzz")
    make_carrier(Api(client, key))  # something for the generated ids to miss or, rarely, hit
    return key


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_no_request_makes_the_api_fail_or_stray_from_its_document(case: Any, admin_key: str) -> None:
    case.call_and_validate(headers={"X-API-Key": admin_key},
                           checks=(not_a_server_error, status_code_conformance, response_schema_conformance))
