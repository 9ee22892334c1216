"""Row-level security on every table of organization data: API keys, invites, decision links.

These three were left open because a row is found by its public lookup id (or, for the closed
sign-up check, by an address) before its organization is known. Now they carry the same forced
`<table>_tenant` policy as every other tenant table, and each lookup that must happen before an
organization is bound goes through one narrow SECURITY DEFINER function:

- `blocks_resolve_api_key(lookup)`: the key, its person and membership (binds the transaction
  to the key's organization, as before: the membership is read under that binding);
- `blocks_find_invite(lookup)`: the one invite a token names (the caller compares the secret,
  then binds the invite's organization);
- `blocks_has_pending_invite(email)`: only whether some organization has a live invite for an
  address (closed sign-up);
- `blocks_find_decision_link(lookup)`: the one link a token names (the caller compares the
  secret and checks the link, then binds its organization; it no longer binds by itself).

A SECURITY DEFINER function runs as its owner, made here the owner of the table it reads
(`blocks_owner`, who runs migrations), and FORCE ROW LEVEL SECURITY holds the owner to the
policies too. So each table also gets `<table>_pre_tenant_lookup`: SELECT only, only for that
owner role (the app role never matches it, whatever it sets), and only while
`app.pre_tenant_lookup` is 'on', which the functions set for their one lookup statement and
reset straight after. Each function pins `search_path`, names tables by schema, returns only
what its lookup needs, and may be executed by `blocks_app` only (not PUBLIC).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("api_keys", "invites", "decision_links")
# Each pre-tenant function and the table whose owner it runs as (and whose rows it looks up).
FUNCTIONS = {
    "blocks_resolve_api_key(text)": "api_keys",
    "blocks_find_invite(text)": "invites",
    "blocks_has_pending_invite(text)": "invites",
    "blocks_find_decision_link(text)": "decision_links",
}
_OWNER = "(SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = 'public.{}'::regclass)"


def upgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""
            ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
            ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
            CREATE POLICY {table}_tenant ON {table}
                USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
                WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
            -- Only the table's owner, as whom the SECURITY DEFINER functions below run.
            DO $$
            BEGIN
                EXECUTE format(
                    'CREATE POLICY {table}_pre_tenant_lookup ON {table} FOR SELECT TO %s '
                    'USING (current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                    {_OWNER.format(table)}
                );
            END
            $$;
            """
        )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION blocks_resolve_api_key(p_lookup text)
        RETURNS TABLE (
            key_id uuid, org_id uuid, user_id uuid, secret_hash text, key_roles varchar[],
            expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz,
            email text, deactivated_at timestamptz, member_roles varchar[],
            require_2fa boolean, has_2fa boolean
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
            -- From here on the key, its membership and everything after (the caller's
            -- last_used_at update, the request) read under the key's organization.
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY
                SELECT k.id, k.org_id, k.user_id, k.secret_hash::text, k.roles, k.expires_at,
                       k.revoked_at, k.last_used_at, u.email::text, u.deactivated_at, m.roles,
                       o.require_2fa, u.totp_enabled_at IS NOT NULL
                FROM public.api_keys k
                JOIN public.users u ON u.id = k.user_id
                JOIN public.organizations o ON o.id = k.org_id
                LEFT JOIN public.memberships m ON m.org_id = k.org_id AND m.user_id = k.user_id
                    AND m.deactivated_at IS NULL AND o.closed_at IS NULL
                WHERE k.lookup = p_lookup;
        END;
        $$;

        CREATE FUNCTION blocks_find_invite(p_lookup text)
        RETURNS SETOF public.invites
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            RETURN QUERY SELECT * FROM public.invites i WHERE i.lookup = p_lookup;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
        END;
        $$;

        CREATE FUNCTION blocks_has_pending_invite(p_email text)
        RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_found boolean;
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            SELECT EXISTS (
                SELECT FROM public.invites i
                WHERE i.email = p_email AND i.accepted_at IS NULL AND i.revoked_at IS NULL
                    AND i.expires_at > now()
            ) INTO v_found;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
            RETURN v_found;
        END;
        $$;

        CREATE OR REPLACE FUNCTION blocks_find_decision_link(p_lookup text)
        RETURNS SETOF public.decision_links
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            RETURN QUERY SELECT * FROM public.decision_links l WHERE l.lookup = p_lookup;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
        END;
        $$;
        """
    )
    for function, table in FUNCTIONS.items():
        op.execute(
            f"""
            DO $$
            BEGIN
                -- A no-op when the owner runs this migration; a superuser's run hands it back.
                EXECUTE format('ALTER FUNCTION {function} OWNER TO %s', {_OWNER.format(table)});
            END
            $$;
            REVOKE ALL ON FUNCTION {function} FROM PUBLIC;
            GRANT EXECUTE ON FUNCTION {function} TO blocks_app;
            """
        )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_has_pending_invite(text);
        DROP FUNCTION blocks_find_invite(text);
        -- Back to the invoker's functions of 0008 and 0011, which bind by themselves.
        CREATE OR REPLACE FUNCTION blocks_find_decision_link(p_lookup text)
        RETURNS SETOF decision_links
        LANGUAGE plpgsql SECURITY INVOKER AS $$
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
        ALTER FUNCTION blocks_find_decision_link(text) RESET search_path;
        ALTER FUNCTION blocks_resolve_api_key(text) SECURITY INVOKER RESET search_path;
        GRANT EXECUTE ON FUNCTION blocks_find_decision_link(text), blocks_resolve_api_key(text)
            TO PUBLIC;
        """
    )
    for table in TABLES:
        op.execute(
            f"""
            DROP POLICY {table}_pre_tenant_lookup ON {table};
            DROP POLICY {table}_tenant ON {table};
            ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
            ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
            """
        )
