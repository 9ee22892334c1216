"""`blocks audit export`: one organization's audit chain (or the platform's) to a JSON Lines file.

Sealed, the file is what `GET /v1/audit/export` streams. `--content revealed` is that export's
`content=revealed`: after each batch of events, a `content` line per event holding sealed run
content (its fields in clear and that event's own key), so `blocks audit verify` checks the
clear text against what the chain hashed. Revealing is recorded first, as
`audit.content_revealed` in the organization's chain by the operator command
(`cli:audit-export`), and committed before a line is written; the export then holds its own
record.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from blocks.cli.operator_db import operator_database_url
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import PLATFORM_ORG, AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.field_crypto import install_master_keys, load_master_keys
from blocks.infra.crypto.signing import load_public_keys
from blocks.infra.db import create_engine, session_factory
from blocks.infra.settings import Settings
from blocks.models.audit.events import append_events
from blocks.models.audit.reads import ExportFilters, export_chunks
from blocks.models.identity.orgs import get_org_by_slug

# The actor of what an operator command records: `cli:<command>`, as `blocks create-org` does.
EXPORT_ACTOR = "cli:audit-export"


class ExportContent(StrEnum):
    SEALED = "sealed"
    REVEALED = "revealed"


class NoSuchOrganization(LookupError):
    """The slug names no organization."""


def revealed_record(ctx: OrgContext, filters: ExportFilters) -> AuditRecord:
    """The event the API records for `content=revealed`, with the command as its actor."""
    return AuditRecord(
        action="audit.content_revealed",
        actor_type=ActorType.SYSTEM,
        actor_id=EXPORT_ACTOR,
        target_type="audit_log",
        target_id=str(ctx.org_id),
        data={"filters": filters.as_header()},
    )


async def export_audit(
    settings: Settings, org_slug: str | None, out: Path, content: ExportContent
) -> int:
    """Write the export to `out`; the number of lines written. NoSuchOrganization if the slug
    names none. Revealed content needs an organization (the caller checks) and the master keys
    (BLOCKS_MASTER_KEYS), which open the organization's content keys."""
    reveal = content is ExportContent.REVEALED
    if reveal:
        install_master_keys(load_master_keys(settings))
    keys = load_public_keys(settings).by_id()
    engine = create_engine(operator_database_url(settings), pool_size=1)
    try:
        sessions = session_factory(engine)
        org_id = PLATFORM_ORG
        if org_slug is not None:
            async with sessions() as session:
                found = await get_org_by_slug(session, org_slug)
            if found is None:
                raise NoSuchOrganization(f"no organization {org_slug!r}")
            org_id = OrgId(found.id)
        ctx = OrgContext(org_id=org_id, user_id=None, roles=(), auth=AuthMethod.SYSTEM)
        filters = ExportFilters()
        if reveal:
            # Committed before the export starts: revealing is never left unrecorded.
            async with sessions() as session, session.begin():
                await append_events(ctx, session, [revealed_record(ctx, filters)])
        lines = 0
        with out.open("wb") as handle:
            async for chunk in export_chunks(ctx, sessions, filters, keys, reveal_content=reveal):
                handle.write(chunk)
                lines += chunk.count(b"\n")
        return lines
    finally:
        await engine.dispose()
