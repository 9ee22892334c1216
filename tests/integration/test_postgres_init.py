"""deploy/postgres-init.sql on a real, empty PostgreSQL, as the compose deployment's first start
runs it: each role gets its own password, and none opens more than its holder needs."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from blocks.infra.embedded.postgres import POSTGRES_BIN_PATH, EmbeddedPostgres, PostgresCredentials
from blocks.infra.migrate import upgrade_database
from tests.support import free_port

INIT_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres-init.sql"
PASSWORD_VARIABLES = ("DB_OWNER_PASSWORD", "DB_APP_PASSWORD", "DB_TEMPORAL_PASSWORD")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    superuser_password: str

    def url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url("postgres", self.superuser_password, database)


def _emptied(credentials: PostgresCredentials) -> None:
    """What the postgres image starts from: a cluster with its superuser and nothing of ours."""
    with psycopg.connect(credentials.url(database="postgres", superuser=True)) as conn:
        conn.autocommit = True
        conn.execute("DROP DATABASE IF EXISTS blocks")
        for role in ("blocks", "blocks_owner", "blocks_app"):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("init-pg"), port=free_port())
    credentials = embedded.start()
    try:
        _emptied(credentials)
        yield Server(credentials.host, credentials.port, credentials.superuser_password)
    finally:
        embedded.stop()


def _run_init(server: Server, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """psql -f, as the image's docker-entrypoint.sh runs an init script (as the superuser)."""
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-f", str(INIT_SQL), server.superuser_url()],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def _connects(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="module")
def passwords(server: Server) -> dict[str, str]:
    generated = {name: secrets.token_hex(24) for name in PASSWORD_VARIABLES}
    done = _run_init(server, generated)
    assert done.returncode == 0, done.stderr
    upgrade_database(server.url("blocks_owner", generated["DB_OWNER_PASSWORD"], "blocks"))
    return {
        "blocks_owner": generated["DB_OWNER_PASSWORD"],
        "blocks": generated["DB_APP_PASSWORD"],
        "temporal": generated["DB_TEMPORAL_PASSWORD"],
        "postgres": server.superuser_password,
    }


def test_a_missing_password_stops_the_script_before_any_role_exists(server: Server) -> None:
    # Run before the real initialisation of this module (the `passwords` fixture).
    env = {name: secrets.token_hex(8) for name in PASSWORD_VARIABLES if name != "DB_APP_PASSWORD"}
    done = _run_init(server, env)
    assert done.returncode != 0
    assert "DB_APP_PASSWORD is not set" in done.stderr
    with psycopg.connect(server.superuser_url()) as conn:
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname IN ('blocks', 'blocks_owner', 'temporal')"
        ).fetchall()
    assert roles == []


def test_each_role_opens_with_its_own_password_only(
    server: Server, passwords: dict[str, str]
) -> None:
    databases = {"blocks_owner": "blocks", "blocks": "blocks", "temporal": "temporal"}
    for role, database in databases.items():
        assert _connects(server.url(role, passwords[role], database)), role
        for other, password in passwords.items():
            if other != role:
                # Holding another service's password gives nothing as this role.
                assert not _connects(server.url(role, password, database)), (role, other)


def test_each_service_reaches_only_its_own_database(
    server: Server, passwords: dict[str, str]
) -> None:
    assert not _connects(server.url("temporal", passwords["temporal"], "blocks"))
    for role in ("blocks", "blocks_owner"):
        for database in ("temporal", "temporal_visibility"):
            assert not _connects(server.url(role, passwords[role], database)), (role, database)
    # Temporal's auto-setup (SKIP_DB_CREATE) creates its schema as the owner of its databases.
    for database in ("temporal", "temporal_visibility"):
        with psycopg.connect(server.url("temporal", passwords["temporal"], database)) as conn:
            conn.execute("CREATE TABLE schema_version (version text)")


def test_the_app_role_cannot_rewrite_the_audit_log_or_bypass_row_level_security(
    server: Server, passwords: dict[str, str]
) -> None:
    with psycopg.connect(server.url("blocks", passwords["blocks"], "blocks")) as conn:
        super_or_bypass = conn.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert super_or_bypass == (False,)
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_events SET action = action WHERE id = %s", (uuid.uuid4(),))
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_events")
        conn.rollback()
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'")
        assert owner.fetchone() == ("blocks_owner",)
