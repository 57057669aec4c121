"""OpenAPI: the API's document, in OpenAPI 3.0.3, served at /api/v1/openapi.json and committed
as openapi.json at the project root.

FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12). Everything the models here use has a 3.0
spelling, so the document is rewritten: ``anyOf [X, null]`` becomes X with ``nullable``,
``const`` becomes a one-value ``enum``, numeric ``exclusiveMinimum`` the boolean form,
``examples`` one ``example``, a ``$ref`` with siblings an ``allOf``, an upload's
``contentMediaType`` ``format: binary``. Anything left that 3.0 lacks is an error here, not a
surprise for a client generator. Each operation also states its access policy
(``x-required-role``, ``x-customer-scoped``).

    python -m routing_engine.entrypoints.api.openapi > openapi.json     # regenerate the committed copy
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from routing_engine.entrypoints.api.principals import Access

VERSION = "3.0.3"
_NOT_IN_30 = {"prefixItems", "unevaluatedProperties", "dependentRequired", "dependentSchemas", "$defs",
              "contentMediaType", "contentEncoding", "if", "then", "else", "propertyNames", "const"}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) == 1


def downgrade_schema(schema: Any) -> Any:
    """A JSON Schema 2020-12 fragment as an OpenAPI 3.0 Schema Object."""
    if isinstance(schema, list):
        return [downgrade_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: downgrade_schema(v) if k not in ("example", "default", "enum") else v for k, v in schema.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and any(_is_null(o) for o in options):
            rest = [o for o in options if not _is_null(o)]
            del out[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out = {**rest[0], **out}
            elif len(rest) == 1:
                out["allOf"] = rest
            else:
                out[key] = rest
            out["nullable"] = True
            if "enum" in out:  # 3.0.3: a nullable enum lists null among its values
                out["enum"] = [*out["enum"], None]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out and isinstance(out["examples"], list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[limit] = out.pop(bound)
            out[bound] = True
    if "contentMediaType" in out:
        out.pop("contentMediaType")
        out.pop("contentEncoding", None)
        out["format"] = "binary"
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


def downgrade(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a FastAPI 3.1 document as 3.0.3 (schemas wherever they occur)."""

    def walk(node: Any, in_schema: bool) -> Any:
        if isinstance(node, list):
            return [walk(n, in_schema) for n in node]
        if not isinstance(node, dict):
            return node
        if in_schema:
            return downgrade_schema(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "schema":
                out[key] = downgrade_schema(value)
            elif key == "schemas" and isinstance(value, dict):
                out[key] = {name: downgrade_schema(s) for name, s in value.items()}
            else:
                out[key] = walk(value, False)
        return out

    converted: dict[str, Any] = walk(document, False)
    converted["openapi"] = VERSION
    converted.pop("jsonSchemaDialect", None)
    converted.pop("webhooks", None)
    leftovers = sorted(_leftovers(converted.get("components", {})) | _leftovers(converted.get("paths", {})))
    if leftovers:
        raise ValueError(f"OpenAPI 3.0 has no spelling for {leftovers}")
    return converted


def _leftovers(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("type") == "null" or isinstance(node.get("type"), list):
            found.add("type: null")
        for key, value in node.items():
            if key in _NOT_IN_30:
                found.add(key)
            if key == "properties" and isinstance(value, dict):  # keys are property names
                for schema in value.values():
                    found |= _leftovers(schema)
            elif key not in ("example", "default", "enum"):
                found |= _leftovers(value)
    elif isinstance(node, list):
        for item in node:
            found |= _leftovers(item)
    return found


def access_of(route: APIRoute) -> Access | None:
    """The policy a route declares through its ``allow()`` dependency, if any."""
    pending = list(route.dependant.dependencies)
    while pending:
        dep = pending.pop()
        policy = getattr(dep.call, "warp_access", None)
        if isinstance(policy, Access):
            return policy
        pending.extend(dep.dependencies)
    return None


class PolicyRoute(APIRoute):
    """An APIRoute whose operation states its access policy (``x-required-role``,
    ``x-customer-scoped``, a sentence in the description); a route without one is public."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        policy = access_of(self)
        extra: dict[str, Any]
        if policy is None:
            extra = {"x-required-role": "none", "security": []}
        else:
            extra = {"x-required-role": policy.role.value, "x-customer-scoped": policy.customers}
            who = ("customer-scoped callers too (their own account's rows only)" if policy.customers
                   else "not customer-scoped callers")
            self.description = f"{self.description}\n\nRequires role `{policy.role.value}` or above; {who}.".strip()
        self.openapi_extra = {**(self.openapi_extra or {}), **extra}


def document(app: FastAPI) -> dict[str, Any]:
    return downgrade(get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, tags=app.openapi_tags, servers=app.servers))


def cached_document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = document(app)
    return app.openapi_schema
