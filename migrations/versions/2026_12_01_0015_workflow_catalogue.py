"""The workflow catalogue, run versions, and an organization's rules for starting workflows.

Workers publish what they serve (`workflow_catalogue`: one row per workflow name and version, with
the JSON Schemas of its input and decision forms; `workflow_servers`: which worker serves it on
which task queue, and when it was last seen). These tables describe the deployment's code, not an
organization's data, so they have no organization column and no row-level security.

Each run records the workflow version it started on. An organization may restrict which published
workflows its members may start (`allowed_workflows`, NULL = all) and forbid approvers named in a
run's input (`approvers_from_input`).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE workflow_catalogue (
            name varchar(200) NOT NULL,
            version varchar(50) NOT NULL,
            description text NOT NULL DEFAULT '',
            input_schema jsonb NOT NULL,
            forms jsonb NOT NULL DEFAULT '{}'::jsonb,
            published_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (name, version)
        );
        CREATE TABLE workflow_servers (
            name varchar(200) NOT NULL,
            version varchar(50) NOT NULL,
            task_queue varchar(200) NOT NULL,
            worker varchar(300) NOT NULL,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (name, version, task_queue, worker),
            FOREIGN KEY (name, version) REFERENCES workflow_catalogue (name, version)
                ON DELETE CASCADE
        );
        CREATE INDEX ix_workflow_servers_seen ON workflow_servers (name, last_seen_at DESC);
        GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_catalogue, workflow_servers TO blocks_app;

        ALTER TABLE runs ADD COLUMN workflow_version varchar(50);
        ALTER TABLE organizations
            ADD COLUMN allowed_workflows jsonb,
            ADD COLUMN approvers_from_input boolean NOT NULL DEFAULT true;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE organizations DROP COLUMN approvers_from_input, DROP COLUMN allowed_workflows;
        ALTER TABLE runs DROP COLUMN workflow_version;
        DROP TABLE workflow_servers;
        DROP TABLE workflow_catalogue;
        """
    )
