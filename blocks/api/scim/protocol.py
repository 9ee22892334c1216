"""SCIM 2.0 on the wire (RFC 7644): the service's description (scim2-models' ScimProvider), the
tolerances of real identity providers (ScimPolicy), `application/scim+json` answers and SCIM's
own error format, which every SCIM route answers with whatever goes wrong."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from scim2_models import (
    Attribute,
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    EnterpriseUser,
    Error,
    ETag,
    Filter,
    Group,
    InvalidSyntaxException,
    Patch,
    PreconditionFailedException,
    Required,
    ResourceType,
    Schema,
    SCIMException,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    User,
)

from blocks.api.errors import Problem

SCIM_JSON = "application/scim+json"
# Where the service is mounted; resources' locations are the public URL plus this.
SCIM_PATH = "/scim/v2"
# The most resources one list answer holds, and how many a list without `count` gets.
MAX_RESULTS = 200
DEFAULT_COUNT = 100

UserResource = User[EnterpriseUser]
USER_SCHEMA = str(User.__schema__)
GROUP_SCHEMA = str(Group.__schema__)

# Real providers' dialects, accepted rather than refused: Entra's remove operations that select
# members by their value, and its replace of `emails[type eq "work"].value` on a user without
# one; attributes we do not model are dropped (a provider's own extensions) instead of failing
# the whole request. Entra's capitalised `op` and string booleans ("False") need no setting.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=True),
    etag=ETag(supported=True),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="SCIM token",
            description="The organization's SCIM token (POST /v1/org/scim/token), sent as "
            "Authorization: Bearer <token>",
            primary=True,
        )
    ],
)


def _required(attribute: Attribute) -> Attribute:
    return attribute.model_copy(update={"required": Required.true})


def _published(schema: Schema) -> Schema:
    """The schema as published. A User's `emails` (and each one's `value`) is required, for a
    person's account has an address, and so is `active`, which a membership always has (a
    creation without them is still accepted: an email-shaped userName stands for the address,
    as Entra sends a user without a mailbox, and no `active` means active). A Group's members
    are `value`, `$ref` and `type`, as RFC 7643 §8.7.1 has them: no client-set `display`."""
    attributes = []
    for attribute in schema.attributes or []:
        if schema.id == USER_SCHEMA and attribute.name == "active":
            attribute = _required(attribute)
        elif schema.id == USER_SCHEMA and attribute.name == "emails":
            subs = [
                _required(sub) if sub.name == "value" else sub
                for sub in attribute.sub_attributes or []
            ]
            attribute = _required(attribute).model_copy(update={"sub_attributes": subs})
        elif schema.id == GROUP_SCHEMA and attribute.name == "members":
            subs = [sub for sub in attribute.sub_attributes or [] if sub.name != "display"]
            attribute = attribute.model_copy(update={"sub_attributes": subs})
        attributes.append(attribute)
    return schema.model_copy(update={"attributes": attributes})


PROVIDER = ScimProvider(
    models=[User, EnterpriseUser, Group],
    resource_types=[ResourceType.from_resource(UserResource), ResourceType.from_resource(Group)],
    config=CONFIG,
    policy=POLICY,
)


def scim_response(
    body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=SCIM_JSON,
        headers=headers,
    )


def error_response(error: Error, headers: dict[str, str] | None = None) -> Response:
    return scim_response(error.model_dump(), status=error.status or 500, headers=headers)


def not_found(what: str) -> SCIMException:
    error = Error(status=404, detail=f"{what} not found")
    return SCIMException.from_error(error)


def conflict(detail: str, scim_type: str | None = "uniqueness") -> SCIMException:
    return SCIMException.from_error(Error(status=409, scim_type=scim_type, detail=detail))


def _validation_error(errors: list[dict[str, Any]] | ValidationError) -> Error:
    found = Error.from_validation_errors(errors)
    if not found:
        return Error(status=400, scim_type="invalidValue", detail="the request is not valid")
    return found[0]


def as_scim_error(exc: Exception) -> tuple[Error, dict[str, str] | None] | None:
    """The SCIM error an exception stands for, with its headers; None if it is unexpected."""
    if isinstance(exc, SCIMException):
        return exc.to_error(), None
    if isinstance(exc, ValidationError):
        return _validation_error(exc), None
    if isinstance(exc, RequestValidationError):
        return _validation_error(list(exc.errors())), None
    if isinstance(exc, Problem):  # a rate limit, an outage: the platform's own refusals
        return Error(status=exc.status, detail=exc.detail), exc.headers
    return None


class ScimRoute(APIRoute):
    """A route whose every error is a SCIM error (`urn:...:Error`, status as a string), not the
    problem+json of the rest of the API: the app's handlers never see these exceptions."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def scim_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                found = as_scim_error(exc)
                if found is None:
                    raise
                error, headers = found
                return error_response(error, headers)

        return scim_handler


async def json_body(request: Request) -> Any:
    """The request's JSON (the edge already refused what is not valid UTF-8 JSON)."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as err:
        raise InvalidSyntaxException(detail=f"the body is not JSON: {err}") from None


def base_url(request: Request) -> str:
    return f"{request.app.state.settings.public_url.rstrip('/')}{SCIM_PATH}"


def weak_etag(version: int) -> str:
    return f'W/"{version}"'


def check_if_match(request: Request, version: int) -> None:
    """RFC 7644 §3.14: a write naming a version that is no longer current is refused (412)."""
    wanted = request.headers.get("if-match")
    if wanted is None:
        return
    tags = {tag.strip() for tag in wanted.split(",")}
    if "*" in tags or weak_etag(version) in tags or f'"{version}"' in tags:
        return
    raise PreconditionFailedException(detail="the resource changed since that version")


SCHEMAS = tuple(_published(schema) for schema in PROVIDER.schemas)
