"""Signed audit checkpoints: the chain head of an organization, signed with Ed25519.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_checkpoints (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            seq bigint NOT NULL,
            hash varchar(64) NOT NULL,
            signed_at timestamptz NOT NULL,
            key_id varchar(64) NOT NULL,
            signature text NOT NULL
        );
        CREATE INDEX ix_audit_checkpoints_org_seq ON audit_checkpoints (org_id, seq);
        CREATE TRIGGER audit_checkpoints_no_update_delete
            BEFORE UPDATE OR DELETE ON audit_checkpoints
            FOR EACH ROW EXECUTE FUNCTION blocks_refuse_audit_change();
        CREATE TRIGGER audit_checkpoints_no_truncate
            BEFORE TRUNCATE ON audit_checkpoints
            FOR EACH STATEMENT EXECUTE FUNCTION blocks_refuse_audit_change();
        ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
        ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
        CREATE POLICY audit_checkpoints_tenant ON audit_checkpoints
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_checkpoints;")
