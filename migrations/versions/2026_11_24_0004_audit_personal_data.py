"""Per-person data keys for the audit log's personal fields, and room for their ciphertext.

Each (organization, user) gets a random 32-byte data key, stored wrapped (AES-256-GCM) by a
master key from BLOCKS_MASTER_KEYS. `append_events` encrypts actor_email, ip and user_agent of
that user's events with it and hashes the ciphertext, so erasing the person (destroying the
key) leaves every stored row, and so the chain, exactly as it was.

The key table is deliberately not append-only: erasure overwrites `wrapped_key` with NULL and
sets `erased_at`. The row stays as a tombstone (no key material, only ids and times) so a
reader can tell "erased" from "missing", and key ids are never reused. A trigger allows only
two updates: erasure of a live key, and re-wrapping a live key under another master key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- Ciphertext is longer than the plaintext it replaces: `enc:v1:<key id>:<base64>` of up to
        -- 4 bytes per character plus nonce and tag. The app still caps the plaintext at the old
        -- widths (320, 64, 500 characters). Widening a varchar rewrites nothing.
        ALTER TABLE audit_events
            ALTER COLUMN actor_email TYPE varchar(2048),
            ALTER COLUMN ip TYPE varchar(512),
            ALTER COLUMN user_agent TYPE varchar(3072);

        CREATE TABLE audit_subject_keys (
            key_id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            master_key_id varchar(64) NOT NULL,
            wrapped_key bytea,
            created_at timestamptz NOT NULL,
            erased_at timestamptz,
            CONSTRAINT audit_subject_keys_erased_means_no_key
                CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
        );
        -- One live key per person per organization; erased tombstones do not count.
        CREATE UNIQUE INDEX ux_audit_subject_keys_live
            ON audit_subject_keys (org_id, user_id) WHERE erased_at IS NULL;
        CREATE INDEX ix_audit_subject_keys_org_user ON audit_subject_keys (org_id, user_id);

        CREATE FUNCTION blocks_subject_key_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF NEW.key_id = OLD.key_id AND NEW.org_id = OLD.org_id
                   AND NEW.user_id = OLD.user_id AND NEW.created_at = OLD.created_at
                   AND OLD.erased_at IS NULL THEN
                    -- Erasure: the key material goes, the tombstone stays.
                    IF NEW.erased_at IS NOT NULL AND NEW.wrapped_key IS NULL THEN
                        RETURN NEW;
                    END IF;
                    -- Re-wrapping a live key under another master key (rotation).
                    IF NEW.erased_at IS NULL AND NEW.wrapped_key IS NOT NULL THEN
                        RETURN NEW;
                    END IF;
                END IF;
            END IF;
            -- Anything else (un-erasing, re-assigning a key, deleting a tombstone) is refused.
            RAISE EXCEPTION 'audit_subject_keys allows only erasure or re-wrapping (% refused)',
                TG_OP USING ERRCODE = 'insufficient_privilege';
        END;
        $$;
        CREATE TRIGGER audit_subject_keys_guard
            BEFORE UPDATE OR DELETE ON audit_subject_keys
            FOR EACH ROW EXECUTE FUNCTION blocks_subject_key_guard();
        CREATE TRIGGER audit_subject_keys_no_truncate
            BEFORE TRUNCATE ON audit_subject_keys
            FOR EACH STATEMENT EXECUTE FUNCTION blocks_subject_key_guard();

        ALTER TABLE audit_subject_keys ENABLE ROW LEVEL SECURITY;
        ALTER TABLE audit_subject_keys FORCE ROW LEVEL SECURITY;
        CREATE POLICY audit_subject_keys_tenant ON audit_subject_keys
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

        -- Bind the transaction to the organization, create the live key of each candidate
        -- person who has none (candidates carry a fresh key wrapped by the app), and return the
        -- live key of every candidate. Two statements, not one: in READ COMMITTED each statement
        -- of a volatile function takes a new snapshot, so the SELECT sees a key that a
        -- concurrent transaction committed while the INSERT waited on its conflict.
        -- Candidates are inserted in user_id order so two batches cannot deadlock. The output
        -- columns share the table's names; `use_column` makes them mean the columns in SQL.
        CREATE FUNCTION blocks_audit_subject_keys(p_org uuid, p_candidates jsonb)
        RETURNS TABLE (user_id uuid, key_id uuid, master_key_id text, wrapped_key bytea)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        BEGIN
            PERFORM set_config('app.org_id', p_org::text, true);
            INSERT INTO audit_subject_keys AS k
                (key_id, org_id, user_id, master_key_id, wrapped_key, created_at)
            SELECT c.key_id, p_org, c.user_id, c.master_key_id,
                   decode(c.wrapped_key, 'base64'), now()
            FROM jsonb_to_recordset(p_candidates)
                AS c(user_id uuid, key_id uuid, master_key_id text, wrapped_key text)
            ORDER BY c.user_id
            ON CONFLICT (org_id, user_id) WHERE erased_at IS NULL DO NOTHING;
            RETURN QUERY
                SELECT k.user_id, k.key_id, k.master_key_id::text, k.wrapped_key
                FROM audit_subject_keys k
                WHERE k.org_id = p_org AND k.erased_at IS NULL
                  AND k.user_id IN (SELECT c.user_id FROM jsonb_to_recordset(p_candidates)
                                    AS c(user_id uuid));
        END;
        $$;

        -- The keys, then the chain head's lock (blocks_audit_lock_head), in one round trip, so
        -- an append with personal fields still costs two. Keys first: the head is not held
        -- while they are created. They come back as one jsonb array beside the head.
        CREATE FUNCTION blocks_audit_lock_head_with_keys(
            p_org uuid, p_genesis text, p_ids uuid[], p_candidates jsonb
        )
        RETURNS TABLE (seq bigint, hash text, existing uuid[], keys jsonb)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_keys jsonb;
        BEGIN
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'user_id', s.user_id, 'key_id', s.key_id,
                       'master_key_id', s.master_key_id,
                       'wrapped_key', encode(s.wrapped_key, 'hex'))), '[]'::jsonb)
              INTO v_keys
              FROM blocks_audit_subject_keys(p_org, p_candidates) AS s;
            RETURN QUERY
                SELECT h.seq, h.hash, h.existing, v_keys
                FROM blocks_audit_lock_head(p_org, p_genesis, p_ids) AS h;
        END;
        $$;
        """
    )


def downgrade() -> None:
    # Narrowing the columns fails if encrypted values were written; that is the point: a
    # downgrade must not silently truncate the log.
    op.execute(
        """
        DROP FUNCTION blocks_audit_lock_head_with_keys(uuid, text, uuid[], jsonb);
        DROP FUNCTION blocks_audit_subject_keys(uuid, jsonb);
        DROP TABLE audit_subject_keys;
        DROP FUNCTION blocks_subject_key_guard();
        ALTER TABLE audit_events
            ALTER COLUMN actor_email TYPE varchar(320),
            ALTER COLUMN ip TYPE varchar(64),
            ALTER COLUMN user_agent TYPE varchar(500);
        """
    )
