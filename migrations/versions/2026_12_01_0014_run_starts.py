"""Run starts that are exactly-once and self-healing.

A run's row is committed as `starting` before its workflow is started, and marked `started` once
Temporal has it. A client that got no answer retries with the same `Idempotency-Key` and gets the
same run; a row left `starting` by a crash is settled by the worker's reconciler, which may see
only such rows across organizations (policy `runs_unsettled_starts`, while `app.reconcile_starts`
is set), then binds each one's organization to settle it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE runs
            ADD COLUMN idempotency_key varchar(255),
            ADD COLUMN request_hash char(64),
            ADD COLUMN settled_at timestamptz;
        CREATE UNIQUE INDEX ux_runs_idempotency_key ON runs (org_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX ix_runs_unsettled ON runs (created_at) WHERE start_state = 'starting';
        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY runs_unsettled_starts ON runs FOR SELECT TO %s USING ('
                'start_state = ''starting'' '
                'AND current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                (SELECT c.relowner::regrole::text FROM pg_class c
                 WHERE c.oid = 'public.runs'::regclass)
            );
        END
        $$;

        CREATE FUNCTION blocks_unsettled_run_starts(p_bound_seconds double precision, p_limit int)
        RETURNS TABLE (org_id uuid, run_id uuid)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            RETURN QUERY
                SELECT r.org_id, r.id FROM public.runs r
                WHERE r.start_state = 'starting'
                    AND r.created_at < now() - make_interval(secs => p_bound_seconds)
                ORDER BY r.created_at
                LIMIT p_limit;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_unsettled_run_starts(double precision, int) OWNER TO %s',
                (SELECT c.relowner::regrole::text FROM pg_class c
                 WHERE c.oid = 'public.runs'::regclass)
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_unsettled_run_starts(double precision, int) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_unsettled_run_starts(double precision, int)
            TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_unsettled_run_starts(double precision, int);
        DROP POLICY runs_unsettled_starts ON runs;
        DROP INDEX ix_runs_unsettled;
        DROP INDEX ux_runs_idempotency_key;
        ALTER TABLE runs DROP COLUMN idempotency_key, DROP COLUMN request_hash,
            DROP COLUMN settled_at;
        """
    )
