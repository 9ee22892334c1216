"""Audit appends in one round trip: the chain is linked inside PostgreSQL under the head's lock.

The client sends each event with its canonical (RFC 8785) payload split around the value of
`seq` — the one hashed field only known under the lock — and the function, holding the lock,
numbers the events, computes hash = sha256(prev_hash || "\\n" || prefix || seq || suffix), which is
byte-for-byte the hash `blocks.core.audit_chain.chain_hash` defines, inserts them and advances the
head. The lock is held for one statement instead of three client round trips, so appends to one
organization from many writers queue far less, and a single append costs what a plain INSERT does
in round trips (BEGIN, one statement, COMMIT).

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
        CREATE FUNCTION blocks_audit_append(p_org uuid, p_genesis text, p_rows jsonb)
        RETURNS TABLE (seq bigint, hash text, written integer)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
            v_seq bigint;
            v_hash text;
            v_new text;
            v_written integer := 0;
            r jsonb;
        BEGIN
            PERFORM set_config('app.org_id', p_org::text, true);
            INSERT INTO audit_chain_heads AS h (org_id, seq, hash)
                VALUES (p_org, 0, p_genesis)
                ON CONFLICT (org_id) DO UPDATE SET seq = h.seq
                RETURNING h.seq, h.hash INTO v_seq, v_hash;
            FOR r IN SELECT value FROM jsonb_array_elements(p_rows) LOOP
                -- A retried activity sends the same deterministic ids: written once.
                IF EXISTS (SELECT 1 FROM audit_events e
                           WHERE e.id = (r->>'id')::uuid AND e.org_id = p_org) THEN
                    CONTINUE;
                END IF;
                v_seq := v_seq + 1;
                v_new := encode(sha256(
                    convert_to(v_hash || E'\\n', 'UTF8')
                    || decode(r->>'hash_prefix', 'base64')
                    || convert_to(v_seq::text, 'UTF8')
                    || decode(r->>'hash_suffix', 'base64')), 'hex');
                INSERT INTO audit_events (
                    id, org_id, seq, occurred_at, action, actor_type, actor_id, actor_email,
                    target_type, target_id, run_id, outcome, reason, ip, user_agent, data,
                    prev_hash, hash)
                VALUES (
                    (r->>'id')::uuid, p_org, v_seq, (r->>'occurred_at')::timestamptz,
                    r->>'action', r->>'actor_type', r->>'actor_id', r->>'actor_email',
                    r->>'target_type', r->>'target_id', r->>'run_id', r->>'outcome',
                    r->>'reason', r->>'ip', r->>'user_agent', r->'data', v_hash, v_new);
                v_hash := v_new;
                v_written := v_written + 1;
            END LOOP;
            IF v_written > 0 THEN
                UPDATE audit_chain_heads SET seq = v_seq, hash = v_hash WHERE org_id = p_org;
            END IF;
            RETURN QUERY SELECT v_seq, v_hash, v_written;
        END;
        $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION blocks_audit_append(uuid, text, jsonb);")
