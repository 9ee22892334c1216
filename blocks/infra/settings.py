"""Configuration from BLOCKS_* environment variables; dev needs none, prod refuses insecure ones."""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Runs a worker keeps in memory between their workflow tasks, unless told otherwise (see below).
WORKER_CACHE_DEFAULT = 250
# Workflow tasks (and the local activities they run) a worker works on at once (see below).
WORKER_TASKS_DEFAULT = 20


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKS_", extra="forbid")

    env: Environment = Environment.DEV
    data_dir: Path = Path(".blocks")

    # Unset means `blocks dev` starts the embedded server and points these at it.
    database_url: SecretStr | None = None
    # The table owner's URL, for `blocks migrate` only; unset means database_url. The API and
    # workers should connect as a non-owner role so the audit grants bind them (see migrations).
    migration_database_url: SecretStr | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: SecretStr | None = None
    task_queue: str = "blocks"
    # The modules whose BlocksWorkflow subclasses a worker serves (`blocks worker --workflows`):
    # comma-separated, e.g. `my_company.workflows,blocks_examples`.
    workflow_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How often a worker tells the catalogue it still serves what it published.
    catalogue_heartbeat_seconds: float = Field(default=60.0, gt=0)
    # Runs a worker keeps in memory between their workflow tasks (Temporal's sticky cache; 0: none).
    # A cached run's next task (a decision, a timer) runs at once; one evicted is first replayed
    # from its history, which costs the worker CPU. Each cached run holds about 130 KB, so the
    # SDK's 1,000 would let a worker with many runs parked on approvals grow by 130 MB.
    worker_max_cached_workflows: int = Field(default=WORKER_CACHE_DEFAULT, ge=0, le=100_000)
    # Workflow tasks a worker runs at once, and as many local activities (the audit append). They
    # run on one event loop under one GIL, so the SDK's 100 adds no throughput; it holds up to 100
    # sandboxes and activations at once (a burst of 50 decisions: ~15 MB more at peak) and floods
    # PostgreSQL and Temporal, slowing the API's starts. At least 2 (the SDK's floor with a cache).
    worker_max_concurrent_workflow_tasks: int = Field(default=WORKER_TASKS_DEFAULT, ge=2, le=1_000)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    postgres_port: int = Field(default=55432, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)

    db_pool_size: int = Field(default=20, ge=1)
    # Request bodies (api.request_limits): larger ones are refused (413) before they are read
    # whole; a JSON body also past this nesting depth or this many members in all, before it
    # is parsed.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_json_depth: int = Field(default=32, ge=2, le=256)
    max_json_members: int = Field(default=10_000, ge=10, le=1_000_000)
    # An attachment's largest size (api.approvals.attachments): its upload's body may be this
    # much (plus the multipart framing) instead of max_body_bytes; a larger file is a 413.
    attachment_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    demo_org: bool = True

    # `key-id:base64(32 bytes)`, comma-separated; the first encrypts, all decrypt (rotation).
    # Unset in dev and test: a key is generated once and kept in the data dir (mode 0600).
    payload_keys: SecretStr | None = None

    # Email (decision links to approvers). Unset host: no email is sent.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "Blocks <blocks@localhost>"
    # Where people reach the API, for links in emails.
    public_url: str = "http://127.0.0.1:8000"
    decision_link_hours: int = Field(default=72, ge=1, le=24 * 30)
    # `key-id:base64(32-byte Ed25519 seed)`: signs audit checkpoints. Generated in dev and test.
    audit_signing_key: SecretStr | None = None
    # `key-id:base64(raw Ed25519 public key)`, comma-separated, current first: what the API
    # publishes and verifies with. Required in production (the signing key stays on the worker);
    # derived from the signing key elsewhere.
    audit_public_keys: str | None = None
    # A checkpoint is signed this often for every organization with new events, and pushed to its
    # SIEM streams and witnesses: a rewrite after the last checkpoint that left is then caught.
    audit_checkpoint_minutes: int = Field(default=1, ge=1)
    # How often the worker's dispatcher looks for destinations with events or checkpoints to
    # send (webhooks, SIEM streams, witnesses), and how long a destination's receiver may fail
    # before it is disabled and the organization's owners and admins are told.
    event_dispatch_seconds: float = Field(default=2.0, ge=0.1, le=300.0)
    destination_disable_after_hours: float = Field(default=72.0, ge=0.01, le=24.0 * 30)
    # A run left `starting` this long (a crash between its row and its workflow) is settled by the
    # worker's reconciler: confirmed if its workflow exists, else closed as abandoned. Far above
    # the API's 10 s wait for Temporal to take a start, so no start in flight is judged.
    run_start_bound_seconds: float = Field(default=60.0, ge=1.0, le=86_400.0)
    run_start_reconcile_seconds: float = Field(default=15.0, ge=0.1, le=3_600.0)
    # How long after a run closes its history key (sealing its LLM prompts and replies) is
    # destroyed: time for an operator to read a just-finished run in the Temporal UI. At most
    # 30 days: prompts are not kept beyond the run.
    run_key_grace_seconds: float = Field(default=3_600.0, ge=0.0, le=30 * 86_400.0)
    run_key_sweep_seconds: float = Field(default=60.0, ge=0.1, le=3_600.0)
    # Starts one API process sends Temporal at once; more wait their turn up to
    # `run_start_queue_seconds`, then get 503 + Retry-After. Below `db_pool_size`, so a start
    # that Temporal took always finds a connection to settle its row, however many arrive.
    run_start_concurrency: int = Field(default=12, ge=1, le=1_000)
    run_start_queue_seconds: float = Field(default=10.0, gt=0, le=60.0)
    # How long a decision waits for its run to answer (no worker running, an overloaded one)
    # before the API answers 503 `run_busy`; the decision stays queued under its Update id, so
    # a retry returns its result and never decides twice.
    decision_wait_seconds: float = Field(default=30.0, gt=0, le=300.0)
    # `key-id:base64(32 bytes)`, comma-separated, like payload_keys: wrap the per-person keys that
    # encrypt personal fields of audit events. Generated in dev and test (data dir, mode 0600).
    master_keys: SecretStr | None = None

    # The Slack app's signing secret (one app per deployment): verifies interactive-button
    # requests. Unset: the Slack channel is off (no messages posted, interactions refused).
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # How long a code from POST /v1/me/slack-link may be confirmed from Slack.
    slack_link_code_minutes: int = Field(default=10, ge=1, le=60)
    # Outbound URLs an organization configures (LLM base URLs, webhooks) may reach only public
    # addresses; these `host:port` pairs (comma-separated, `[::1]:8080` for IPv6) are allowed
    # although private, plain http included. Parsed by OutboundPolicy.from_settings.
    outbound_allow_private: str | None = None
    # The DNS server (`host:port`) that domain verification asks for TXT records; unset: the
    # system's resolvers.
    dns_resolver: str | None = None
    # PubNub, for agents registered with the `pubnub` transport (the customer's keyset, with
    # Access Manager on). All three keys or none: unset, PubNub agents cannot open a session.
    # `pubnub_origin` (host:port) and `pubnub_ssl` point the SDK elsewhere (tests: a local server).
    pubnub_publish_key: str | None = None
    pubnub_subscribe_key: str | None = None
    pubnub_secret_key: SecretStr | None = None
    pubnub_origin: str | None = None
    pubnub_ssl: bool = True
    # Agents may connect WITHOUT a token, naming themselves (`X-Blocks-Dev-Agent`) as an agent of
    # the demo organization, from a loopback address only. Refused unless BLOCKS_ENV=dev and the
    # API binds a loopback address (and no proxy is trusted: every request would look local).
    agent_dev_no_auth: bool = False

    # Sign-in. Sessions end after this long without a request, and at the latest after the
    # absolute limit; sensitive changes (email, 2FA) need a sign-in no older than reauth_minutes.
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    session_absolute_hours: int = Field(default=12, ge=1, le=24 * 30)
    reauth_minutes: int = Field(default=10, ge=1, le=24 * 60)
    signin_link_minutes: int = Field(default=15, ge=1, le=24 * 60)
    password_reset_minutes: int = Field(default=30, ge=1, le=24 * 60)
    invite_days: int = Field(default=7, ge=1, le=30)
    # Anyone may sign up (and create an organization); false: invites only.
    open_signup: bool = True
    # Origins a cookie-authenticated state-changing request may come from; empty: public_url's.
    allowed_origins: list[str] = Field(default_factory=list)
    # Origins of a Temporal UI that may call the codec endpoint (/v1/codec/*), comma-separated,
    # exact (`https://temporal.example.com`): CORS for those two routes only, and their origin
    # check. Unset: no browser on another origin reaches them.
    codec_cors_origins: str | None = None
    # Proxies (IPs or CIDRs) whose X-Forwarded-For is believed; empty: the peer address counts.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Rate limits (the `limits` library): memory:// per process, or a redis:// URL shared by all.
    rate_limit_storage_url: str = "memory://"
    rate_limit_signin_ip: str = "30/minute"
    rate_limit_signin_account: str = "10/15 minutes"
    # Sign-up, sign-in links, resets, invite acceptance.
    rate_limit_token_ip: str = "20/minute"  # noqa: S105
    rate_limit_2fa_account: str = "10/15 minutes"
    rate_limit_api_credential: str = "3000/minute"
    rate_limit_api_ip: str = "6000/minute"
    rate_limit_invalid_ip: str = "120/minute"  # requests refused as invalid, from one address
    rate_limit_slack_link_user: str = "10/15 minutes"  # Slack link codes tried by one Slack user

    @field_validator("workflow_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_variables(cls, values: Any) -> Any:
        # A misspelt BLOCKS_ variable would otherwise be ignored and a default used silently.
        known = {f"BLOCKS_{name.upper()}" for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith("BLOCKS_") and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
        return values

    @model_validator(mode="after")
    def _refuse_inconsistent(self) -> Settings:
        for name in (
            "database_url",
            "migration_database_url",
            "temporal_address",
            "payload_keys",
            "temporal_api_key",
            "audit_signing_key",
            "master_keys",
            "slack_signing_secret",
            "pubnub_secret_key",
        ):
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text is not None and not text.strip():
                raise ValueError(f"BLOCKS_{name.upper()} is set but empty")
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError("BLOCKS_TEMPORAL_TLS_CERT and BLOCKS_TEMPORAL_TLS_KEY go together")
        pubnub = (self.pubnub_publish_key, self.pubnub_subscribe_key, self.pubnub_secret_key)
        if any(pubnub) and not all(pubnub):
            raise ValueError(
                "BLOCKS_PUBNUB_PUBLISH_KEY, _SUBSCRIBE_KEY and _SECRET_KEY go together"
            )
        return self

    @model_validator(mode="after")
    def _refuse_agent_dev_mode_off_loopback(self) -> Settings:
        if not self.agent_dev_no_auth:
            return self
        if self.env is not Environment.DEV:
            raise ValueError(
                f"BLOCKS_AGENT_DEV_NO_AUTH lets agents connect without a token: only with "
                f"BLOCKS_ENV=dev (it is {self.env.value})"
            )
        if not is_loopback(self.api_host):
            raise ValueError(
                f"BLOCKS_AGENT_DEV_NO_AUTH lets agents connect without a token: only when the API "
                f"binds a loopback address (BLOCKS_API_HOST is {self.api_host!r}; use 127.0.0.1, "
                "::1 or localhost)"
            )
        if self.trusted_proxies:
            raise ValueError(
                "BLOCKS_AGENT_DEV_NO_AUTH lets agents connect without a token: not behind a "
                "trusted proxy (BLOCKS_TRUSTED_PROXIES is set), whose requests all look local"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> Settings:
        if self.env is Environment.PROD:
            if self.payload_keys is None:
                raise ValueError("BLOCKS_PAYLOAD_KEYS is required when BLOCKS_ENV=prod")
            # The worker signs checkpoints with the key; the API and migrations only publish and
            # verify, with the public keys. Each process needs one of the two.
            if self.audit_signing_key is None and self.audit_public_keys is None:
                raise ValueError(
                    "BLOCKS_AUDIT_SIGNING_KEY (worker) or BLOCKS_AUDIT_PUBLIC_KEYS (API) is "
                    "required when BLOCKS_ENV=prod"
                )
            if self.master_keys is None:
                raise ValueError("BLOCKS_MASTER_KEYS is required when BLOCKS_ENV=prod")
            if self.database_url is None or self.temporal_address is None:
                raise ValueError(
                    "BLOCKS_DATABASE_URL and BLOCKS_TEMPORAL_ADDRESS are required when BLOCKS_ENV=prod"
                )
            if self.demo_org:
                raise ValueError("BLOCKS_DEMO_ORG must be false when BLOCKS_ENV=prod")
            if not self.slack_api_url.startswith("https://"):
                # Bot tokens travel in its Authorization header.
                raise ValueError("BLOCKS_SLACK_API_URL must be https:// when BLOCKS_ENV=prod")
            # The default (loopback, plain http) would send emailed links nowhere and make the
            # origin check refuse every browser; the session cookie needs https (`__Host-`).
            if "public_url" not in self.model_fields_set:
                raise ValueError("BLOCKS_PUBLIC_URL is required when BLOCKS_ENV=prod")
            public = urlsplit(self.public_url)
            if public.scheme != "https" or not public.hostname:
                raise ValueError("BLOCKS_PUBLIC_URL must be an https:// URL when BLOCKS_ENV=prod")
            if self.pubnub_secret_key is not None and not self.pubnub_ssl:
                # Access Manager grants (signed with the secret key) and agents' tasks travel there.
                raise ValueError("BLOCKS_PUBNUB_SSL must stay true when BLOCKS_ENV=prod")
        return self

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("BLOCKS_DATABASE_URL is not set and no embedded database is running")
        return self.database_url.get_secret_value()

    def require_migration_database_url(self) -> str:
        if self.migration_database_url is not None:
            return self.migration_database_url.get_secret_value()
        return self.require_database_url()

    def require_temporal_address(self) -> str:
        if self.temporal_address is None:
            raise RuntimeError("BLOCKS_TEMPORAL_ADDRESS is not set and no embedded Temporal runs")
        return self.temporal_address


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP address, `[::1]`, or `localhost`) is this machine's loopback."""
    host = host.strip()
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
