"""Per-organization data keys, master key check values, and the run -> organization lookup.

`org_data_keys` holds each organization's data keys (AES-256), each wrapped by a master key
(BLOCKS_MASTER_KEYS) with associated data binding it to its master key, organization and key id.
One key per organization is live (`destroyed_at IS NULL`); destroying an organization's keys sets
`wrapped_key` to NULL and keeps the row as a tombstone, so what the key sealed (Temporal payloads,
run content in audit events) can never be read again while the chain still verifies.

`master_key_checks` holds, per master key id ever used, a check value (a constant sealed under
that key): a process configured with a different key under the same id stops at start-up instead
of failing later, and a key id still in use that is missing from the configuration is named.

`blocks_run_org(workflow_id)` answers which organization a run's workflow belongs to, so the
payload codec (which Temporal gives only the workflow id) can pick the organization's key. It
is SECURITY DEFINER as the owner of `runs`, seeing rows only through `runs_codec_lookup` while
`app.run_org_lookup` is on, and returns the organization id alone.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_RUNS_OWNER = (
    "(SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = 'public.runs'::regclass)"
)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE org_data_keys (
            key_id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            master_key_id varchar(64) NOT NULL,
            wrapped_key bytea,
            created_at timestamptz NOT NULL,
            destroyed_at timestamptz,
            CONSTRAINT org_data_keys_tombstone CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
        );
        CREATE UNIQUE INDEX ux_org_data_keys_live ON org_data_keys (org_id)
            WHERE destroyed_at IS NULL;
        CREATE INDEX ix_org_data_keys_org ON org_data_keys (org_id);
        CREATE INDEX ix_org_data_keys_master ON org_data_keys (master_key_id)
            WHERE destroyed_at IS NULL;
        ALTER TABLE org_data_keys ENABLE ROW LEVEL SECURITY;
        ALTER TABLE org_data_keys FORCE ROW LEVEL SECURITY;
        CREATE POLICY org_data_keys_tenant ON org_data_keys
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE ON org_data_keys TO blocks_app;

        CREATE TABLE master_key_checks (
            master_key_id varchar(64) PRIMARY KEY,
            check_value bytea NOT NULL,
            created_at timestamptz NOT NULL,
            retired_at timestamptz
        );
        GRANT SELECT, INSERT, UPDATE ON master_key_checks TO blocks_app;

        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY runs_codec_lookup ON runs FOR SELECT TO %s USING ('
                'current_setting(''app.run_org_lookup'', true) = ''on'')',
                {_RUNS_OWNER}
            );
        END
        $$;

        CREATE FUNCTION blocks_run_org(p_workflow_id text)
        RETURNS uuid
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_org uuid;
        BEGIN
            PERFORM set_config('app.run_org_lookup', 'on', true);
            SELECT r.org_id INTO v_org FROM public.runs r WHERE r.workflow_id = p_workflow_id;
            PERFORM set_config('app.run_org_lookup', '', true);
            RETURN v_org;
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format('ALTER FUNCTION blocks_run_org(text) OWNER TO %s', {_RUNS_OWNER});
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_run_org(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_run_org(text) TO blocks_app;
        """  # noqa: S608 (only the module's own constant is interpolated)
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_run_org(text);
        DROP POLICY runs_codec_lookup ON runs;
        DROP TABLE master_key_checks;
        DROP TABLE org_data_keys;
        """
    )
