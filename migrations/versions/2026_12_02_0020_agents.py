"""Remote agents: the registry (A2A agent cards), agent tokens, and the tasks in flight to agents.

`agents` holds each organization's agents: a unique live name, the A2A v1.0 agent card (checked
on registration), whether the card is public (served at the agent's well-known URL), which
transport reaches it (`relay`, the API's WebSocket, or `pubnub`), and when it was last seen.

`agent_tokens` are the agents' credentials: scoped to one agent and to skills it declares, shown
once, stored as a lookup id plus a hash of the secret (as API keys), rotatable (a new token) and
revocable. `blocks_resolve_agent_token(lookup)` is the one pre-tenant read: SECURITY DEFINER as
the table's owner, the token row and its agent's name, binding the transaction to the token's
organization.

`agent_tasks` holds each task from its dispatch until it ends: the agent, the skill, the run and
step, its state, the current attempt's Temporal task token (what completes the activity), and
the input sealed under the organization's data key, which is deleted (NULL) once the agent has
acknowledged the task: task content is transient. What remains is metadata: timestamps, attempts,
outcome and latency, which the agent metrics read. `redeliver_at` is when an unacknowledged
delivery is sent again. Rows changed by a dispatch wake the API's relay through
`NOTIFY blocks_agent_tasks` (payload: the agent id).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_TOKENS_OWNER = (
    "(SELECT c.relowner::regrole::text FROM pg_class c "
    "WHERE c.oid = 'public.agent_tokens'::regclass)"
)
_TENANT = """
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_tenant ON {table}
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE agents (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            name varchar(100) NOT NULL,
            card jsonb NOT NULL,
            public boolean NOT NULL DEFAULT false,
            transport varchar(16) NOT NULL DEFAULT 'relay',
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            deleted_at timestamptz,
            last_seen_at timestamptz,
            CONSTRAINT agents_transport CHECK (transport IN ('relay', 'pubnub'))
        );
        CREATE UNIQUE INDEX ux_agents_live_name ON agents (org_id, name) WHERE deleted_at IS NULL;
        CREATE INDEX ix_agents_org ON agents (org_id);

        CREATE TABLE agent_tokens (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            agent_id uuid NOT NULL REFERENCES agents(id) ON DELETE RESTRICT,
            name varchar(100) NOT NULL,
            lookup varchar(32) NOT NULL UNIQUE,
            secret_hash text NOT NULL,
            skills text[] NOT NULL,
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            expires_at timestamptz,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX ix_agent_tokens_agent ON agent_tokens (org_id, agent_id);

        CREATE TABLE agent_tasks (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            agent_id uuid NOT NULL REFERENCES agents(id) ON DELETE RESTRICT,
            skill varchar(200) NOT NULL,
            run_id varchar(100) NOT NULL,
            workflow_id varchar(200) NOT NULL,
            step varchar(200) NOT NULL,
            state varchar(24) NOT NULL,
            attempt integer NOT NULL DEFAULT 1,
            task_token bytea,
            content_key_id uuid REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            input_sealed bytea,
            answer_sealed bytea,
            created_at timestamptz NOT NULL,
            delivered_at timestamptz,
            acked_at timestamptz,
            redeliver_at timestamptz,
            last_heartbeat_at timestamptz,
            finished_at timestamptz,
            outcome varchar(24),
            latency_ms integer,
            deliveries integer NOT NULL DEFAULT 0,
            CONSTRAINT agent_tasks_state CHECK (state IN (
                'queued', 'delivered', 'working', 'input_required', 'answered',
                'completed', 'failed', 'canceled', 'rejected'))
        );
        CREATE INDEX ix_agent_tasks_deliverable ON agent_tasks (agent_id, redeliver_at)
            WHERE state IN ('queued', 'delivered', 'answered');
        CREATE INDEX ix_agent_tasks_metrics ON agent_tasks (org_id, agent_id, finished_at);
        CREATE INDEX ix_agent_tasks_run ON agent_tasks (org_id, run_id);
        """
    )
    for table in ("agents", "agent_tokens", "agent_tasks"):
        op.execute(_TENANT.format(table=table))
    op.execute(
        f"""
        GRANT SELECT, INSERT, UPDATE ON agents, agent_tokens, agent_tasks TO blocks_app;

        DO $$
        BEGIN
            EXECUTE format(
                'CREATE POLICY agent_tokens_pre_tenant_lookup ON agent_tokens FOR SELECT TO %s '
                'USING (current_setting(''app.pre_tenant_lookup'', true) = ''on'')',
                {_TOKENS_OWNER}
            );
        END
        $$;

        CREATE FUNCTION blocks_resolve_agent_token(p_lookup text)
        RETURNS TABLE (
            token_id uuid, org_id uuid, agent_id uuid, agent_name varchar, secret_hash text,
            skills text[], expires_at timestamptz, revoked_at timestamptz,
            agent_deleted_at timestamptz, transport varchar
        )
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            v_org uuid;
        BEGIN
            PERFORM set_config('app.pre_tenant_lookup', 'on', true);
            SELECT t.org_id INTO v_org FROM public.agent_tokens t WHERE t.lookup = p_lookup;
            PERFORM set_config('app.pre_tenant_lookup', '', true);
            IF v_org IS NULL THEN
                RETURN;
            END IF;
            PERFORM set_config('app.org_id', v_org::text, true);
            RETURN QUERY
                SELECT t.id, t.org_id, t.agent_id, a.name, t.secret_hash, t.skills, t.expires_at,
                       t.revoked_at, a.deleted_at, a.transport
                FROM public.agent_tokens t JOIN public.agents a ON a.id = t.agent_id
                WHERE t.lookup = p_lookup;
        END;
        $$;
        DO $$
        BEGIN
            EXECUTE format(
                'ALTER FUNCTION blocks_resolve_agent_token(text) OWNER TO %s', {_TOKENS_OWNER}
            );
        END
        $$;
        REVOKE ALL ON FUNCTION blocks_resolve_agent_token(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION blocks_resolve_agent_token(text) TO blocks_app;
        """  # noqa: S608 (only the module's own constant is interpolated)
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION blocks_resolve_agent_token(text);
        DROP TABLE agent_tasks;
        DROP TABLE agent_tokens;
        DROP TABLE agents;
        """
    )
