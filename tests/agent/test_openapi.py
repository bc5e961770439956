"""The OpenAPI document says what the API does: every error status, every bound on an id."""

from __future__ import annotations

import re
from pathlib import Path

from agent.app import create_app
from agent.errors import CODES
from agent.schemas import ERROR_RESPONSES, MAX_ID
from settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def _operations() -> list[tuple[str, str, dict]]:
    document = create_app(Settings(), services=object()).openapi()  # building the document starts nothing
    return [(path, method, operation) for path, item in document["paths"].items() for method, operation in item.items()]


def test_every_operation_documents_every_error_status_with_the_error_body():
    for path, method, operation in _operations():
        documented = {int(status) for status in operation["responses"] if status != "default"}
        assert set(ERROR_RESPONSES) <= documented, (method, path)
        body = operation["responses"]["422"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_every_id_parameter_is_a_positive_63_bit_integer():
    seen = 0
    for path, method, operation in _operations():
        for parameter in operation.get("parameters", []):
            if parameter["name"].endswith("_id") or parameter["name"] == "X-Lifelong-Session":
                schema = parameter["schema"]
                bounded = schema.get("anyOf", [schema])[0]
                assert (bounded.get("minimum"), bounded.get("maximum")) == (1, MAX_ID), (method, path, parameter)
                seen += 1
    assert seen >= 20


def test_the_error_codes_docs_name_are_the_ones_the_api_sends():
    named = set(re.findall(r"\(`([a-z_0-9]+)`\)", DOCS.read_text()))
    sent = set(CODES.values()) | {"malformed_json", "invalid_utf8", "unsupported", "internal_error"}
    assert named and named <= sent, named - sent
