"""`blocks domains verify ORG_SLUG DOMAIN`: an operator attests that an organization owns a domain,
without DNS (for domains whose DNS the organization cannot publish a record in).

The domain is claimed for the organization first if it was not, then marked verified by
`operator`; both are recorded in the organization's audit chain by `cli:domains-verify`. A domain
another organization holds verified is refused, as through the API.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.cli.operator_db import operator_database_url
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.field_crypto import install_master_keys, load_master_keys
from blocks.infra.db import create_engine, session_factory
from blocks.infra.identity.provider_config import Domain
from blocks.infra.settings import get_settings
from blocks.models.audit.events import append_events
from blocks.models.identity.orgs import get_org_by_slug
from blocks.models.identity.sso.domains import (
    DomainVerifiedElsewhere,
    OrgDomain,
    claim_domain,
    get_domain,
    mark_verified,
)

app = typer.Typer()
domains_app = typer.Typer(help="Email domains organizations own (verified by DNS or by you).")
app.add_typer(domains_app, name="domains")
console = Console()
ACTOR = "cli:domains-verify"
_DOMAIN: TypeAdapter[str] = TypeAdapter(Domain)


class AttestRefused(LookupError):
    """The organization or the domain cannot be attested; the message says why."""


@dataclass(frozen=True)
class Attested:
    domain: str
    claimed: bool  # the claim was made now
    already: bool  # it was verified already (nothing changed)


def _record(action: str, row: OrgDomain, data: dict[str, object]) -> AuditRecord:
    # The claim's id is the target, as the API's events have it (a name may be too long).
    return AuditRecord(
        action=action,
        actor_type=ActorType.SYSTEM,
        actor_id=ACTOR,
        target_type="domain",
        target_id=str(row.id),
        data={"domain": row.domain, **data},
    )


async def attest_domain(session: AsyncSession, *, org_slug: str, domain: str) -> Attested:
    """Claim (if need be) and verify `domain` for the organization `org_slug`, audited."""
    try:
        name = _DOMAIN.validate_python(domain.removesuffix("."))
    except ValidationError:
        raise AttestRefused(f"{domain!r} is not a domain name such as example.com") from None
    org = await get_org_by_slug(session, org_slug)
    if org is None or org.closed_at is not None:
        raise AttestRefused(f"no open organization {org_slug!r}")
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    row = await get_domain(ctx, session, name)
    if row is not None and row.verified_at is not None:
        return Attested(name, claimed=False, already=True)
    records = []
    claimed = row is None
    if row is None:
        row = await claim_domain(ctx, session, name)
        records.append(_record("org.domain_claimed", row, {"verified_by": None}))
    try:
        await mark_verified(ctx, session, row, by="operator")
    except DomainVerifiedElsewhere:
        raise AttestRefused(
            f"another organization holds {name} verified; it must remove it first"
        ) from None
    records.append(_record("org.domain_verified", row, {"verified_by": "operator"}))
    await append_events(ctx, session, records)
    return Attested(name, claimed=claimed, already=False)


async def _attest(org_slug: str, domain: str) -> Attested:
    settings = get_settings()
    # The audit events' personal fields are sealed under the master keys.
    install_master_keys(load_master_keys(settings))
    engine = create_engine(operator_database_url(settings), pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await attest_domain(session, org_slug=org_slug, domain=domain)
    finally:
        await engine.dispose()


@domains_app.command("verify")
def verify(
    org_slug: Annotated[str, typer.Argument(help="the organization's slug")],
    domain: Annotated[str, typer.Argument(help="the domain, e.g. example.com")],
) -> None:
    """Attest that ORG_SLUG owns DOMAIN, without DNS (claimed first if need be; audited)."""
    try:
        attested = asyncio.run(_attest(org_slug, domain))
    except AttestRefused as refused:
        console.print(f"[red]{refused}[/red]")
        raise typer.Exit(1) from None
    if attested.already:
        console.print(f"{attested.domain} was verified for {org_slug} already.")
    else:
        console.print(f"{attested.domain} is now verified for {org_slug} (by operator).")
