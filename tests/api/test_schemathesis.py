"""Property-based run of the whole OpenAPI document against the app in process, as admin:
valid and invalid requests alike must never end in a 5xx, and every answer must match the
document (status codes listed, bodies of the documented schema).

Bounded so CI stays fast: a few examples per operation, the same ones every run. For a deeper
hunt: WARP_SCHEMATHESIS_EXAMPLES=200 WARP_SCHEMATHESIS_RANDOM=1.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from routing_engine.entrypoints.api.principals import Role
from tests.api.conftest import Api, Keys, make_carrier

EXAMPLES = int(os.environ.get("WARP_SCHEMATHESIS_EXAMPLES", "6"))
KNOWN_IDS: list[str] = []  # ids of rows the fixture made, so generated requests also hit real rows


def _known(index: int) -> str:
    return KNOWN_IDS[index % len(KNOWN_IDS)] if KNOWN_IDS else str(uuid.UUID(int=index))


schemathesis.openapi.format("uuid", st.one_of(st.uuids().map(str), st.integers(0, 10_000).map(_known)))


@pytest.fixture
def api_schema(app: FastAPI) -> Any:
    return schemathesis.from_asgi("/api/v1/openapi.json", app, validate_schema=True,
                                  data_generation_methods=[schemathesis.DataGenerationMethod.positive,
                                                           schemathesis.DataGenerationMethod.negative])


@pytest.fixture
def admin_key(api_keys: Keys, client: Any, api_db: psycopg.Connection) -> str:
    key = api_keys.make(Role.ADMIN, name="fuzz")
    make_carrier(Api(client, key))
    KNOWN_IDS[:] = [str(r[0]) for r in api_db.execute(
        "SELECT id FROM accounts.accounts UNION ALL SELECT id FROM trunks.trunks UNION ALL"
        " SELECT id FROM trunks.trunk_access_lists UNION ALL SELECT id FROM numbers.number_inventory UNION ALL"
        " SELECT id FROM routing.providers UNION ALL SELECT id FROM routing.provider_gateways UNION ALL"
        " SELECT id FROM routing.routing_plans UNION ALL SELECT id FROM billing.rate_plans UNION ALL"
        " SELECT id FROM billing.rate_plan_rates")]
    return key


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize="WARP_SCHEMATHESIS_RANDOM" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_request_makes_the_api_fail_or_stray_from_its_document(case: Any, admin_key: str) -> None:
    case.call_and_validate(headers={"X-API-Key": admin_key},
                           checks=(not_a_server_error, status_code_conformance, response_schema_conformance))
