"""Per-run history keys for LLM prompts, and prompt retention per organization.

`run_data_keys` holds one key per run that called a model, wrapped by the organization's data key
(associated data binds organization, workflow id, key id and the wrapping key). The payload codec
seals the LLM step's prompt, reply and failure under it in Temporal history. A run's
`run.completed` audit event marks its key closed (`blocks_close_run_key`, an AFTER INSERT trigger
on `audit_events` for that action only, in the append's transaction and organization);
`blocks_destroy_closed_run_keys(grace, limit)` destroys keys closed longer than the grace period,
across organizations, keeping tombstones. It is SECURITY DEFINER as the table's owner, seeing rows
only through `run_data_keys_sweep` while `app.run_key_sweep` is on, and returns a count alone.

`llm_settings` holds an organization's LLM settings (no row: the defaults): `prompt_retention`
(off by default) lets it keep its prompts and completions: then `llm_usage` holds them sealed
under the organization's data key (`content_key_id`, `prompt_sealed`, `completion_sealed`); off,
those stay NULL.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_OWNER = (
    "(SELECT c.relowner::regrole::text FROM pg_class c "
    "WHERE c.oid = 'public.run_data_keys'::regclass)"
)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE run_data_keys (
            key_id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            workflow_id varchar(200) NOT NULL,
            run_id varchar(100) NOT NULL,
            org_key_id uuid NOT NULL REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            wrapped_key bytea,
            created_at timestamptz NOT NULL,
            closed_at timestamptz,
            destroyed_at timestamptz,
            CONSTRAINT run_data_keys_tombstone CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
        );
        CREATE UNIQUE INDEX ux_run_data_keys_live ON run_data_keys (workflow_id)
            WHERE destroyed_at IS NULL;
        CREATE INDEX ix_run_data_keys_run ON run_data_keys (org_id, run_id);
        CREATE INDEX ix_run_data_keys_due ON run_data_keys (closed_at)
            WHERE destroyed_at IS NULL AND closed_at IS NOT NULL;
        ALTER TABLE run_data_keys ENABLE ROW LEVEL SECURITY;
        ALTER TABLE run_data_keys FORCE ROW LEVEL SECURITY;
        CREATE POLICY run_data_keys_tenant ON run_data_keys
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE ON run_data_keys TO blocks_app;

        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY run_data_keys_sweep ON run_data_keys FOR ALL TO %s USING ('
                'current_setting(''app.run_key_sweep'', true) = ''on'')',
                {_OWNER}
            );
        END
        $$;

        CREATE FUNCTION blocks_close_run_key()
        RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            -- The database's clock, as the sweeper's: a workflow's own time may be skipped ahead.
            UPDATE public.run_data_keys k SET closed_at = now()
                WHERE k.org_id = NEW.org_id AND k.run_id = NEW.run_id
                  AND k.closed_at IS NULL AND k.destroyed_at IS NULL;
            RETURN NULL;
        END;
        $$;
        CREATE TRIGGER audit_events_close_run_key AFTER INSERT ON audit_events
            FOR EACH ROW WHEN (NEW.action = 'run.completed' AND NEW.run_id IS NOT NULL)
            EXECUTE FUNCTION blocks_close_run_key();

        CREATE FUNCTION blocks_destroy_closed_run_keys(p_grace_seconds double precision, p_limit integer)
        RETURNS integer
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_count integer;
        BEGIN
            PERFORM set_config('app.run_key_sweep', 'on', true);
            WITH due AS (
                SELECT k.key_id FROM public.run_data_keys k
                WHERE k.destroyed_at IS NULL AND k.closed_at IS NOT NULL
                  AND k.closed_at <= now() - make_interval(secs => p_grace_seconds)
                ORDER BY k.closed_at
                LIMIT p_limit
                FOR UPDATE SKIP LOCKED
            )
            UPDATE public.run_data_keys k SET wrapped_key = NULL, destroyed_at = now()
                FROM due WHERE k.key_id = due.key_id;
            GET DIAGNOSTICS v_count = ROW_COUNT;
            PERFORM set_config('app.run_key_sweep', '', true);
            RETURN v_count;
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_destroy_closed_run_keys(double precision, integer) OWNER TO %s',
                {_OWNER}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_destroy_closed_run_keys(double precision, integer) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_destroy_closed_run_keys(double precision, integer)
            TO blocks_app;

        CREATE TABLE llm_settings (
            org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE RESTRICT,
            prompt_retention boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL
        );
        ALTER TABLE llm_settings ENABLE ROW LEVEL SECURITY;
        ALTER TABLE llm_settings FORCE ROW LEVEL SECURITY;
        CREATE POLICY llm_settings_tenant ON llm_settings
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE ON llm_settings TO blocks_app;
        ALTER TABLE llm_usage
            ADD COLUMN content_key_id uuid REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            ADD COLUMN prompt_sealed bytea,
            ADD COLUMN completion_sealed bytea;
        """  # noqa: S608 (only the module's own constant is interpolated)
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE llm_usage
            DROP COLUMN completion_sealed,
            DROP COLUMN prompt_sealed,
            DROP COLUMN content_key_id;
        DROP TABLE llm_settings;
        DROP FUNCTION blocks_destroy_closed_run_keys(double precision, integer);
        DROP TRIGGER audit_events_close_run_key ON audit_events;
        DROP FUNCTION blocks_close_run_key();
        DROP TABLE run_data_keys;
        """
    )
