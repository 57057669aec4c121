"""`python -m routing_engine.entrypoints.api`: print the admin API's OpenAPI document (the committed
openapi.json is this output)."""

from __future__ import annotations

import json

from routing_engine.entrypoints.api.openapi import cached_document
from routing_engine.entrypoints.api.server import create_app
from routing_engine.settings import load_settings

print(json.dumps(cached_document(create_app(load_settings(environ={}))), indent=2, sort_keys=False))
