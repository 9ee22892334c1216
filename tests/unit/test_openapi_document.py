"""The OpenAPI document (api.openapi): every operation documents its errors as problem+json,
credentials where it takes them and none where it does not, and every integer it accepts is
bounded to what PostgreSQL holds. The app is built, not started: no server is needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from blocks.api.app import create_app
from blocks.api.deps import CanReadRuns, DbSession
from blocks.api.openapi import ROUTE_ERRORS
from blocks.api.params import BIGINT_MAX
from blocks.infra.settings import Settings
from tests.support import MASTER_KEYS, PAYLOAD_KEYS, SIGNING_KEY

PROBLEM = {"$ref": "#/components/schemas/ProblemOut"}
METHODS = ("get", "put", "post", "delete", "patch")


def _app() -> FastAPI:
    settings = Settings(
        env="test",
        database_url="postgresql+psycopg://nobody@127.0.0.1/none",
        demo_org=False,
        payload_keys=PAYLOAD_KEYS,
        audit_signing_key=SIGNING_KEY,
        master_keys=MASTER_KEYS,
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _app().openapi()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def test_every_operation_documents_the_edge_errors_as_problems(document: dict[str, Any]) -> None:
    for name, operation in _operations(document):
        responses = operation["responses"]
        for status in ("413", "422", "429"):
            assert status in responses, name
        if not name.startswith("GET "):
            assert {"400", "415"} <= set(responses), name
        for status, response in responses.items():
            if int(status) >= 400:
                content = response["content"]
                assert set(content) <= {"application/problem+json", "text/html", "application/json"}
                if "application/problem+json" in content:
                    assert content["application/problem+json"]["schema"] == PROBLEM, name
    schemas = document["components"]["schemas"]
    assert set(schemas["ProblemOut"]["required"]) == {"type", "title", "status", "detail", "code"}
    # FastAPI's own 422 body is never sent, so it is not described.
    assert "HTTPValidationError" not in schemas


def test_credentials_are_declared_where_they_are_taken(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"]["scheme"] == "bearer"
    assert schemes["session"] == {
        **schemes["session"],
        "in": "cookie",
        "name": "__Host-blocks_session",
    }
    operations = dict(_operations(document))
    runs = operations["GET /v1/runs"]
    assert runs["security"] == [{"apiKey": []}, {"session": []}]
    assert {"401", "403", "503"} <= set(runs["responses"])
    me = operations["GET /v1/me"]
    assert me["security"] == [{"session": []}]
    assert "401" in me["responses"]
    for public in ("GET /healthz", "GET /v1/audit/public-key", "POST /v1/auth/signup"):
        assert "security" not in operations[public], public
        assert "401" not in operations[public]["responses"], public
    # Neither a database nor a path parameter: no 503, no 404.
    assert not {"401", "403", "404", "503"} & set(
        operations["GET /v1/audit/public-key"]["responses"]
    )
    assert "404" in operations["GET /v1/runs/{run_id}"]["responses"]
    assert "409" in operations["POST /v1/runs/{run_id}/steps/{step_id}/decisions"]["responses"]
    link = operations["GET /v1/decision-links/{token}"]["responses"]["410"]["content"]
    assert set(link) == {"text/html"}


def _integer_schemas(value: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        if value.get("type") == "integer":
            yield where, value
        for key, item in value.items():
            yield from _integer_schemas(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _integer_schemas(item, f"{where}/{index}")


def _request_schemas(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every schema a request is validated against: parameters, and bodies with their refs."""
    schemas = document["components"]["schemas"]
    for name, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            yield f"{name} {parameter['name']}", parameter["schema"]
        for content in operation.get("requestBody", {}).get("content", {}).values():
            pending, seen = [content["schema"]], set()
            while pending:
                schema = pending.pop()
                yield f"{name} body", schema
                for ref in _refs(schema):
                    if ref not in seen:
                        seen.add(ref)
                        pending.append(schemas[ref.rsplit("/", 1)[1]])


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if "$ref" in value:
            yield value["$ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_every_integer_a_request_carries_is_bounded_to_bigint(document: dict[str, Any]) -> None:
    found = 0
    for name, schema in _request_schemas(document):
        for where, integer in _integer_schemas(schema, name):
            found += 1
            low = integer.get("minimum", integer.get("exclusiveMinimum", -(2**64)))
            high = integer.get("maximum", integer.get("exclusiveMaximum", 2**64))
            assert low >= -BIGINT_MAX - 1, where
            assert high <= BIGINT_MAX, where
    assert found >= 7  # after_seq and limit on the audit, checkpoint, run and inbox reads


def test_a_route_added_later_is_documented_too() -> None:
    app = _app()
    router = APIRouter()

    @router.get("/v1/widgets/{widget_id}")
    async def widget(widget_id: uuid.UUID, ctx: CanReadRuns, session: DbSession) -> dict[str, str]:
        return {}

    app.include_router(router)
    operation = app.openapi()["paths"]["/v1/widgets/{widget_id}"]["get"]
    assert {"401", "403", "404", "413", "422", "429", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"apiKey": []}, {"session": []}]


def test_every_route_specific_error_names_an_operation(document: dict[str, Any]) -> None:
    # A renamed or removed route must not leave its errors listed for nothing.
    assert set(ROUTE_ERRORS) <= set(dict(_operations(document)))
