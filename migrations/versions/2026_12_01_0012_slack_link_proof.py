"""Slack links carry the member's own proof: a code they start signed in and send from Slack.

`slack_link_codes` holds each code's SHA-256 (never the code), bound to one member of one
organization, single-use and expiring. `slack_user_links.confirmed_at` records when the member
confirmed a link; links made before (by an admin, for any member, with no proof from that member)
keep it NULL and decide nothing until the member links again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE slack_user_links ADD COLUMN confirmed_at timestamptz;

        CREATE TABLE slack_link_codes (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            code_hash varchar(64) NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            CONSTRAINT slack_link_codes_code_key UNIQUE (org_id, code_hash)
        );
        CREATE INDEX ix_slack_link_codes_user ON slack_link_codes (org_id, user_id)
            WHERE used_at IS NULL;

        ALTER TABLE slack_link_codes ENABLE ROW LEVEL SECURITY;
        ALTER TABLE slack_link_codes FORCE ROW LEVEL SECURITY;
        CREATE POLICY slack_link_codes_tenant ON slack_link_codes
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE, DELETE ON slack_link_codes TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE slack_link_codes;
        ALTER TABLE slack_user_links DROP COLUMN confirmed_at;
        """
    )
