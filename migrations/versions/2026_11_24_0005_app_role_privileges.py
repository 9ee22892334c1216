"""The application role may only INSERT and SELECT the audit log.

Deployments run migrations as the owner of the tables and the API and workers as a login role
that is a member of `blocks_app` (`blocks dev` and docker-compose set this up; elsewhere:
`CREATE ROLE blocks_app NOLOGIN; GRANT blocks_app TO <app login role>;`). The app role then holds
ordinary DML on working tables, only SELECT and INSERT on `audit_events` and `audit_checkpoints`
(so even a compromised API cannot rewrite history, nor drop the triggers, which only the owner
can), and SELECT, INSERT, UPDATE on `audit_chain_heads` (the head advances). If a deployment runs
the app as the table owner, these grants are moot: the triggers remain the only guard.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_events", "audit_checkpoints")


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'blocks_app') THEN
                CREATE ROLE blocks_app NOLOGIN;
            END IF;
        END
        $$;
        GRANT USAGE ON SCHEMA public TO blocks_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO blocks_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints FROM blocks_app;
        REVOKE DELETE, TRUNCATE ON audit_chain_heads FROM blocks_app;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM blocks_app;
        -- Tables later migrations create are working tables unless they say otherwise.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM blocks_app;
        REVOKE ALL ON ALL TABLES IN SCHEMA public FROM blocks_app;
        REVOKE USAGE ON SCHEMA public FROM blocks_app;
        """
    )
