"""The OpenAPI document (api.openapi): every operation documents its errors as problem+json,
credentials where it takes them and `security: []` where it does not, the permission it needs
(as the authorization matrix states it), a domain tag, a summary and an example of every body;
and every integer it accepts is bounded to what PostgreSQL holds. The app is built, not
started: no server is needed."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from blocks.api.app import create_app
from blocks.api.deps import CanReadRuns, DbSession
from blocks.api.params import BIGINT_MAX
from blocks.api.reference.openapi import ROUTE_ERRORS
from blocks.core.roles import Permission
from blocks.infra.settings import Settings
from tests.e2e.test_authorization_matrix import EXPECTED, PERSON
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
        assert operations[public]["security"] == [], public
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
    assert operation["x-blocks-permission"] == "run:read"
    assert operation["operationId"] == "widget"


def test_every_route_specific_error_names_an_operation(document: dict[str, Any]) -> None:
    # A renamed or removed route must not leave its errors listed for nothing.
    assert set(ROUTE_ERRORS) <= set(dict(_operations(document)))


# --------------------------------------------------------------------- the whole contract

# 303: the sign-in redirects of single sign-on (to the identity provider, and back to the site).
SUCCESS = re.compile(r"^(2\d\d|303)$")
SPECIAL = {"public", "session", "member", "refused", "agent"}


def _validator(document: dict[str, Any], schema: Any, compiled: dict[str, Any]) -> Any:
    # The document's components ride along, so "#/components/schemas/..." resolves. Compiling
    # them is the cost, and most bodies share a schema (every problem is a ProblemOut): one
    # validator per distinct schema, kept in `compiled` for one walk over one document.
    key = json.dumps(schema, sort_keys=True)
    if key not in compiled:
        root = {**schema, "components": document["components"]}
        compiled[key] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
    return compiled[key]


def _example_problems(
    document: dict[str, Any],
    where: str,
    content: dict[str, Any],
    compiled: dict[str, Any] | None = None,
) -> list[str]:
    """An example for each media type of one body, valid against its schema if it is JSON."""
    compiled = {} if compiled is None else compiled
    found = []
    for media, body in content.items():
        if "example" not in body:
            found.append(f"{where} {media}: no example")
        elif media.endswith("json") and "schema" in body:
            validator = _validator(document, body["schema"], compiled)
            errors = list(validator.iter_errors(body["example"]))
            found += [f"{where} {media}: example does not fit: {e.message}" for e in errors]
    return found


def contract_problems(document: dict[str, Any]) -> list[str]:
    """Whatever an operation of `document` leaves out of its contract; none when it is whole."""
    found: list[str] = []
    compiled: dict[str, Any] = {}
    tags = {tag["name"] for tag in document.get("tags", []) if tag.get("description")}
    schemes = set(document["components"].get("securitySchemes", {}))
    ids: dict[str, str] = {}
    for name, operation in _operations(document):
        if not operation.get("summary"):
            found.append(f"{name}: no summary")
        if len(operation.get("tags", [])) != 1 or operation["tags"][0] not in tags:
            found.append(f"{name}: not in exactly one described domain tag")
        ids.setdefault(operation["operationId"], name)
        if ids[operation["operationId"]] != name:
            found.append(f"{name}: operationId {operation['operationId']} taken")
        permission = operation.get("x-blocks-permission")
        if permission not in SPECIAL | {p.value for p in Permission}:
            found.append(f"{name}: no x-blocks-permission")
        elif f"`{permission}`" not in operation.get("description", ""):
            found.append(f"{name}: the description does not name the permission")
        security = operation.get("security")
        if security is None:
            found.append(f"{name}: no security requirement, not even an explicit []")
        elif (security == []) != (permission == "public"):
            found.append(f"{name}: security {security} for permission {permission}")
        elif any(set(requirement) - schemes for requirement in security):
            found.append(f"{name}: security names an undeclared scheme")
        if "requestBody" in operation:
            found += _example_problems(
                document, f"{name} request", operation["requestBody"]["content"], compiled
            )
        responses = operation["responses"]
        if permission != "refused" and not any(SUCCESS.match(s) for s in responses):
            found.append(f"{name}: no success response")
        for status, response in responses.items():
            content = response.get("content", {})
            if SUCCESS.match(status) and status not in ("204", "303") and not content:
                found.append(f"{name} {status}: no body described")
            if int(status) >= 400:
                problem = content.get("application/problem+json")
                if problem is None and not {"text/html", "application/json"} & set(content):
                    found.append(f"{name} {status}: not a problem+json")
                if problem is not None and problem.get("schema") != PROBLEM:
                    found.append(f"{name} {status}: not the problem schema")
            found += _example_problems(document, f"{name} {status}", content, compiled)
        if security and "401" not in responses:
            found.append(f"{name}: takes a credential but documents no 401")
        if permission not in SPECIAL and "403" not in responses:
            found.append(f"{name}: needs a permission but documents no 403")
    return found


def test_every_operation_states_its_whole_contract(document: dict[str, Any]) -> None:
    assert contract_problems(document) == []
    # Two models of one name get module-qualified names, which client generators refuse.
    assert [name for name in document["components"]["schemas"] if "__" in name] == []
    assert [tag["name"] for tag in document["tags"]] == [
        "health",
        "identity",
        "approvals",
        "audit",
        "integrations",
    ]


def test_each_operation_names_the_permission_the_authorization_matrix_requires(
    document: dict[str, Any],
) -> None:
    """The extension agrees with tests/e2e/test_authorization_matrix.py, which proves its table
    against the running app for every role."""
    expected = {
        f"{method} {path}": "session" if rule == PERSON else str(rule)
        for (method, path), rule in EXPECTED.items()
    }
    stated = {name: op["x-blocks-permission"] for name, op in _operations(document)}
    assert stated == {name: expected[name] for name in stated}
    assert len(stated) > 70


class _WidgetIn(BaseModel):
    name: str


class _WidgetOut(BaseModel):
    id: uuid.UUID


def test_the_contract_check_finds_a_route_that_states_nothing() -> None:
    """A route added without summary, tag or examples is caught; so is a document that lost an
    operation's security, permission or problem schema."""
    app = _app()
    router = APIRouter()

    @router.post("/v1/widgets", response_model=_WidgetOut)
    async def make_widget(body: _WidgetIn, ctx: CanReadRuns) -> _WidgetOut:
        return _WidgetOut(id=uuid.uuid4())

    app.include_router(router)
    complete = app.openapi()
    assert sorted(contract_problems(complete)) == [
        "POST /v1/widgets 200 application/json: no example",
        "POST /v1/widgets request application/json: no example",
        "POST /v1/widgets: no summary",
        "POST /v1/widgets: not in exactly one described domain tag",
    ]

    broken = copy.deepcopy(complete)
    runs = broken["paths"]["/v1/runs"]
    del runs["get"]["security"]
    del runs["post"]["x-blocks-permission"]
    runs["get"]["responses"]["403"]["content"]["application/problem+json"]["schema"] = {}
    broken["paths"]["/healthz"]["get"]["security"] = [{"apiKey": []}]
    runs["post"]["requestBody"]["content"]["application/json"]["example"] = {"workflow": 7}
    assert sorted(set(contract_problems(broken)) - set(contract_problems(complete))) == [
        "GET /healthz: security [{'apiKey': []}] for permission public",
        "GET /healthz: takes a credential but documents no 401",
        "GET /v1/runs 403: not the problem schema",
        "GET /v1/runs: no security requirement, not even an explicit []",
        'POST /v1/runs request application/json: example does not fit: 7 is not of type "string"',
        "POST /v1/runs: no x-blocks-permission",
    ]
