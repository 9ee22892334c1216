"""Identity: passwords, two-factor, server-side sessions, emailed tokens, invites, deactivation.

Sessions, emailed tokens and backup codes belong to a person before any organization is chosen,
so they carry no row-level security (like API keys, they are found by a public lookup id and a
hashed secret). Invites belong to one organization but are found the same way by whoever holds
the emailed token; every other query on them filters by organization. A member sees their own
memberships across organizations (the organization picker) through `app.user_id`, set only by
session resolution. The platform organization holds the audit chain of events that happen
before an organization is chosen (sign-up, sign-in, resets); it has no members.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PLATFORM_ORG_ID = "00000000-0000-0000-0000-000000000000"  # blocks.core.context.PLATFORM_ORG


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE users
            ADD COLUMN password_hash varchar(500),
            ADD COLUMN password_changed_at timestamptz,
            ADD COLUMN email_verified_at timestamptz,
            ADD COLUMN totp_key_id varchar(64),
            ADD COLUMN totp_secret_sealed bytea,
            ADD COLUMN totp_enabled_at timestamptz,
            ADD COLUMN totp_last_counter bigint;
        ALTER TABLE organizations
            ADD COLUMN require_2fa boolean NOT NULL DEFAULT false,
            ADD COLUMN closed_at timestamptz;
        ALTER TABLE memberships
            ADD COLUMN deactivated_at timestamptz,
            ADD COLUMN deactivated_by uuid REFERENCES users(id) ON DELETE RESTRICT;

        CREATE TABLE user_sessions (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(64) NOT NULL,
            org_id uuid REFERENCES organizations(id) ON DELETE RESTRICT,
            mfa_pending boolean NOT NULL,
            created_at timestamptz NOT NULL,
            last_seen_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            authenticated_at timestamptz NOT NULL,
            revoked_at timestamptz,
            revoke_reason varchar(100),
            ip varchar(64),
            user_agent varchar(500)
        );
        CREATE INDEX ix_user_sessions_user ON user_sessions (user_id) WHERE revoked_at IS NULL;

        CREATE TABLE auth_tokens (
            id uuid PRIMARY KEY,
            purpose varchar(20) NOT NULL,
            email varchar(320) NOT NULL,
            user_id uuid REFERENCES users(id) ON DELETE RESTRICT,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(64) NOT NULL,
            data jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz
        );

        CREATE TABLE user_backup_codes (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            code_hash varchar(64) NOT NULL,
            created_at timestamptz NOT NULL,
            used_at timestamptz
        );
        CREATE INDEX ix_user_backup_codes_user ON user_backup_codes (user_id);

        CREATE TABLE invites (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            email varchar(320) NOT NULL,
            roles varchar[] NOT NULL,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(64) NOT NULL,
            invited_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            accepted_at timestamptz,
            accepted_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            revoked_at timestamptz
        );
        CREATE INDEX ix_invites_org_email ON invites (org_id, email);

        GRANT SELECT, INSERT, UPDATE, DELETE
            ON user_sessions, auth_tokens, user_backup_codes, invites TO blocks_app;

        -- A person's own memberships, across organizations, for the organization picker.
        CREATE POLICY memberships_own ON memberships FOR SELECT
            USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);

        INSERT INTO organizations (id, slug, name, created_at)
        VALUES ('PLATFORM_ORG_ID', '_platform', 'Platform (sign-in and sign-up events)', now());

        -- API keys of a deactivated member or a closed organization resolve to no roles; the
        -- caller also learns whether the organization requires two-factor sign-in and the
        -- member has it (a key does not get around that requirement).
        DROP FUNCTION blocks_resolve_api_key(text);
        CREATE FUNCTION blocks_resolve_api_key(p_lookup text)
        RETURNS TABLE (
            key_id uuid, org_id uuid, user_id uuid, secret_hash text, key_roles varchar[],
            expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz,
            email text, deactivated_at timestamptz, member_roles varchar[],
            require_2fa boolean, has_2fa boolean
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
                       k.revoked_at, k.last_used_at, u.email::text, u.deactivated_at, m.roles,
                       o.require_2fa, u.totp_enabled_at IS NOT NULL
                FROM api_keys k
                JOIN users u ON u.id = k.user_id
                JOIN organizations o ON o.id = k.org_id
                LEFT JOIN memberships m ON m.org_id = k.org_id AND m.user_id = k.user_id
                    AND m.deactivated_at IS NULL AND o.closed_at IS NULL
                WHERE k.lookup = p_lookup;
        END;
        $$;
        """.replace("PLATFORM_ORG_ID", PLATFORM_ORG_ID)
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_resolve_api_key(text);
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
        DELETE FROM organizations WHERE id = 'PLATFORM_ORG_ID';
        DROP POLICY memberships_own ON memberships;
        DROP TABLE invites;
        DROP TABLE user_backup_codes;
        DROP TABLE auth_tokens;
        DROP TABLE user_sessions;
        ALTER TABLE memberships DROP COLUMN deactivated_by, DROP COLUMN deactivated_at;
        ALTER TABLE organizations DROP COLUMN closed_at, DROP COLUMN require_2fa;
        ALTER TABLE users
            DROP COLUMN totp_last_counter, DROP COLUMN totp_enabled_at,
            DROP COLUMN totp_secret_sealed, DROP COLUMN totp_key_id,
            DROP COLUMN email_verified_at, DROP COLUMN password_changed_at,
            DROP COLUMN password_hash;
        """.replace("PLATFORM_ORG_ID", PLATFORM_ORG_ID)
    )
