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
        CREATE POLICY runs_unsettled_starts ON runs FOR SELECT
            USING (start_state = 'starting'
                   AND current_setting('app.reconcile_starts', true) = 'on');
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP POLICY runs_unsettled_starts ON runs;
        DROP INDEX ix_runs_unsettled;
        DROP INDEX ux_runs_idempotency_key;
        ALTER TABLE runs DROP COLUMN idempotency_key, DROP COLUMN request_hash,
            DROP COLUMN settled_at;
        """
    )
