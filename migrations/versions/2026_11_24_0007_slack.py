"""Slack: each organization's installation (workspace, channel, sealed bot token) and user links.

The bot token is stored sealed with AES-256-GCM under the master keys (never in plaintext). An
interaction names its Slack workspace (team) and is verified by the deployment's signing secret;
finding the team's organization is the one read across tenants, so it goes through
`blocks_resolve_slack_team`, which may see only the row of the team it was asked about and then
binds the transaction to that organization (like `blocks_resolve_api_key`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE slack_installations (
            org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE RESTRICT,
            team_id varchar(32) NOT NULL,
            channel_id varchar(32) NOT NULL,
            bot_token_key_id varchar(64) NOT NULL,
            bot_token_sealed bytea NOT NULL,
            installed_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            -- One organization per workspace, so an interaction's team names one organization.
            CONSTRAINT slack_installations_team_id_key UNIQUE (team_id)
        );
        CREATE TABLE slack_user_links (
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            slack_user_id varchar(32) NOT NULL,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (org_id, slack_user_id)
        );
        CREATE INDEX ix_slack_user_links_user ON slack_user_links (org_id, user_id);

        ALTER TABLE slack_installations ENABLE ROW LEVEL SECURITY;
        ALTER TABLE slack_installations FORCE ROW LEVEL SECURITY;
        CREATE POLICY slack_installations_tenant ON slack_installations
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        -- Read-only and only for the one team `blocks_resolve_slack_team` names for a moment.
        CREATE POLICY slack_installations_by_team ON slack_installations FOR SELECT
            USING (team_id = NULLIF(current_setting('app.slack_team_id', true), ''));
        ALTER TABLE slack_user_links ENABLE ROW LEVEL SECURITY;
        ALTER TABLE slack_user_links FORCE ROW LEVEL SECURITY;
        CREATE POLICY slack_user_links_tenant ON slack_user_links
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

        -- The organization that installed a Slack team, with the transaction bound to it; NULL
        -- (and nothing bound) when no organization did.
        CREATE FUNCTION blocks_resolve_slack_team(p_team text) RETURNS uuid
        LANGUAGE plpgsql AS $$
        DECLARE
            v_org uuid;
        BEGIN
            PERFORM set_config('app.slack_team_id', p_team, true);
            SELECT s.org_id INTO v_org FROM slack_installations s WHERE s.team_id = p_team;
            PERFORM set_config('app.slack_team_id', '', true);
            IF v_org IS NOT NULL THEN
                PERFORM set_config('app.org_id', v_org::text, true);
            END IF;
            RETURN v_org;
        END;
        $$;

        GRANT SELECT, INSERT, UPDATE, DELETE ON slack_installations, slack_user_links
            TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_resolve_slack_team(text);
        DROP TABLE slack_user_links;
        DROP TABLE slack_installations;
        """
    )
