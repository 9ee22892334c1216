"""Organization data keys in PostgreSQL: one live key each, tenant-bound, destroyed for good."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.infra.db import bind_org, session_factory
from blocks.models.keys.org_keys import DatabaseOrgKeys, destroy_org_keys
from tests.support import make_org, run_sql


def org_ctx(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(
        org_id=OrgId(org_id), user_id=uuid.uuid4(), roles=(Role.OWNER,), auth=AuthMethod.API_KEY
    )


async def test_concurrent_first_uses_agree_on_one_live_key(engine: AsyncEngine) -> None:
    org = await make_org(engine)
    # Separate sources, as separate processes: nothing cached is shared.
    keys = await asyncio.gather(*(DatabaseOrgKeys(engine).active_key(org.id) for _ in range(20)))
    assert len({key.key_id for key in keys}) == 1
    nonce = b"\x00" * 12
    sealed = keys[0].cipher.encrypt(nonce, b"x", None)
    assert keys[19].cipher.decrypt(nonce, sealed, None) == b"x"


async def test_a_key_is_read_only_within_its_organization(engine: AsyncEngine) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    key_a = await DatabaseOrgKeys(engine).active_key(org_a.id)
    with pytest.raises(OrgKeyUnavailable, match="has no data key"):
        await DatabaseOrgKeys(engine).key(org_b.id, key_a.key_id)


async def test_a_wrapped_key_moved_to_another_organization_does_not_open(
    engine: AsyncEngine,
) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    key_a = await DatabaseOrgKeys(engine).active_key(org_a.id)
    key_b = await DatabaseOrgKeys(engine).active_key(org_b.id)
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_a.id)
        wrapped = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT wrapped_key FROM org_data_keys WHERE key_id = :k").bindparams(
                    k=key_a.key_id
                )
            )
        ).scalar()
    await run_sql(
        engine,
        "UPDATE org_data_keys SET wrapped_key = :w WHERE key_id = :k",
        org_b.id,
        w=wrapped,
        k=key_b.key_id,
    )
    with pytest.raises(InvalidTag):
        await DatabaseOrgKeys(engine).key(org_b.id, key_b.key_id)


async def test_destroyed_keys_never_open_again_and_none_is_made_afresh(
    engine: AsyncEngine,
) -> None:
    org = await make_org(engine)
    source = DatabaseOrgKeys(engine)
    old = await source.active_key(org.id)
    async with session_factory(engine)() as session, session.begin():
        assert await destroy_org_keys(org_ctx(org.id), session) == 1
    source.forget_org(org.id)
    with pytest.raises(OrgKeyUnavailable, match="was destroyed"):
        await source.key(org.id, old.key_id)
    with pytest.raises(OrgKeyUnavailable, match="was destroyed"):
        await DatabaseOrgKeys(engine).key(org.id, old.key_id)
    # Whatever still asks (a straggling run of the closed organization) seals nothing new.
    with pytest.raises(OrgKeyUnavailable, match="were destroyed"):
        await source.active_key(org.id)


async def test_workflow_ids_map_to_their_run_organization_or_none(engine: AsyncEngine) -> None:
    source = DatabaseOrgKeys(engine)
    assert await source.run_org(f"run-{uuid.uuid4()}") is None
    assert await source.run_org("checkpoint-anything") is None
    org = await make_org(engine)
    source.remember_run("run-remembered", org.id)
    assert await source.run_org("run-remembered") == org.id
