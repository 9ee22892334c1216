"""Member groups: named sets of members an approval policy can name ("finance", "legal").

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE member_groups (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            name varchar(63) NOT NULL,
            created_at timestamptz NOT NULL,
            UNIQUE (org_id, name)
        );
        CREATE TABLE member_group_members (
            group_id uuid NOT NULL REFERENCES member_groups(id) ON DELETE CASCADE,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
            added_at timestamptz NOT NULL,
            PRIMARY KEY (group_id, user_id)
        );
        CREATE INDEX ix_member_group_members_user ON member_group_members (org_id, user_id);
        """
    )
    for table in ("member_groups", "member_group_members"):
        op.execute(
            f"""
            ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
            ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
            CREATE POLICY {table}_tenant ON {table}
                USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
                WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
            GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO blocks_app;
            """
        )


def downgrade() -> None:
    op.execute("DROP TABLE member_group_members; DROP TABLE member_groups;")
