"""Audit appends in one statement when the writer already knows the chain head.

A process remembers the head it last wrote; its next append sends the events, linked after that
head, with the head it expects. This function advances the head only if it is still that one —
the UPDATE takes the head's row lock, so concurrent writers serialise and a stale expectation
simply fails (the caller then takes the lock path, which reads the current head). The chain stays
linear either way; the gain is one round trip instead of two when one writer appends in a row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION blocks_audit_append_if_head(
            p_org uuid, p_seq bigint, p_hash text, p_new_seq bigint, p_new_hash text, p_rows jsonb
        )
        RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM set_config('app.org_id', p_org::text, true);
            -- A retry of events already written needs the dedupe of the lock path. (An id written
            -- after this check would have moved the head, and the UPDATE below would not match.)
            IF EXISTS (
                SELECT 1 FROM audit_events e
                WHERE e.org_id = p_org
                  AND e.id IN (SELECT (x->>'id')::uuid FROM jsonb_array_elements(p_rows) AS x)
            ) THEN
                RETURN false;
            END IF;
            UPDATE audit_chain_heads SET seq = p_new_seq, hash = p_new_hash
                WHERE org_id = p_org AND seq = p_seq AND hash = p_hash;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
            INSERT INTO audit_events (
                id, org_id, seq, occurred_at, action, actor_type, actor_id, actor_email,
                target_type, target_id, run_id, outcome, reason, ip, user_agent, data,
                prev_hash, hash)
            SELECT id, org_id, seq, occurred_at, action, actor_type, actor_id, actor_email,
                   target_type, target_id, run_id, outcome, reason, ip, user_agent, data,
                   prev_hash, hash
            FROM jsonb_to_recordset(p_rows) AS r(
                id uuid, org_id uuid, seq bigint, occurred_at timestamptz, action text,
                actor_type text, actor_id text, actor_email text, target_type text,
                target_id text, run_id text, outcome text, reason text, ip text,
                user_agent text, data jsonb, prev_hash text, hash text);
            RETURN true;
        END;
        $$;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION blocks_audit_append_if_head(uuid, bigint, text, bigint, text, jsonb);"
    )
