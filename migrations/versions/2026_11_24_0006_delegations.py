"""Delegations: a member names another member to decide their approval steps for a period.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE delegations (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            delegator_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            delegate_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            starts_at timestamptz NOT NULL,
            ends_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz,
            CHECK (delegator_id <> delegate_id),
            CHECK (starts_at < ends_at)
        );
        CREATE INDEX ix_delegations_delegate ON delegations (org_id, delegate_id, ends_at);
        CREATE INDEX ix_delegations_delegator ON delegations (org_id, delegator_id);
        ALTER TABLE delegations ENABLE ROW LEVEL SECURITY;
        ALTER TABLE delegations FORCE ROW LEVEL SECURITY;
        CREATE POLICY delegations_tenant ON delegations
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE ON delegations TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE delegations;")
