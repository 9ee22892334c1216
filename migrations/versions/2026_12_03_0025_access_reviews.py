"""Access reviews: each organization's review settings and the reviews it ran.

`access_review_settings`: one row per organization that configured its reviews: the reviewers
(member ids and/or one member group; none of either means the owners), the SLA of each item's
step in hours, and whether the quarterly Temporal Schedule (`blocks-access-review-<org id>`) is
on. `access_reviews`: one row per review, keyed by its run's id (a review is a run of the
built-in `access_review` workflow, `runs.id`): how it was started, by whom, and once finished
the report (JSON, `blocks.access_review.v1`) and its SHA-256, which the `access_review.report`
audit event carries too.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_TENANT = """
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_tenant ON {table}
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
"""
TENANT_TABLES = ("access_review_settings", "access_reviews")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE access_review_settings (
            org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE RESTRICT,
            reviewer_ids uuid[] NOT NULL DEFAULT '{}',
            reviewer_group varchar(100),
            sla_hours integer NOT NULL,
            schedule_enabled boolean NOT NULL DEFAULT false,
            updated_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            updated_at timestamptz NOT NULL,
            CONSTRAINT access_review_settings_sla CHECK (sla_hours BETWEEN 1 AND 2160)
        );

        CREATE TABLE access_reviews (
            id uuid PRIMARY KEY REFERENCES runs(id) ON DELETE RESTRICT,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            trigger varchar(16) NOT NULL,
            started_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            finished_at timestamptz,
            report jsonb,
            report_sha256 varchar(64),
            CONSTRAINT access_reviews_trigger CHECK (trigger IN ('manual', 'schedule')),
            CONSTRAINT access_reviews_report_whole CHECK (
                (report IS NULL) = (report_sha256 IS NULL)
                AND (report IS NULL) = (finished_at IS NULL)
            )
        );
        CREATE INDEX ix_access_reviews_org ON access_reviews (org_id, created_at DESC);
        """
    )
    for table in TENANT_TABLES:
        op.execute(_TENANT.format(table=table))
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TENANT_TABLES)} TO blocks_app;")


def downgrade() -> None:
    op.execute("DROP TABLE access_reviews; DROP TABLE access_review_settings;")
