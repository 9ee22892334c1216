"""Outbound webhooks: an organization's destinations and the log of what was delivered to them.

`webhook_destinations`: where an organization's events go. `url` (checked by the SSRF guard when
saved, and again at each call), `kind` ('webhook'; the SIEM stream is a later kind),
`event_types` (the names the API allows: run.*, step.*, or `audit.*` for every audit event),
`enabled` with `disabled_reason` ('gone': the receiver answered 410; 'failing': it failed for
days; 'admin': switched off by hand; NULL while enabled). The signing secret (Standard Webhooks
`whsec_...`, an HMAC key, so it must be kept, not hashed) is sealed with AES-256-GCM under the
organization's data key like LLM keys and OIDC client secrets: `secret_key_id` names the data
key, `secret_sealed` is nonce + ciphertext with associated data binding organization and
destination; only `secret_last4` is kept in clear. After a rotation the previous secret stays
(sealed the same way, `previous_*`) until `previous_expires_at`, and deliveries carry both
signatures meanwhile. A deleted destination keeps its row (its deliveries name it) but loses
both secrets.

`webhook_deliveries`: one row per message sent (or to send) to a destination: its
`message_id` (the `webhook-id` header, the same on every attempt, unique per destination), the
event's type and audit `seq`, status ('pending', 'delivered', 'failed', 'gone'), attempts, the
last answer's status code and latency, when the last attempt was and the next is due. Never the
body.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_TENANT = """
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_tenant ON {table}
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
"""
TENANT_TABLES = ("webhook_destinations", "webhook_deliveries")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_destinations (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            kind varchar(16) NOT NULL DEFAULT 'webhook',
            url varchar(2048) NOT NULL,
            description varchar(500) NOT NULL DEFAULT '',
            event_types text[] NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            disabled_reason varchar(16),
            disabled_at timestamptz,
            secret_key_id uuid REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            secret_sealed bytea,
            secret_last4 varchar(4),
            previous_key_id uuid REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            previous_sealed bytea,
            previous_expires_at timestamptz,
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            rotated_at timestamptz,
            deleted_at timestamptz,
            CONSTRAINT webhook_destinations_kind CHECK (kind IN ('webhook')),
            CONSTRAINT webhook_destinations_event_types CHECK (cardinality(event_types) > 0),
            CONSTRAINT webhook_destinations_disabled_reason CHECK (
                disabled_reason IN ('gone', 'failing', 'admin')
            ),
            CONSTRAINT webhook_destinations_reason_iff_disabled CHECK (
                (disabled_reason IS NULL) = enabled
            ),
            CONSTRAINT webhook_destinations_secret_while_live CHECK (
                (deleted_at IS NULL) = (secret_sealed IS NOT NULL AND secret_key_id IS NOT NULL)
            ),
            CONSTRAINT webhook_destinations_previous_whole CHECK (
                (previous_sealed IS NULL) = (previous_key_id IS NULL)
                AND (previous_sealed IS NULL) = (previous_expires_at IS NULL)
            )
        );
        CREATE INDEX ix_webhook_destinations_org ON webhook_destinations (org_id, created_at);

        CREATE TABLE webhook_deliveries (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            destination_id uuid NOT NULL REFERENCES webhook_destinations(id) ON DELETE RESTRICT,
            message_id varchar(64) NOT NULL,
            event_type varchar(100) NOT NULL,
            event_seq bigint,
            status varchar(16) NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            last_status_code integer,
            last_latency_ms integer,
            last_attempt_at timestamptz,
            next_attempt_at timestamptz,
            created_at timestamptz NOT NULL,
            CONSTRAINT webhook_deliveries_status CHECK (
                status IN ('pending', 'delivered', 'failed', 'gone')
            ),
            CONSTRAINT webhook_deliveries_attempts CHECK (attempts >= 0),
            CONSTRAINT ux_webhook_deliveries_message UNIQUE (destination_id, message_id)
        );
        CREATE INDEX ix_webhook_deliveries_newest
            ON webhook_deliveries (org_id, destination_id, created_at DESC, id DESC);
        """
    )
    for table in TENANT_TABLES:
        op.execute(_TENANT.format(table=table))
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TENANT_TABLES)} TO blocks_app;")


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries; DROP TABLE webhook_destinations;")
