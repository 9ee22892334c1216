"""Pending approval steps: the inbox's projection of the audit log, kept by a trigger.

`approval_pending_steps` holds one row per open approval step (who may decide it, who has voted,
who asked, when it opened and is due), so `GET /v1/inbox` is one query instead of one Temporal
query per run. Its rows are derived from the audit events that describe steps (`step.opened`,
`step.decided`, `step.escalated`, `step.approvers_dropped`, `step.sla_breached`, `step.reminded`,
`step.closed`, `run.completed`) by `blocks_project_pending_step`, which an AFTER INSERT trigger on
`audit_events` runs for each such row. So the projection changes in the transaction that appends
the event, only for rows actually inserted (a retried append whose ids exist inserts nothing; a
rolled-back append takes its projection with it), whoever appends: the worker's audit activity,
an older worker during a rolling deploy, the authoring kit on PostgreSQL.

The application role may only read the table: it changes only through the audit log. The trigger
functions run as the tables' owner (SECURITY DEFINER, search_path pinned, not executable by
PUBLIC), which FORCE ROW LEVEL SECURITY holds to the tenant policy: they write only rows of the
organization the append bound (`app.org_id`).

Steps already open when this migration runs are backfilled from the audit log: each
organization's step events of runs that have not completed, replayed in chain order through the
same function.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The audit actions that change a pending step (the trigger's WHEN and the backfill's filter).
ACTIONS = (
    "step.opened",
    "step.decided",
    "step.escalated",
    "step.approvers_dropped",
    "step.sla_breached",
    "step.reminded",
    "step.closed",
    "run.completed",
)
_ACTION_LIST = ", ".join(f"'{action}'" for action in ACTIONS)
_OWNER = "(SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = 'public.audit_events'::regclass)"
_DEFINER_FUNCTIONS = (
    "blocks_project_pending_step(public.audit_events)",
    "blocks_pending_steps_on_audit()",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE approval_pending_steps (
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            run_id text NOT NULL,
            step_id text NOT NULL,
            workflow text,
            title text NOT NULL,
            -- Policy labels: `user:<id>`, `role:<name>`, `group:<name>`.
            approvers text[] NOT NULL,
            -- Whose seats have voted (a delegate's vote fills the delegator's seat).
            deciders text[] NOT NULL DEFAULT '{}',
            requested_by text,
            opened_at timestamptz NOT NULL,
            deadline timestamptz,
            PRIMARY KEY (org_id, run_id, step_id)
        );
        -- Whose inbox a step is in. (No other index: every change finds its row by the
        -- primary key, and a second btree on org_id could win a generic plan over it.)
        CREATE INDEX ix_approval_pending_steps_approvers ON approval_pending_steps
            USING gin (approvers);
        ALTER TABLE approval_pending_steps ENABLE ROW LEVEL SECURITY;
        ALTER TABLE approval_pending_steps FORCE ROW LEVEL SECURITY;
        CREATE POLICY approval_pending_steps_tenant ON approval_pending_steps
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        REVOKE ALL ON approval_pending_steps FROM blocks_app;
        GRANT SELECT ON approval_pending_steps TO blocks_app;

        -- A policy's labels in `ApprovalPolicy.labels()` order (group by group: users, roles,
        -- member groups), each once, from the `policy` an event carries (`describe()`).
        CREATE FUNCTION blocks_policy_labels(p_policy jsonb) RETURNS text[]
        LANGUAGE sql IMMUTABLE AS $$
            SELECT coalesce(array_agg(label ORDER BY g, k, i), '{}')
            FROM (
                SELECT DISTINCT ON (label) label, g, k, i
                FROM (
                    SELECT part.prefix || item.value AS label, grp.g, part.k, item.i
                    FROM jsonb_array_elements(coalesce(p_policy->'groups', '[]'))
                            WITH ORDINALITY AS grp(body, g)
                    CROSS JOIN (VALUES (1, 'users', 'user:'), (2, 'roles', 'role:'),
                                       (3, 'member_groups', 'group:')) AS part(k, field, prefix)
                    CROSS JOIN LATERAL jsonb_array_elements_text(
                            coalesce(grp.body->part.field, '[]')) WITH ORDINALITY AS item(value, i)
                ) AS every_label
                ORDER BY label, g, k, i
            ) AS first_of_each
        $$;

        -- One event's effect on the pending steps. Each event carries the step's state after
        -- it (labels after an escalation, the state after a vote), so applying it is setting
        -- that state; the trigger applies it once, for the row the append inserted.
        CREATE FUNCTION blocks_project_pending_step(e public.audit_events) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_workflow text;
            v_requester text;
            v_seat text;
            v_labels jsonb;
        BEGIN
            IF e.run_id IS NULL THEN
                RETURN;
            END IF;
            IF e.action = 'run.completed' THEN
                DELETE FROM public.approval_pending_steps s
                    WHERE s.org_id = e.org_id AND s.run_id = e.run_id;
                RETURN;
            END IF;
            IF e.target_id IS NULL THEN
                RETURN;
            END IF;
            CASE e.action
            WHEN 'step.opened' THEN
                -- Which workflow and who asked: in the event since 0016; before, from the
                -- run's row, by its unique workflow id (one index lookup whatever the table's
                -- statistics say; row-level security keeps it to the event's organization).
                IF e.data ? 'workflow' THEN
                    v_workflow := e.data->>'workflow';
                    v_requester := e.data->>'requested_by';
                ELSE
                    SELECT r.workflow_name, r.requested_by::text
                        INTO v_workflow, v_requester
                        FROM public.runs r
                        WHERE r.workflow_id = 'run-' || e.run_id;
                END IF;
                INSERT INTO public.approval_pending_steps AS s (
                    org_id, run_id, step_id, workflow, title, approvers, requested_by,
                    opened_at, deadline)
                VALUES (
                    e.org_id, e.run_id, e.target_id, v_workflow,
                    coalesce(e.data->>'title', ''),
                    public.blocks_policy_labels(e.data->'policy'), v_requester,
                    coalesce((e.data->>'opened_at')::timestamptz, e.occurred_at),
                    (e.data->>'deadline')::timestamptz)
                ON CONFLICT (org_id, run_id, step_id) DO NOTHING;
            WHEN 'step.decided' THEN
                IF coalesce(e.data->>'step_state', 'pending') <> 'pending' THEN
                    DELETE FROM public.approval_pending_steps s
                        WHERE s.org_id = e.org_id AND s.run_id = e.run_id
                            AND s.step_id = e.target_id;
                    RETURN;
                END IF;
                -- The seat is the delegator's when a delegate acted for them.
                v_seat := coalesce(e.data->>'on_behalf_of', e.actor_id);
                UPDATE public.approval_pending_steps s
                    SET deciders = s.deciders || v_seat
                    WHERE s.org_id = e.org_id AND s.run_id = e.run_id
                        AND s.step_id = e.target_id
                        AND v_seat IS NOT NULL AND NOT v_seat = ANY (s.deciders);
            WHEN 'step.closed' THEN
                DELETE FROM public.approval_pending_steps s
                    WHERE s.org_id = e.org_id AND s.run_id = e.run_id
                        AND s.step_id = e.target_id;
            ELSE
                -- Events that change who may decide (and, some, the deadline).
                v_labels := CASE e.action
                    WHEN 'step.reminded' THEN e.data->'pending_approvers'
                    ELSE e.data->'approvers_after' END;
                IF coalesce(jsonb_typeof(v_labels), '') <> 'array' THEN
                    RETURN;  -- e.g. a breach that expires the step (`step.closed` follows)
                END IF;
                UPDATE public.approval_pending_steps s
                    SET approvers = ARRAY(
                            SELECT l.value FROM jsonb_array_elements_text(v_labels)
                                WITH ORDINALITY AS l(value, i) ORDER BY l.i),
                        deadline = CASE
                            WHEN e.action = 'step.sla_breached' AND e.data ? 'deadline_after'
                                THEN (e.data->>'deadline_after')::timestamptz
                            WHEN e.action = 'step.escalated' AND e.data ? 'deadline'
                                THEN (e.data->>'deadline')::timestamptz
                            ELSE s.deadline END
                    WHERE s.org_id = e.org_id AND s.run_id = e.run_id
                        AND s.step_id = e.target_id;
            END CASE;
        END;
        $$;

        CREATE FUNCTION blocks_pending_steps_on_audit() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM public.blocks_project_pending_step(NEW);
            RETURN NULL;
        END;
        $$;
        """
    )
    for function in _DEFINER_FUNCTIONS:
        op.execute(
            f"""
            DO $$
            BEGIN
                -- A no-op when the owner runs this migration; a superuser's run hands it over.
                EXECUTE format('ALTER FUNCTION {function} OWNER TO %s', {_OWNER});
            END
            $$;
            REVOKE ALL ON FUNCTION {function} FROM PUBLIC;
            """
        )
    # Built from the constants above only.
    op.execute(
        f"""
        DO $$
        BEGIN
            EXECUTE format('ALTER TABLE approval_pending_steps OWNER TO %s', {_OWNER});
        END
        $$;
        -- Row by row, in the order the append inserts them (chain order): a batch may open a
        -- step and close it. The trigger comes before the backfill: its lock waits for appends
        -- under way, and appends after it wait for this transaction, so no event is missed or
        -- applied twice.
        CREATE TRIGGER audit_events_pending_steps
            AFTER INSERT ON audit_events
            FOR EACH ROW
            WHEN (NEW.run_id IS NOT NULL AND NEW.action IN ({_ACTION_LIST}))
            EXECUTE FUNCTION blocks_pending_steps_on_audit();

        DO $$
        DECLARE
            v_org uuid;
            v_event public.audit_events;
        BEGIN
            FOR v_org IN SELECT o.id FROM public.organizations o LOOP
                PERFORM set_config('app.org_id', v_org::text, true);
                FOR v_event IN
                    SELECT e.* FROM public.audit_events e
                    WHERE e.org_id = v_org AND e.action IN ({_ACTION_LIST})
                        AND e.run_id IN (
                            SELECT o.run_id FROM public.audit_events o
                            WHERE o.org_id = v_org AND o.action = 'step.opened'
                            EXCEPT
                            SELECT c.run_id FROM public.audit_events c
                            WHERE c.org_id = v_org AND c.action = 'run.completed')
                    ORDER BY e.seq
                LOOP
                    PERFORM public.blocks_project_pending_step(v_event);
                END LOOP;
            END LOOP;
            PERFORM set_config('app.org_id', '', true);
        END
        $$;
        """  # noqa: S608
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER audit_events_pending_steps ON audit_events;
        DROP FUNCTION blocks_pending_steps_on_audit();
        DROP FUNCTION blocks_project_pending_step(public.audit_events);
        DROP FUNCTION blocks_policy_labels(jsonb);
        DROP TABLE approval_pending_steps;
        """
    )
