"""Enterprise identity: identity providers (OIDC, SAML), external identities, SSO requests, verified
domains, IdP group mappings, enforced SSO with break-glass admins, and SCIM provisioning.

`identity_providers`: an organization's OIDC or SAML providers; `config` holds the protocol's
settings (checked by the API), `secret_sealed` the OIDC client secret sealed under the
organization's data key (write-only). `external_identities`: who a provider says a person is,
keyed on (provider, subject), never on email. `sso_requests`: each sign-in started (OIDC `state`
or SAML request id, hashed as `lookup`), bound to the browser that started it (`binding_hash`),
consumed once. `saml_seen_assertions`: assertion ids accepted, kept until they expire (replay).
`org_domains`: domains an organization proved by DNS (or its operator attested); one
organization owns a verified domain. `idp_group_mappings`: the admin's table from an IdP group
(claim value, SAML attribute value or SCIM group name) to roles and a member group; deny by
default. `organizations.sso_enforced` and `sso_break_glass` (user ids). `memberships.managed_by`:
'idp' for members an identity provider created (JIT or SCIM), whose roles follow their groups.
`user_sessions.sso_provider_id`/`sso_org_id`/`sso_mfa`: the provider a session signed in through
and whether it asserted multi-factor authentication. `blocks_resolve_api_key` also says whether
the key's organization enforces sign-on and whether its provider still has the key's member.

SCIM: `scim_tokens` (hashed, one live per organization; `blocks_resolve_scim_token` is the
pre-tenant lookup), `scim_users` (a SCIM User: its person, userName, externalId, active, the
resource's other attributes) and `scim_groups` + `scim_group_members`.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_TENANT = """
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_tenant ON {table}
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
"""
_OWNER = "(SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = 'public.{}'::regclass)"
_TOKENS_OWNER = _OWNER.format("scim_tokens")
_DOMAINS_OWNER = _OWNER.format("org_domains")
_KEYS_OWNER = _OWNER.format("api_keys")
# blocks_resolve_api_key as 0013 made it, plus what enforced sign-on needs: whether the key's
# organization enforces it, and whether its identity provider still has the key's member (a
# break-glass admin, an identity linked by a sign-in, or an active SCIM user).
_RESOLVE_API_KEY = """
        CREATE FUNCTION blocks_resolve_api_key(p_lookup text)
        RETURNS TABLE (
            key_id uuid, org_id uuid, user_id uuid, secret_hash text, key_roles varchar[],
            expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz,
            email text, deactivated_at timestamptz, member_roles varchar[],
            require_2fa boolean, has_2fa boolean{extra_columns}
        )
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_org uuid;
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            SELECT k.org_id INTO v_org FROM public.api_keys k WHERE k.lookup = p_lookup;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
            IF v_org IS NULL THEN
                RETURN;
            END IF;
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY
                SELECT k.id, k.org_id, k.user_id, k.secret_hash::text, k.roles, k.expires_at,
                       k.revoked_at, k.last_used_at, u.email::text, u.deactivated_at, m.roles,
                       o.require_2fa, u.totp_enabled_at IS NOT NULL{extra_values}
                FROM public.api_keys k
                JOIN public.users u ON u.id = k.user_id
                JOIN public.organizations o ON o.id = k.org_id
                LEFT JOIN public.memberships m ON m.org_id = k.org_id AND m.user_id = k.user_id
                    AND m.deactivated_at IS NULL AND o.closed_at IS NULL
                WHERE k.lookup = p_lookup;
        END;
        $$;
        DO $do$
        BEGIN
            EXECUTE format('ALTER FUNCTION blocks_resolve_api_key(text) OWNER TO %s', {owner});
        END
        $do$;
        REVOKE ALL ON FUNCTION blocks_resolve_api_key(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_resolve_api_key(text) TO blocks_app;
"""
_SSO_COLUMNS = ", sso_enforced boolean, idp_has_member boolean"
# Asked only of an organization that enforces sign-on (NULL elsewhere): the probes would cost every
# API-key request of every other organization two index lookups for nothing.
_SSO_VALUES = """,
                       o.sso_enforced,
                       CASE WHEN o.sso_enforced THEN
                           k.user_id = ANY (o.sso_break_glass)
                           OR EXISTS (SELECT FROM public.external_identities e
                                      WHERE e.org_id = k.org_id AND e.user_id = k.user_id)
                           OR EXISTS (SELECT FROM public.scim_users s
                                      WHERE s.org_id = k.org_id AND s.user_id = k.user_id
                                          AND s.active)
                       END"""
TENANT_TABLES = (
    "identity_providers",
    "external_identities",
    "sso_requests",
    "saml_seen_assertions",
    "org_domains",
    "idp_group_mappings",
    "scim_tokens",
    "scim_users",
    "scim_groups",
    "scim_group_members",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE identity_providers (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            name varchar(100) NOT NULL,
            protocol varchar(8) NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            config jsonb NOT NULL,
            secret_key_id uuid,
            secret_sealed bytea,
            secret_last4 varchar(4),
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            CONSTRAINT identity_providers_protocol CHECK (protocol IN ('oidc', 'saml'))
        );
        CREATE UNIQUE INDEX ux_identity_providers_live_name
            ON identity_providers (org_id, name) WHERE deleted_at IS NULL;

        CREATE TABLE external_identities (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            provider_id uuid NOT NULL REFERENCES identity_providers(id) ON DELETE RESTRICT,
            subject varchar(255) NOT NULL,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            email varchar(320),
            display_name varchar(200),
            groups text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL,
            last_sign_in_at timestamptz,
            CONSTRAINT ux_external_identities_subject UNIQUE (provider_id, subject)
        );
        CREATE INDEX ix_external_identities_user ON external_identities (org_id, user_id);

        CREATE TABLE sso_requests (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            provider_id uuid NOT NULL REFERENCES identity_providers(id) ON DELETE RESTRICT,
            lookup varchar(64) NOT NULL UNIQUE,
            nonce varchar(64),
            binding_hash varchar(64) NOT NULL,
            next_path text,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            consumed_at timestamptz
        );
        CREATE INDEX ix_sso_requests_expiry ON sso_requests (expires_at);

        CREATE TABLE saml_seen_assertions (
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            provider_id uuid NOT NULL REFERENCES identity_providers(id) ON DELETE RESTRICT,
            assertion_id varchar(255) NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (provider_id, assertion_id)
        );

        CREATE TABLE org_domains (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            domain varchar(253) NOT NULL,
            verification_token varchar(64) NOT NULL,
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            verified_at timestamptz,
            verified_by varchar(16),
            CONSTRAINT ux_org_domains UNIQUE (org_id, domain),
            CONSTRAINT org_domains_verified_by CHECK (verified_by IN ('dns', 'operator'))
        );
        -- One organization at a time holds a domain verified (two verifying at once: one wins).
        CREATE UNIQUE INDEX ux_org_domains_verified ON org_domains (domain)
            WHERE verified_at IS NOT NULL;

        CREATE TABLE idp_group_mappings (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            idp_group varchar(255) NOT NULL,
            roles text[] NOT NULL DEFAULT '{}',
            member_group_id uuid REFERENCES member_groups(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            CONSTRAINT ux_idp_group_mappings UNIQUE (org_id, idp_group)
        );

        CREATE TABLE scim_tokens (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash text NOT NULL,
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE UNIQUE INDEX ux_scim_tokens_live ON scim_tokens (org_id) WHERE revoked_at IS NULL;

        CREATE TABLE scim_users (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            user_name varchar(320) NOT NULL,
            external_id varchar(255),
            active boolean NOT NULL DEFAULT true,
            attributes jsonb NOT NULL DEFAULT '{}',
            version integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            CONSTRAINT ux_scim_users_person UNIQUE (org_id, user_id)
        );
        CREATE UNIQUE INDEX ux_scim_users_user_name ON scim_users (org_id, lower(user_name));
        CREATE INDEX ix_scim_users_external_id ON scim_users (org_id, external_id);

        CREATE TABLE scim_groups (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            display_name varchar(255) NOT NULL,
            external_id varchar(255),
            version integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE UNIQUE INDEX ux_scim_groups_name ON scim_groups (org_id, lower(display_name));

        CREATE TABLE scim_group_members (
            group_id uuid NOT NULL REFERENCES scim_groups(id) ON DELETE CASCADE,
            scim_user_id uuid NOT NULL REFERENCES scim_users(id) ON DELETE CASCADE,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            PRIMARY KEY (group_id, scim_user_id)
        );
        CREATE INDEX ix_scim_group_members_user ON scim_group_members (scim_user_id);

        ALTER TABLE organizations
            ADD COLUMN sso_enforced boolean NOT NULL DEFAULT false,
            ADD COLUMN sso_break_glass uuid[] NOT NULL DEFAULT '{}';
        ALTER TABLE memberships
            ADD COLUMN managed_by varchar(8) NOT NULL DEFAULT 'manual',
            ADD CONSTRAINT memberships_managed_by CHECK (managed_by IN ('manual', 'idp'));
        ALTER TABLE user_sessions
            ADD COLUMN sso_provider_id uuid REFERENCES identity_providers(id) ON DELETE RESTRICT,
            ADD COLUMN sso_org_id uuid REFERENCES organizations(id) ON DELETE RESTRICT,
            ADD COLUMN sso_mfa boolean NOT NULL DEFAULT false;
        """
    )
    for table in TENANT_TABLES:
        op.execute(_TENANT.format(table=table))
    op.execute(
        f"""
        GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(TENANT_TABLES)} TO blocks_app;
        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY scim_tokens_pre_tenant_lookup ON scim_tokens FOR SELECT TO %s '
                'USING (current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                {_TOKENS_OWNER}
            );
        END
        $$;

        -- The one pre-tenant read of SCIM: the token a bearer names, binding the transaction to
        -- its organization (the caller compares the secret in constant time).
        CREATE FUNCTION blocks_resolve_scim_token(p_lookup text)
        RETURNS TABLE (token_id uuid, org_id uuid, secret_hash text, revoked_at timestamptz,
                       closed_at timestamptz)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_org uuid;
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            SELECT t.org_id INTO v_org FROM public.scim_tokens t WHERE t.lookup = p_lookup;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
            IF v_org IS NULL THEN
                RETURN;
            END IF;
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY
                SELECT t.id, t.org_id, t.secret_hash, t.revoked_at, o.closed_at
                FROM public.scim_tokens t JOIN public.organizations o ON o.id = t.org_id
                WHERE t.lookup = p_lookup;
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_resolve_scim_token(text) OWNER TO %s', {_TOKENS_OWNER}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_resolve_scim_token(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_resolve_scim_token(text) TO blocks_app;

        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY org_domains_pre_tenant_lookup ON org_domains FOR SELECT TO %s '
                'USING (current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                {_DOMAINS_OWNER}
            );
        END
        $$;
        -- Whether another organization holds a domain verified: the one cross-tenant question
        -- verifying a domain must ask (a yes or no, nothing about who).
        CREATE FUNCTION blocks_domain_verified_elsewhere(p_org uuid, p_domain text)
        RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_found boolean;
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            SELECT EXISTS (
                SELECT FROM public.org_domains d
                WHERE d.domain = p_domain AND d.org_id <> p_org AND d.verified_at IS NOT NULL
            ) INTO v_found;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
            RETURN v_found;
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_domain_verified_elsewhere(uuid, text) OWNER TO %s',
                {_DOMAINS_OWNER}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_domain_verified_elsewhere(uuid, text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_domain_verified_elsewhere(uuid, text) TO blocks_app;
        """  # noqa: S608 (only the module's own constants are interpolated)
    )
    op.execute("DROP FUNCTION blocks_resolve_api_key(text);")
    op.execute(
        _RESOLVE_API_KEY.format(
            extra_columns=_SSO_COLUMNS, extra_values=_SSO_VALUES, owner=_KEYS_OWNER
        )
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION blocks_resolve_api_key(text);")
    op.execute(_RESOLVE_API_KEY.format(extra_columns="", extra_values="", owner=_KEYS_OWNER))
    op.execute(
        """
        DROP FUNCTION blocks_resolve_scim_token(text);
        DROP FUNCTION blocks_domain_verified_elsewhere(uuid, text);
        ALTER TABLE user_sessions DROP COLUMN sso_provider_id, DROP COLUMN sso_org_id,
            DROP COLUMN sso_mfa;
        ALTER TABLE memberships DROP CONSTRAINT memberships_managed_by,
            DROP COLUMN managed_by;
        ALTER TABLE organizations DROP COLUMN sso_enforced, DROP COLUMN sso_break_glass;
        DROP TABLE scim_group_members;
        DROP TABLE scim_groups;
        DROP TABLE scim_users;
        DROP TABLE scim_tokens;
        DROP TABLE idp_group_mappings;
        DROP TABLE org_domains;
        DROP TABLE saml_seen_assertions;
        DROP TABLE sso_requests;
        DROP TABLE external_identities;
        DROP TABLE identity_providers;
        """
    )
