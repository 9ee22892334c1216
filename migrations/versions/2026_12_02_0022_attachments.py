"""Attachments on runs and decisions, and each organization's list of the kinds it accepts.

`attachments`: a file uploaded to a run (an invoice, a contract). Its kind and media type are the
ones its bytes showed (never the client's name or Content-Type); `file_name` is a display name,
never a path; `sha256` is the hex digest of the plain bytes (also in the upload's audit event and,
once a decision names the file, in that decision's `step.decided` event); `sealed` holds the bytes
sealed under the organization's data key `key_id` (AES-256-GCM, nonce first, associated data
binding organization, run and attachment). `step_id`/`decision`/`decided_at`: the decision that
named the file (its uploader's vote on that step), NULL until one does.

`attachment_settings`: an organization's allow-list of kinds; no row means every kind Blocks
accepts (PDF, PNG, JPEG, text, CSV, Office formats).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_TENANT = """
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_tenant ON {table}
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
"""
TENANT_TABLES = ("attachments", "attachment_settings")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE attachments (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            run_id uuid NOT NULL REFERENCES runs(id) ON DELETE RESTRICT,
            step_id varchar(200),
            decision varchar(8),
            decided_at timestamptz,
            file_name varchar(200) NOT NULL,
            kind varchar(8) NOT NULL,
            media_type varchar(100) NOT NULL,
            size_bytes bigint NOT NULL,
            sha256 char(64) NOT NULL,
            key_id uuid NOT NULL,
            sealed bytea NOT NULL,
            uploaded_by uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            CONSTRAINT attachments_size CHECK (size_bytes > 0),
            CONSTRAINT attachments_decision CHECK (decision IN ('approve', 'reject'))
        );
        CREATE INDEX ix_attachments_run ON attachments (org_id, run_id, created_at);

        CREATE TABLE attachment_settings (
            org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE RESTRICT,
            allowed_kinds text[] NOT NULL,
            updated_at timestamptz NOT NULL
        );
        """
    )
    for table in TENANT_TABLES:
        op.execute(_TENANT.format(table=table))
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TENANT_TABLES)} TO blocks_app;")


def downgrade() -> None:
    op.execute("DROP TABLE attachment_settings; DROP TABLE attachments;")
