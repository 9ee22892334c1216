"""Routes for the email domains an organization owns: claim one, prove it by DNS, remove it.

A claim gets a token; the admin publishes it as a TXT record `blocks-domain-verification=<token>`
at `_blocks-challenge.<domain>`, then asks Blocks to verify. One organization at a time holds a
domain verified (another's attempt is a 409). An operator may attest a domain without DNS:
`blocks domains verify ORG_SLUG DOMAIN`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from blocks.api.deps import CanManageSecurity, DbSession, record_change
from blocks.api.errors import PROBLEM_JSON, Problem, not_found, service_unavailable
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.infra.identity.dns_txt import DnsUnavailable, challenge_name, txt_records
from blocks.infra.identity.provider_config import Domain
from blocks.infra.settings import Settings
from blocks.models.identity.sso.domains import (
    DomainTaken,
    DomainVerifiedElsewhere,
    OrgDomain,
    claim_domain,
    get_domain,
    list_domains,
    mark_verified,
    remove_domain,
)

router = APIRouter(prefix="/v1/org/domains", tags=["identity"])

_DOMAIN = "acme.example"
_TOKEN = "q3Zt8WmVx1bYc7LpR2sNf0uKd9Ea4HgJ"  # noqa: S105 (an example)
_DOMAIN_ADAPTER: TypeAdapter[str] = TypeAdapter(Domain)


class DomainIn(StrictModel):
    model_config = example(domain=_DOMAIN)

    domain: Domain = Field(description="A DNS name such as acme.example (no scheme, no port)")


class DomainOut(BaseModel):
    model_config = example(
        domain=_DOMAIN,
        verified=False,
        verified_at=None,
        verified_by=None,
        txt_record_name=f"_blocks-challenge.{_DOMAIN}",
        txt_record_value=f"blocks-domain-verification={_TOKEN}",
        created_by=ex.OWNER_ID,
        created_at=ex.CREATED,
    )

    domain: str
    verified: bool
    verified_at: datetime | None
    verified_by: str | None = Field(description="dns, or operator (attested without DNS)")
    txt_record_name: str = Field(description="Where to publish the TXT record")
    txt_record_value: str = Field(description="The TXT record's value")
    created_by: uuid.UUID | None
    created_at: datetime


def _problem_example(code: str, status: int, detail: str, path: str) -> dict[str, object]:
    title = "Conflict" if status == 409 else "Service Unavailable"
    return {
        "schema": {"$ref": "#/components/schemas/ProblemOut"},
        "example": {
            "type": f"/problems/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
            "code": code,
        },
    }


_VERIFY_PATH = f"/v1/org/domains/{_DOMAIN}/verify"
_VERIFY_ERRORS: dict[int | str, dict[str, object]] = {
    409: {
        "description": "The TXT record is not there yet, or another organization holds the "
        "domain verified",
        "content": {
            PROBLEM_JSON: _problem_example(
                "domain_not_verified",
                409,
                f"no TXT record blocks-domain-verification={_TOKEN} at _blocks-challenge."
                f"{_DOMAIN}: add it, then try again (DNS changes can take a while to show)",
                _VERIFY_PATH,
            )
        },
    },
    503: {
        "description": "No DNS resolver answered; retry later",
        "content": {
            PROBLEM_JSON: _problem_example(
                "dns_unavailable", 503, "no DNS resolver answered; try again later", _VERIFY_PATH
            )
        },
    },
}
_CLAIM_ERRORS: dict[int | str, dict[str, object]] = {
    409: {
        "description": "The organization claims this domain already",
        "content": {
            PROBLEM_JSON: _problem_example(
                "domain_claimed",
                409,
                f"this organization claims {_DOMAIN} already",
                "/v1/org/domains",
            )
        },
    }
}


def _out(row: OrgDomain) -> DomainOut:
    return DomainOut(
        domain=row.domain,
        verified=row.verified_at is not None,
        verified_at=row.verified_at,
        verified_by=row.verified_by,
        txt_record_name=challenge_name(row.domain),
        txt_record_value=row.txt_record,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _domain_or_404(ctx: OrgContext, session: DbSession, domain: str) -> OrgDomain:
    try:
        name = _DOMAIN_ADAPTER.validate_python(domain.removesuffix("."))
    except ValidationError:
        raise not_found("domain") from None
    row = await get_domain(ctx, session, name)
    if row is None:
        raise not_found("domain")
    return row


async def _audit(
    request: Request, ctx: OrgContext, session: DbSession, action: str, row: OrgDomain
) -> None:
    # The claim's id is the target: a domain name may be longer than an event's target id.
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="domain",
        target_id=str(row.id),
        data={"domain": row.domain, "verified_by": row.verified_by},
    )


@router.get("", response_model=list[DomainOut], summary="List the organization's domains")
async def list_org_domains(ctx: CanManageSecurity, session: DbSession) -> list[DomainOut]:
    """Each claimed domain, verified or not, with the TXT record that proves it."""
    return [_out(row) for row in await list_domains(ctx, session)]


@router.post(
    "",
    status_code=201,
    response_model=DomainOut,
    responses=_CLAIM_ERRORS,
    summary="Claim a domain",
)
async def claim_org_domain(
    body: DomainIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> DomainOut:
    """Claim a domain: the answer names the TXT record to publish, then verify it."""
    try:
        row = await claim_domain(ctx, session, body.domain)
    except DomainTaken:
        raise Problem(
            409,
            "Conflict",
            f"this organization claims {body.domain} already",
            code="domain_claimed",
        ) from None
    await _audit(request, ctx, session, "org.domain_claimed", row)
    return _out(row)


@router.post(
    "/{domain}/verify",
    response_model=DomainOut,
    responses=_VERIFY_ERRORS,
    summary="Verify a domain by its DNS TXT record",
)
async def verify_org_domain(
    domain: str, request: Request, ctx: CanManageSecurity, session: DbSession
) -> DomainOut:
    """Look up the TXT records at `_blocks-challenge.<domain>`: the claim's value there verifies
    the domain. No such record: 409 `domain_not_verified` naming the record to add; another
    organization holds the domain verified: 409 `domain_verified_elsewhere`; no resolver
    answers: 503. A domain verified already is answered as it is."""
    row = await _domain_or_404(ctx, session, domain)
    if row.verified_at is not None:
        return _out(row)
    name = challenge_name(row.domain)
    try:
        values = await txt_records(name, _settings(request).dns_resolver)
    except DnsUnavailable:
        raise service_unavailable(
            f"no DNS resolver answered for {name}; try again later", code="dns_unavailable"
        ) from None
    if row.txt_record not in values:
        found = f" (it has {len(values)} other TXT record(s))" if values else ""
        raise Problem(
            409,
            "Conflict",
            f"no TXT record {row.txt_record} at {name}{found}: add it, then try again (DNS "
            "changes can take a while to show)",
            code="domain_not_verified",
        )
    try:
        await mark_verified(ctx, session, row, by="dns")
    except DomainVerifiedElsewhere:
        raise Problem(
            409,
            "Conflict",
            f"another organization holds {row.domain} verified; it must remove it first",
            code="domain_verified_elsewhere",
        ) from None
    await _audit(request, ctx, session, "org.domain_verified", row)
    return _out(row)


@router.delete("/{domain}", status_code=204, summary="Remove a domain")
async def remove_org_domain(
    domain: str, request: Request, ctx: CanManageSecurity, session: DbSession
) -> Response:
    """Remove a claim (verified or not): accounts no longer link by this domain, and another
    organization may verify it."""
    row = await _domain_or_404(ctx, session, domain)
    await _audit(request, ctx, session, "org.domain_removed", row)
    await remove_domain(ctx, session, row)
    return Response(status_code=204)
