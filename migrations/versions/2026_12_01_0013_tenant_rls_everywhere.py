"""Reserved: filled by the change that needs it (an empty migration keeps the chain linear).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
