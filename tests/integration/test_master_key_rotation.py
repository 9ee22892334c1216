"""Master key rotation through `blocks keys`: what was sealed before still reads after, the old key
leaves, and a wrong or missing master key stops a process with a clear message.

A PostgreSQL of its own: rotation re-wraps every organization's keys, which on the session's
database would move the keys other tests read with the session's master key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.common.v1 import Payload

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.field_crypto import (
    MasterKeyError,
    MasterKeys,
    current_master_keys,
    install_master_keys,
)
from blocks.infra.crypto.key_specs import new_payload_key_spec, parse_payload_keys
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.temporal.payload_codec import EncryptionCodec
from blocks.models.audit.events import append_events, list_events
from blocks.models.audit.personal_data import reveal
from blocks.models.identity.orgs import create_org_with_owner
from blocks.models.keys.master_keys import check_master_keys
from blocks.models.keys.org_keys import DatabaseOrgKeys
from tests.support import migrated_database

OLD = new_payload_key_spec("k1")
NEW = new_payload_key_spec("k2")


@pytest.fixture(scope="module")
async def own_database(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[PostgresCredentials, AsyncEngine]]:
    async with migrated_database(tmp_path_factory.mktemp("keys-pg")) as database:
        yield database


@pytest.fixture
def master_keys_restored() -> Iterator[None]:
    """This test installs its own master keys; the session's go back afterwards."""
    session_keys = current_master_keys()
    yield
    install_master_keys(session_keys)


def _keys_cli(url: str, master_spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKS_DATABASE_URL": url, "BLOCKS_MASTER_KEYS": master_spec}
    return subprocess.run(
        [sys.executable, "-m", "blocks.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_rotation_keeps_everything_readable_and_retires_the_old_key(
    own_database: tuple[PostgresCredentials, AsyncEngine], master_keys_restored: None
) -> None:
    credentials, engine = own_database
    install_master_keys(MasterKeys.parse(OLD))
    await check_master_keys(engine, MasterKeys.parse(OLD))
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        org, owner, _ = await create_org_with_owner(
            session, slug="rotate", name="Rotate", owner_email="o@rotate.test", owner_name="O"
        )
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=owner.id, roles=(Role.OWNER,), auth=AuthMethod.API_KEY
    )
    async with sessions() as session, session.begin():
        await append_events(
            ctx,
            session,
            [
                AuditRecord(
                    action="test.personal",
                    actor_type=ActorType.USER,
                    actor_id=str(owner.id),
                    actor_email="o@rotate.test",
                )
            ],
        )
    codec = EncryptionCodec(
        *parse_payload_keys(new_payload_key_spec("p")), org_keys=DatabaseOrgKeys(engine)
    )
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'"quarterly numbers"')
    [sealed] = await codec.for_org(org.id).encode([original])

    status = _keys_cli(credentials.url(), OLD, "status")
    assert status.returncode == 0, status.stderr
    assert "k1" in status.stdout
    assert "active" in status.stdout

    # Only the new key configured while the old still wraps keys: refused, naming the old key.
    missing = _keys_cli(credentials.url(), NEW, "status")
    assert missing.returncode == 1
    assert "lacks key 'k1'" in " ".join(missing.stdout.split())

    rotated = _keys_cli(credentials.url(), f"{NEW},{OLD}", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    summary = " ".join(rotated.stdout.split())
    assert "1 organization keys" in summary, summary
    assert "1 person keys" in summary, summary
    assert "Retired (may now leave BLOCKS_MASTER_KEYS): k1" in summary

    # The old key removed: everything sealed before the rotation still opens.
    install_master_keys(MasterKeys.parse(NEW))
    await check_master_keys(engine, MasterKeys.parse(NEW))
    fresh = EncryptionCodec(
        *parse_payload_keys(new_payload_key_spec("p")), org_keys=DatabaseOrgKeys(engine)
    )
    assert await fresh.decode([sealed]) == [original]
    async with sessions() as session, session.begin():
        events = await list_events(ctx, session, limit=10)
        emails = {r.actor_email for r in await reveal(ctx, session, events)}
    assert "o@rotate.test" in emails
    after = _keys_cli(credentials.url(), NEW, "status")
    assert after.returncode == 0, after.stderr
    assert "retired" in after.stdout


async def test_a_wrong_master_key_under_a_known_id_stops_the_start(
    own_database: tuple[PostgresCredentials, AsyncEngine],
) -> None:
    credentials, engine = own_database
    await check_master_keys(engine, MasterKeys.parse(NEW))
    impostor = new_payload_key_spec("k2")  # the same id, other bytes
    with pytest.raises(MasterKeyError, match="check value does not open"):
        await check_master_keys(engine, MasterKeys.parse(impostor))
    refused = _keys_cli(credentials.url(), impostor, "status")
    assert refused.returncode == 1
    assert "is not the key this database knows" in " ".join(refused.stdout.split())
