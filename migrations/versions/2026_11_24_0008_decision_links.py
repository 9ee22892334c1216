"""Signed decision links: single-use, expiring, bound to one approver of one step; an org policy
says whether a link alone may decide (otherwise the approver must be signed in).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE organizations ADD COLUMN link_only_decisions boolean NOT NULL DEFAULT false;
        CREATE TABLE decision_links (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            run_id uuid NOT NULL REFERENCES runs(id) ON DELETE RESTRICT,
            step_id varchar(200) NOT NULL,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(64) NOT NULL,
            notice_id varchar(64) NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            UNIQUE (notice_id, user_id)
        );
        CREATE INDEX ix_decision_links_org_run ON decision_links (org_id, run_id);
        -- Like api_keys, no row-level security: a link is found by its lookup id before its
        -- organization is known; every other read filters by org in the data-access functions.
        GRANT SELECT, INSERT, UPDATE ON decision_links TO blocks_app;

        -- Find a link by its public lookup id and bind the transaction to its organization, in
        -- one round trip (the secret is compared by the caller, in constant time).
        CREATE FUNCTION blocks_find_decision_link(p_lookup text)
        RETURNS SETOF decision_links
        LANGUAGE plpgsql AS $$
        DECLARE
            v_org uuid;
        BEGIN
            SELECT l.org_id INTO v_org FROM decision_links l WHERE l.lookup = p_lookup;
            IF v_org IS NULL THEN
                RETURN;
            END IF;
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY SELECT * FROM decision_links l WHERE l.lookup = p_lookup;
        END;
        $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_find_decision_link(text);
        DROP TABLE decision_links;
        ALTER TABLE organizations DROP COLUMN link_only_decisions;
        """
    )
