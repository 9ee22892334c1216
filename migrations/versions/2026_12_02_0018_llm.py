"""LLM credentials per organization, and the usage of each model call.

`llm_credentials` holds an organization's model servers: provider, base URL (checked by the SSRF
guard when saved), API flavour, the models its workflows may ask for, and the API key sealed with
AES-256-GCM under the organization's live data key (`key_key_id` names that key; `key_sealed` is
nonce + ciphertext, with associated data binding organization, credential id and purpose, so a
sealed key copied to another row does not open). Only the key's last four characters are kept in
clear. A deleted credential keeps its row (the usage rows name it) but loses its sealed key.
Names are unique among an organization's live credentials: workflows ask for one by name.

`llm_usage` is one row per model call an LLM step made: tokens, latency, outcome, and SHA-256
of the prompt and completion (never their text). (org_id, run_id, step, call_id) is unique, so
an activity retried after it recorded does not count twice.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE llm_credentials (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            name varchar(100) NOT NULL,
            provider varchar(40) NOT NULL,
            base_url varchar(2048) NOT NULL,
            api varchar(16) NOT NULL DEFAULT 'chat',
            allowed_models text[] NOT NULL,
            key_last4 varchar(4),
            key_key_id uuid REFERENCES org_data_keys(key_id) ON DELETE RESTRICT,
            key_sealed bytea,
            created_by uuid REFERENCES users(id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            rotated_at timestamptz,
            deleted_at timestamptz,
            CONSTRAINT llm_credentials_api CHECK (api IN ('chat', 'responses')),
            CONSTRAINT llm_credentials_key_while_live CHECK (
                (deleted_at IS NULL) = (key_sealed IS NOT NULL AND key_key_id IS NOT NULL)
            )
        );
        CREATE UNIQUE INDEX ux_llm_credentials_live_name ON llm_credentials (org_id, name)
            WHERE deleted_at IS NULL;
        CREATE INDEX ix_llm_credentials_org ON llm_credentials (org_id);

        ALTER TABLE llm_credentials ENABLE ROW LEVEL SECURITY;
        ALTER TABLE llm_credentials FORCE ROW LEVEL SECURITY;
        CREATE POLICY llm_credentials_tenant ON llm_credentials
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT, UPDATE ON llm_credentials TO blocks_app;

        CREATE TABLE llm_usage (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE RESTRICT,
            run_id varchar(200) NOT NULL,
            step varchar(200) NOT NULL,
            call_id varchar(200) NOT NULL,
            credential_id uuid NOT NULL REFERENCES llm_credentials(id) ON DELETE RESTRICT,
            credential_name varchar(100) NOT NULL,
            model varchar(200) NOT NULL,
            served_model varchar(200),
            input_tokens integer NOT NULL DEFAULT 0,
            output_tokens integer NOT NULL DEFAULT 0,
            latency_ms integer NOT NULL DEFAULT 0,
            outcome varchar(16) NOT NULL,
            prompt_sha256 varchar(64) NOT NULL,
            completion_sha256 varchar(64),
            created_at timestamptz NOT NULL,
            CONSTRAINT llm_usage_outcome CHECK (outcome IN ('ok', 'failed', 'refused')),
            CONSTRAINT llm_usage_call_key UNIQUE (org_id, run_id, step, call_id)
        );
        CREATE INDEX ix_llm_usage_org_time ON llm_usage (org_id, created_at);

        ALTER TABLE llm_usage ENABLE ROW LEVEL SECURITY;
        ALTER TABLE llm_usage FORCE ROW LEVEL SECURITY;
        CREATE POLICY llm_usage_tenant ON llm_usage
            USING (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (org_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
        GRANT SELECT, INSERT ON llm_usage TO blocks_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE llm_usage;
        DROP TABLE llm_credentials;
        """
    )
