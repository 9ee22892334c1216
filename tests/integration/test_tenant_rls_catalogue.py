"""Every table with an organization column has forced row-level security, read from the catalogue.

The list of tenant tables is not written down anywhere to forget: the check enumerates, from
pg_attribute/pg_class/pg_constraint, every table and view of the public schema with an
organization column (a column named `org_id` or `*_org_id`, or any column of a foreign key to
`organizations`), and asks of each table: ENABLE and FORCE row-level security, a policy for every
command that keys both USING and WITH CHECK on `app.org_id`, and no other permissive policy that
opens rows to every role except the ones OPEN_POLICIES names. A view must be `security_invoker`
(else it reads as its owner); a materialized view cannot have row-level security at all. Each
kind of escape is shown caught on a table the test creates in a transaction it rolls back.

Also: every SECURITY DEFINER function pins its search_path and is not executable by PUBLIC; and
the three tables this layer closed (API keys, invites, decision links) read as empty to the app
role with no organization bound, even with the pre-tenant switch set, while their lookups work.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, create_engine, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.approvals.decision_links import issue_link, open_link
from blocks.models.identity.api_keys import resolve_api_key
from blocks.models.identity.invites import create_invite, find_invite, has_pending_invite
from tests.support import Org, make_org

# Tables with an organization column that are not organization data (the same list, with the
# same reason, is in tests/unit/test_tenant_scope_lint.py).
NOT_TENANT_DATA: dict[str, str] = {
    "user_sessions": "a person's own sign-in session; org_id is only where it currently acts",
}

# Permissive policies that show a tenant table's rows to every role without `app.org_id`: each
# is keyed on something only its one reader sets. Any other such policy would open the table.
OPEN_POLICIES: dict[str, str] = {
    "memberships_own": "a person's own memberships (the picker), under app.user_id",
    "slack_installations_by_team": "the one Slack team blocks_resolve_slack_team asks about",
}

_ORG_COLUMNS = """
SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
       coalesce('security_invoker=true' = ANY (c.reloptions), false) AS invoker,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (a.attname ~ '(^|_)org_id$'
       OR EXISTS (SELECT FROM pg_constraint k
                  WHERE k.conrelid = c.oid AND k.contype = 'f'
                    AND k.confrelid = 'public.organizations'::regclass
                    AND a.attnum = ANY (k.conkey)))
GROUP BY c.oid
ORDER BY c.relname
"""

_POLICIES = """
SELECT c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles = '{0}' AS to_public,
       coalesce(pg_get_expr(p.polqual, p.polrelid), '') AS using_expr,
       coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') AS check_expr
FROM pg_policy p
JOIN pg_class c ON c.oid = p.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
"""

_ORG_SETTING = "current_setting('app.org_id'"


async def tenant_tables(conn: AsyncConnection) -> dict[str, list[str]]:
    """Every relation of the public schema with an organization column -> those columns."""
    rows = (await conn.execute(text(_ORG_COLUMNS))).all()
    return {row.relname: list(row.columns) for row in rows if row.relname not in NOT_TENANT_DATA}


async def rls_problems(conn: AsyncConnection) -> list[str]:
    """What lets a relation with an organization column escape row-level security."""
    policies: dict[str, list[Row[Any]]] = {}
    for policy in (await conn.execute(text(_POLICIES))).all():
        policies.setdefault(policy.relname, []).append(policy)
    problems: list[str] = []
    for row in (await conn.execute(text(_ORG_COLUMNS))).all():
        name = row.relname
        if name in NOT_TENANT_DATA:
            continue
        if row.relkind == "v":
            if not row.invoker:
                problems.append(f"{name}: a view of organization data without security_invoker")
            continue
        if row.relkind in ("m", "f"):
            problems.append(f"{name}: materialized or foreign, so row-level security cannot hold")
            continue
        if not row.relrowsecurity:
            problems.append(f"{name}: row-level security not enabled")
        if not row.relforcerowsecurity:
            problems.append(f"{name}: row-level security not forced (the owner bypasses it)")
        own = policies.get(name, [])
        if not any(
            p.polcmd == "*"
            and p.polpermissive
            and _ORG_SETTING in p.using_expr
            and _ORG_SETTING in p.check_expr
            for p in own
        ):
            problems.append(f"{name}: no policy keys USING and WITH CHECK on app.org_id")
        problems.extend(
            f"{name}: policy {p.polname} opens rows to every role without app.org_id"
            for p in own
            if p.polpermissive
            and p.to_public
            and _ORG_SETTING not in p.using_expr
            and p.polname not in OPEN_POLICIES
        )
    return problems


async def test_every_table_with_an_organization_column_has_forced_row_level_security(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        tables = await tenant_tables(conn)
        problems = await rls_problems(conn)
    # The enumeration finds what it must (so an empty result cannot pass by accident).
    assert {"api_keys", "invites", "decision_links", "runs", "audit_events"} <= set(tables)
    assert not problems, "\n".join(problems)


async def test_every_exemption_is_still_a_table_with_an_organization_column(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_ORG_COLUMNS))).all()
        names = (await conn.execute(text(f"SELECT polname FROM ({_POLICIES}) p"))).all()
    assert set(NOT_TENANT_DATA) <= {row.relname for row in rows}
    assert set(OPEN_POLICIES) <= {row.polname for row in names}


@pytest.fixture
async def owner(postgres: PostgresCredentials) -> AsyncIterator[AsyncConnection]:
    """A connection as the table owner (who runs migrations), in a transaction rolled back."""
    engine = create_engine(postgres.url(owner=True), pool_size=1)
    async with engine.connect() as conn:
        transaction = await conn.begin()
        yield conn
        await transaction.rollback()
    await engine.dispose()


_TENANT = (
    "CREATE POLICY probe_tenant ON probe "
    "USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid) "
    "WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)"
)
_FORCED = "ALTER TABLE probe ENABLE ROW LEVEL SECURITY; ALTER TABLE probe FORCE ROW LEVEL SECURITY"


@pytest.mark.parametrize(
    ("ddl", "caught"),
    [
        ("CREATE TABLE probe (id uuid, org_id uuid)", "not enabled"),
        (
            "CREATE TABLE probe (id uuid, org_id uuid); ALTER TABLE probe ENABLE ROW LEVEL SECURITY;"
            + _TENANT,
            "not forced",
        ),
        (f"CREATE TABLE probe (id uuid, org_id uuid); {_FORCED}", "no policy"),
        (
            f"CREATE TABLE probe (id uuid, org_id uuid); {_FORCED}; "
            "CREATE POLICY probe_any ON probe USING (true)",
            "no policy",
        ),
        (
            f"CREATE TABLE probe (id uuid, org_id uuid); {_FORCED}; {_TENANT}; "
            "CREATE POLICY probe_open ON probe FOR SELECT USING (true)",
            "opens rows to every role",
        ),
        # Another name for the organization: found by its foreign key.
        ("CREATE TABLE probe (id uuid, tenant uuid REFERENCES organizations(id))", "not enabled"),
        ("CREATE TABLE probe (id uuid, owner_org_id uuid)", "not enabled"),
        ("CREATE VIEW probe AS SELECT id, org_id FROM runs", "without security_invoker"),
        ("CREATE MATERIALIZED VIEW probe AS SELECT id, org_id FROM runs", "cannot hold"),
    ],
)
async def test_the_check_catches_a_table_that_escapes(
    owner: AsyncConnection, ddl: str, caught: str
) -> None:
    assert not [p for p in await rls_problems(owner) if p.startswith("probe:")]
    for statement in ddl.split(";"):
        await owner.execute(text(statement))
    found = [p for p in await rls_problems(owner) if p.startswith("probe:")]
    assert any(caught in p for p in found), found


async def test_the_check_lets_a_forced_tenant_table_pass(owner: AsyncConnection) -> None:
    for statement in (f"CREATE TABLE probe (id uuid, org_id uuid); {_FORCED}; {_TENANT}").split(
        ";"
    ):
        await owner.execute(text(statement))
    assert "probe" in await tenant_tables(owner)
    assert not [p for p in await rls_problems(owner) if p.startswith("probe:")]


async def test_security_definer_functions_are_narrow(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT p.proname, p.proconfig, "
                    "has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec, "
                    "p.proowner = (SELECT c.relowner FROM pg_class c "
                    "              WHERE c.oid = 'public.api_keys'::regclass) AS table_owner "
                    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = 'public' AND p.prosecdef"
                )
            )
        ).all()
    names = {row.proname for row in rows}
    assert {"blocks_resolve_api_key", "blocks_find_invite", "blocks_has_pending_invite"} <= names
    assert {"blocks_find_decision_link"} <= names
    for row in rows:
        assert any(s.startswith("search_path=") for s in row.proconfig or []), row.proname
        assert not row.public_exec, f"{row.proname} is executable by PUBLIC"
        # As the tables' owner, whom the `*_pre_tenant_lookup` policies name (see 0013).
        assert row.table_owner, f"{row.proname} is not owned by the tables' owner"


async def _closed_tables_rows(engine: AsyncEngine, org: uuid.UUID | None, lookup: bool) -> int:
    async with session_factory(engine)() as session, session.begin():
        if org is not None:
            await bind_org(session, org)
        if lookup:
            # The switch the SECURITY DEFINER functions use: it opens nothing to the app role.
            await session.exec(text("SELECT set_config('app.pre_tenant_lookup', 'on', true)"))  # type: ignore[call-overload]
        total = 0
        for table in ("api_keys", "invites", "decision_links"):
            total += (await session.exec(text(f"SELECT count(*) FROM {table}"))).one()[0]  # type: ignore[call-overload]
        return total


async def _invite_and_link(engine: AsyncEngine, org: Org) -> tuple[str, str]:
    """An invite and a decision link of `org` (a run row for the link to point at)."""
    owner = org["owner"]
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=owner.user_id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
    )
    run_id = uuid.uuid4()
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        await session.exec(  # type: ignore[call-overload]
            text(
                "INSERT INTO runs (id, org_id, workflow_name, workflow_id, requested_by, "
                "start_state, created_at) VALUES (:id, :org, 'expense', :wf, :by, 'started', now())"
            ).bindparams(id=run_id, org=org.id, wf=f"run-{run_id}", by=owner.user_id)
        )
        _, invite, _ = await create_invite(
            ctx, session, email=f"new@{org.slug}.test", roles=[Role.APPROVER], lifetime=timedelta(1)
        )
        link = await issue_link(
            ctx,
            session,
            run_id=run_id,
            step_id="approve",
            user_id=org["approver"].user_id,
            notice_id=uuid.uuid4().hex,
            ttl=timedelta(hours=1),
        )
    assert link is not None
    return invite, link


async def test_keys_invites_and_links_are_closed_to_the_app_role_but_their_lookups_work(
    engine: AsyncEngine,
) -> None:
    first, second = await make_org(engine), await make_org(engine)
    invite, link = await _invite_and_link(engine, first)
    await _invite_and_link(engine, second)

    assert await _closed_tables_rows(engine, None, lookup=False) == 0
    assert await _closed_tables_rows(engine, None, lookup=True) == 0
    # Bound to one organization: its 8 keys, 1 invite and 1 link, none of the other's.
    assert await _closed_tables_rows(engine, first.id, lookup=True) == 10

    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        ctx = await resolve_api_key(session, first["approver"].key)
        assert ctx is not None
        assert ctx.org_id == first.id
        # The switch is off again once the function has returned.
        switch = text("SELECT current_setting('app.pre_tenant_lookup', true)")
        assert (await session.exec(switch)).one()[0] == ""  # type: ignore[call-overload]
    async with sessions() as session, session.begin():
        found = await find_invite(session, invite)
        assert found.org_id == first.id
    async with sessions() as session, session.begin():
        opened = await open_link(session, link)
        assert opened.link.org_id == first.id
    async with sessions() as session, session.begin():
        # Closed sign-up asks across organizations, and learns only yes or no.
        assert await has_pending_invite(session, f"new@{second.slug}.test")
        assert not await has_pending_invite(session, f"nobody@{second.slug}.test")
