"""Events leave Blocks: delivery cursors, SIEM and witness destinations, the delivery log's work.

`webhook_destinations` gains the two streaming kinds: 'siem' (every audit event of the
organization in chain order, in signed batches with the checkpoints that cover them) and
'witness' (every signed checkpoint, nothing else). Each destination keeps its place:
`sent_seq` (the last audit seq it was handed: fanned out into deliveries for a webhook,
acknowledged by the receiver for a SIEM) and `sent_checkpoint_at` (the signing time of the last
checkpoint it was sent). `last_success_at`, `failing_since` and `last_error` say how its
receiver is doing; a destination failing for days is disabled ('failing').

`webhook_deliveries` gains `event_id` (the audit event the message carries; its id is the
`webhook-id`), `started` (its delivery workflow was started: a crash between the row's commit
and the start is caught up by the next pass), `redeliveries` (manual redeliveries, each a new
workflow run under the same `webhook-id`), `last_error` (the last attempt's reason, never the
receiver's body) and the status 'skipped' (the destination was disabled or deleted first).

`blocks_event_destinations_behind(limit)`: the one cross-tenant read of the dispatcher that
wakes streams: ids of enabled destinations whose organization has audit events or checkpoints
they have not been handed, and nothing else of theirs (SECURITY DEFINER, as 0013/0014).
`blocks_orgs_with_unsigned_events(limit)`: ids of organizations whose chain head is past their
last checkpoint, so the every-minute checkpoint round visits only those.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_OWNER = "(SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = 'public.{}'::regclass)"
# The tables the dispatcher's function reads, each given an owner-only lookup policy.
_LOOKUP_TABLES = ("webhook_destinations", "audit_chain_heads", "audit_checkpoints")


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE webhook_destinations DROP CONSTRAINT webhook_destinations_kind;
        ALTER TABLE webhook_destinations ADD CONSTRAINT webhook_destinations_kind
            CHECK (kind IN ('webhook', 'siem', 'witness'));
        ALTER TABLE webhook_destinations
            ADD COLUMN sent_seq bigint NOT NULL DEFAULT 0,
            ADD COLUMN sent_checkpoint_at timestamptz,
            ADD COLUMN last_success_at timestamptz,
            ADD COLUMN failing_since timestamptz,
            ADD COLUMN last_error varchar(300);
        ALTER TABLE webhook_destinations ADD CONSTRAINT webhook_destinations_sent_seq
            CHECK (sent_seq >= 0);

        ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_status;
        ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status
            CHECK (status IN ('pending', 'delivered', 'failed', 'gone', 'skipped'));
        ALTER TABLE webhook_deliveries
            ADD COLUMN event_id uuid,
            ADD COLUMN started boolean NOT NULL DEFAULT false,
            ADD COLUMN redeliveries integer NOT NULL DEFAULT 0,
            ADD COLUMN last_error varchar(300);
        CREATE INDEX ix_webhook_deliveries_unstarted
            ON webhook_deliveries (org_id, destination_id) WHERE NOT started;
        CREATE INDEX ix_audit_checkpoints_org_signed ON audit_checkpoints (org_id, signed_at);
        """
    )
    for table in _LOOKUP_TABLES:
        op.execute(
            f"""
            DO $$
            BEGIN
                EXECUTE format(
                    'CREATE POLICY {table}_stream_lookup ON {table} FOR SELECT TO %s '
                    'USING (current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                    {_OWNER.format(table)}
                );
            END
            $$;
            """
        )
    op.execute(
        f"""
        CREATE FUNCTION blocks_event_destinations_behind(p_limit int)
        RETURNS TABLE (org_id uuid, destination_id uuid)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            RETURN QUERY
                SELECT d.org_id, d.id FROM public.webhook_destinations d
                WHERE d.enabled AND d.deleted_at IS NULL AND (
                    (d.kind IN ('webhook', 'siem') AND d.sent_seq < COALESCE(
                        (SELECT h.seq FROM public.audit_chain_heads h
                         WHERE h.org_id = d.org_id), 0))
                    OR (d.kind IN ('siem', 'witness') AND EXISTS (
                        SELECT 1 FROM public.audit_checkpoints c
                        WHERE c.org_id = d.org_id
                            AND c.signed_at > COALESCE(d.sent_checkpoint_at, '-infinity')))
                )
                ORDER BY d.id
                LIMIT p_limit;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_event_destinations_behind(int) OWNER TO %s',
                {_OWNER.format("webhook_destinations")}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_event_destinations_behind(int) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_event_destinations_behind(int) TO blocks_app;

        CREATE FUNCTION blocks_orgs_with_unsigned_events(p_limit int)
        RETURNS TABLE (org_id uuid)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            RETURN QUERY
                SELECT h.org_id FROM public.audit_chain_heads h
                WHERE h.seq > COALESCE(
                    (SELECT max(c.seq) FROM public.audit_checkpoints c
                     WHERE c.org_id = h.org_id), 0)
                ORDER BY h.org_id
                LIMIT p_limit;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_orgs_with_unsigned_events(int) OWNER TO %s',
                {_OWNER.format("audit_chain_heads")}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_orgs_with_unsigned_events(int) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_orgs_with_unsigned_events(int) TO blocks_app;
        """  # noqa: S608 (only the module's own constant is interpolated)
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION blocks_orgs_with_unsigned_events(int);")
    op.execute("DROP FUNCTION blocks_event_destinations_behind(int);")
    for table in _LOOKUP_TABLES:
        op.execute(f"DROP POLICY {table}_stream_lookup ON {table};")
    op.execute(
        """
        DROP INDEX ix_audit_checkpoints_org_signed;
        DROP INDEX ix_webhook_deliveries_unstarted;
        ALTER TABLE webhook_deliveries
            DROP COLUMN event_id, DROP COLUMN started, DROP COLUMN redeliveries,
            DROP COLUMN last_error;
        ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_status;
        ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status
            CHECK (status IN ('pending', 'delivered', 'failed', 'gone'));
        ALTER TABLE webhook_destinations DROP CONSTRAINT webhook_destinations_sent_seq;
        ALTER TABLE webhook_destinations
            DROP COLUMN sent_seq, DROP COLUMN sent_checkpoint_at, DROP COLUMN last_success_at,
            DROP COLUMN failing_since, DROP COLUMN last_error;
        ALTER TABLE webhook_destinations DROP CONSTRAINT webhook_destinations_kind;
        ALTER TABLE webhook_destinations ADD CONSTRAINT webhook_destinations_kind
            CHECK (kind IN ('webhook'));
        """
    )
