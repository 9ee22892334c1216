"""Fast paths: one round trip to resolve an API key and bind its org; one to lock an audit chain head.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- Resolve an API key by its public lookup id and scope the transaction to its organization,
        -- then return the key, its user and the membership in one row. The secret is compared by
        -- the caller (in constant time); an unknown lookup returns no row and binds nothing.
        CREATE FUNCTION blocks_resolve_api_key(p_lookup text)
        RETURNS TABLE (
            key_id uuid, org_id uuid, user_id uuid, secret_hash text, key_roles varchar[],
            expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz,
            email text, deactivated_at timestamptz, member_roles varchar[]
        )
        LANGUAGE plpgsql AS $$
        DECLARE
            v_org uuid;
        BEGIN
            SELECT k.org_id INTO v_org FROM api_keys k WHERE k.lookup = p_lookup;
            IF v_org IS NULL THEN
                RETURN;
            END IF;
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY
                SELECT k.id, k.org_id, k.user_id, k.secret_hash::text, k.roles, k.expires_at,
                       k.revoked_at, k.last_used_at, u.email::text, u.deactivated_at, m.roles
                FROM api_keys k
                JOIN users u ON u.id = k.user_id
                LEFT JOIN memberships m ON m.org_id = k.org_id AND m.user_id = k.user_id
                WHERE k.lookup = p_lookup;
        END;
        $$;

        -- Bind the transaction to an organization and take its audit chain head's row lock
        -- (creating the head on first use); also report which of p_ids are already in the log.
        CREATE FUNCTION blocks_audit_lock_head(p_org uuid, p_genesis text, p_ids uuid[])
        RETURNS TABLE (seq bigint, hash text, existing uuid[])
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM set_config('app.org_id', p_org::text, true);
            RETURN QUERY
                WITH head AS (
                    INSERT INTO audit_chain_heads AS h (org_id, seq, hash)
                    VALUES (p_org, 0, p_genesis)
                    ON CONFLICT (org_id) DO UPDATE SET seq = h.seq
                    RETURNING h.seq, h.hash
                )
                SELECT head.seq, head.hash::text,
                       CASE WHEN cardinality(p_ids) = 0 THEN ARRAY[]::uuid[]
                            ELSE ARRAY(SELECT e.id FROM audit_events e
                                       WHERE e.org_id = p_org AND e.id = ANY(p_ids)) END
                FROM head;
        END;
        $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_audit_lock_head(uuid, text, uuid[]);
        DROP FUNCTION blocks_resolve_api_key(text);
        """
    )
