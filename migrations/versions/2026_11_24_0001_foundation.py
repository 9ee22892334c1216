"""Foundation: organizations, users, memberships, API keys, runs and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Tables whose rows belong to one organization: row-level security keyed on app.org_id, forced
# even for the owning role, so a query that forgot its org filter still sees one tenant only.
TENANT_TABLES = ("memberships", "runs", "audit_events", "audit_chain_heads")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE organizations (
            id uuid PRIMARY KEY,
            slug varchar(63) NOT NULL UNIQUE,
            name varchar(200) NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            email varchar(320) NOT NULL UNIQUE,
            display_name varchar(200) NOT NULL,
            created_at timestamptz NOT NULL,
            deactivated_at timestamptz
        );
        CREATE TABLE memberships (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            roles varchar[] NOT NULL,
            created_at timestamptz NOT NULL,
            UNIQUE (org_id, user_id)
        );
        CREATE INDEX ix_memberships_org_id ON memberships (org_id);
        CREATE TABLE api_keys (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            name varchar(200) NOT NULL,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(64) NOT NULL,
            roles varchar[] NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz,
            last_used_at timestamptz,
            revoked_at timestamptz
        );
        CREATE INDEX ix_api_keys_org_id ON api_keys (org_id);
        CREATE TABLE runs (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            workflow_name varchar(200) NOT NULL,
            workflow_id varchar(200) NOT NULL UNIQUE,
            requested_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            start_state varchar(20) NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX ix_runs_org_id ON runs (org_id);
        CREATE INDEX ix_runs_created_at ON runs (created_at);
        CREATE TABLE audit_events (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            seq bigint NOT NULL,
            occurred_at timestamptz NOT NULL,
            action varchar(100) NOT NULL,
            actor_type varchar(20) NOT NULL,
            actor_id varchar(100),
            actor_email varchar(320),
            target_type varchar(50),
            target_id varchar(200),
            run_id varchar(100),
            outcome varchar(20) NOT NULL,
            reason varchar(500),
            ip varchar(64),
            user_agent varchar(500),
            data jsonb NOT NULL,
            prev_hash varchar(64) NOT NULL,
            hash varchar(64) NOT NULL,
            UNIQUE (org_id, seq)
        );
        CREATE INDEX ix_audit_events_run_id ON audit_events (run_id);
        CREATE TABLE audit_chain_heads (
            org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE RESTRICT,
            seq bigint NOT NULL,
            hash varchar(64) NOT NULL
        );

        -- The audit log is append-only: no UPDATE, DELETE or TRUNCATE, whoever asks.
        CREATE FUNCTION blocks_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$;
        CREATE TRIGGER audit_events_no_update_delete
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION blocks_refuse_audit_change();
        CREATE TRIGGER audit_events_no_truncate
            BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION blocks_refuse_audit_change();
        """
    )
    for table in TENANT_TABLES:
        op.execute(
            f"""
            ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
            ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
            CREATE POLICY {table}_tenant ON {table}
                USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
                WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
            """
        )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE audit_chain_heads;
        DROP TRIGGER audit_events_no_truncate ON audit_events;
        DROP TRIGGER audit_events_no_update_delete ON audit_events;
        DROP TABLE audit_events;
        DROP FUNCTION blocks_refuse_audit_change();
        DROP TABLE runs;
        DROP TABLE api_keys;
        DROP TABLE memberships;
        DROP TABLE users;
        DROP TABLE organizations;
        """
    )
