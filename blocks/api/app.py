"""The FastAPI application: wiring of routers, error handlers, database engine and Temporal client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from blocks import __version__
from blocks.api import health
from blocks.api.agents import metrics as agent_metrics
from blocks.api.agents import registry as agent_registry
from blocks.api.agents import relay as agent_relay
from blocks.api.agents import session as agent_session
from blocks.api.agents import task_input as agent_task_input
from blocks.api.agents import tokens as agent_tokens
from blocks.api.agents import well_known as agent_cards
from blocks.api.agents.auth import warn_if_dev_mode
from blocks.api.agents.relay import RelayHub
from blocks.api.approvals import (
    approval_settings,
    attachments,
    catalogue,
    codec,
    decision_links,
    delegations,
    groups,
    inbox,
)
from blocks.api.approvals.runs import cancel as run_cancel
from blocks.api.approvals.runs import detail as runs
from blocks.api.approvals.runs import listing as run_list
from blocks.api.approvals.runs import run_input
from blocks.api.approvals.runs import starts as run_starts
from blocks.api.approvals.sla.reports import router as sla_reports_router
from blocks.api.audit import checkpoints, privacy
from blocks.api.audit import events as audit_events
from blocks.api.audit import export as audit_export
from blocks.api.console.routes import install_console
from blocks.api.error_handlers import install_error_handlers
from blocks.api.identity import (
    api_keys,
    invite_acceptance,
    invites,
    me,
    members,
    org_settings,
    orgs,
    two_factor,
)
from blocks.api.identity.access_reviews.routes import router as access_reviews_router
from blocks.api.identity.auth import link_pages, password_reset, sign_in, signup
from blocks.api.identity.sessions import codec_origins
from blocks.api.identity.sso import (
    domains,
    enforcement,
    oidc,
    providers,
    saml,
    scim_tokens,
    start,
)
from blocks.api.integrations.slack import router as slack_router
from blocks.api.integrations.slack_interactions import router as slack_interactions_router
from blocks.api.integrations.slack_links import router as slack_links_router
from blocks.api.integrations.webhooks import router as webhooks_router
from blocks.api.llm import credentials as llm_credentials
from blocks.api.llm import retention as llm_retention
from blocks.api.llm import usage as llm_usage
from blocks.api.reference import docs
from blocks.api.reference.openapi import install_openapi
from blocks.api.request_limits import install_request_limits
from blocks.api.scim.routes import router as scim_router
from blocks.api.security_headers import SecurityHeaders
from blocks.infra.agents.pubnub_grants import PubNubKeys
from blocks.infra.crypto.field_crypto import (
    current_master_keys,
    install_master_keys,
    load_master_keys,
)
from blocks.infra.crypto.org_keys import install_org_keys, installed_org_keys
from blocks.infra.crypto.signing import load_public_keys
from blocks.infra.db import create_engine, session_factory
from blocks.infra.rate_limits import RateLimiter
from blocks.infra.settings import Settings
from blocks.infra.temporal.client import connect
from blocks.models.agents.pubnub_bridge import PubNubBridge
from blocks.models.keys.master_keys import check_master_keys
from blocks.models.keys.org_keys import DatabaseOrgKeys

_log = logging.getLogger("blocks.api")


async def _check_master_keys(engine: AsyncEngine) -> None:
    """A master key that does not match the database's stops the start (MasterKeyError). The API
    starts while PostgreSQL is away (its routes answer 503), so then the check is only logged as
    skipped; the worker, which cannot start without the database, always checks."""
    try:
        await check_master_keys(engine, current_master_keys())
    except (OSError, SQLAlchemyError) as err:
        _log.error("master keys not checked at start: PostgreSQL did not answer (%s)", err)


async def check_master_keys_before_serving(settings: Settings) -> None:
    """The start-up check of the master keys, before the server starts (`blocks api`): a wrong
    key stops the process with its one-line reason rather than a server's traceback. Skipped
    without a database URL or a reachable database (the app's own start checks again)."""
    if settings.database_url is None:
        return
    install_master_keys(load_master_keys(settings))
    engine = create_engine(settings.require_database_url(), pool_size=1)
    try:
        await _check_master_keys(engine)
    finally:
        await engine.dispose()


def create_app(
    settings: Settings, *, engine: AsyncEngine | None = None, temporal: Client | None = None
) -> FastAPI:
    """Build the app; tests may hand in an engine and client they already hold."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_if_dev_mode(settings)  # agents without a token (BLOCKS_AGENT_DEV_NO_AUTH)
        own_engine = engine is None
        app.state.engine = engine or create_engine(
            settings.require_database_url(), pool_size=settings.db_pool_size
        )
        app.state.sessions = session_factory(app.state.engine)
        await _check_master_keys(app.state.engine)
        # The payload codec seals each run's payloads under its organization's key from here.
        # The source is process-wide; an app that ends hands back the one it found (a process
        # that builds several apps, as tests do, keeps each codec on a live database).
        previous_keys = installed_org_keys()
        install_org_keys(DatabaseOrgKeys(app.state.engine))
        app.state.temporal = temporal or await connect(settings, lazy=True)
        # The relay's wake-ups: LISTEN on a connection of its own (psycopg's URL form).
        app.state.relay = RelayHub()
        app.state.relay.start(
            app.state.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        # PubNub agents' transport, when a keyset is configured (else their sessions answer 503).
        pubnub_keys = PubNubKeys.from_settings(settings)
        app.state.agent_pubnub = None
        if pubnub_keys is not None:
            app.state.agent_pubnub = PubNubBridge(
                pubnub_keys, app.state.sessions, app.state.temporal
            )
            app.state.agent_pubnub.start(
                app.state.engine.url.set(drivername="postgresql").render_as_string(
                    hide_password=False
                )
            )
        try:
            yield
        finally:
            if app.state.agent_pubnub is not None:
                await app.state.agent_pubnub.stop()
            await app.state.relay.stop()
            install_org_keys(previous_keys)
            if own_engine:
                await app.state.engine.dispose()

    # FastAPI's own /docs and /redoc load their scripts from a CDN: api.docs serves the reference.
    app = FastAPI(
        title="Blocks", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    # Public keys only: the checkpoint signing key lives on the worker, which signs.
    app.state.public_keys = load_public_keys(settings)
    # Built now so a malformed BLOCKS_RATE_LIMIT_* (or a missing redis library) stops the start.
    app.state.rate_limiter = RateLimiter(settings)
    # Process-wide: append_events (API and in-process workers) seals personal fields with it.
    install_master_keys(load_master_keys(settings))
    # Inside the error handlers' middleware (added by install_error_handlers, so outside this).
    install_request_limits(app, settings)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(signup.router)
    app.include_router(sign_in.router)
    app.include_router(password_reset.router)
    app.include_router(me.router)
    app.include_router(orgs.router)
    app.include_router(two_factor.router)
    app.include_router(api_keys.router)
    app.include_router(members.router)
    app.include_router(invites.router)
    app.include_router(invite_acceptance.router)
    app.include_router(link_pages.router)
    app.include_router(org_settings.router)
    app.include_router(access_reviews_router)
    app.include_router(providers.router)
    app.include_router(enforcement.router)
    app.include_router(domains.router)
    app.include_router(start.router)
    app.include_router(oidc.router)
    app.include_router(saml.router)
    app.include_router(scim_tokens.router)
    app.include_router(scim_router)
    app.include_router(catalogue.router)
    app.include_router(approval_settings.router)
    app.include_router(run_starts.router)
    app.include_router(run_list.router)
    app.include_router(runs.router)
    app.include_router(run_cancel.router)
    app.include_router(run_input.router)
    app.include_router(attachments.router)
    app.include_router(codec.router)
    app.include_router(inbox.router)
    app.include_router(delegations.router)
    app.include_router(groups.router)
    app.include_router(decision_links.router)
    app.include_router(audit_events.router)
    app.include_router(checkpoints.router)
    app.include_router(audit_export.router)
    app.include_router(privacy.router)
    app.include_router(sla_reports_router)
    app.include_router(slack_router)
    app.include_router(slack_interactions_router)
    app.include_router(slack_links_router)
    app.include_router(webhooks_router)
    app.include_router(llm_credentials.router)
    app.include_router(llm_usage.router)
    app.include_router(llm_retention.settings_router)
    app.include_router(agent_relay.router)
    app.include_router(agent_task_input.router)
    app.include_router(llm_retention.calls_router)
    app.include_router(agent_registry.router)
    app.include_router(agent_tokens.router)
    app.include_router(agent_metrics.router)
    app.include_router(agent_session.router)
    app.include_router(agent_cards.router)
    install_console(app)
    # The client address of a request is the peer's, or, when the peer is a configured trusted
    # proxy, the one it reports in X-Forwarded-For: a spoofed header from anyone else is ignored
    # (rate limits and audit events key on this address). Uvicorn's own proxy handling, which
    # trusts 127.0.0.1 by default, is switched off where the server starts.
    app.add_middleware(codec.CodecCors, origins=codec_origins(settings))
    app.add_middleware(SecurityHeaders, https=settings.public_url.startswith("https://"))
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app
