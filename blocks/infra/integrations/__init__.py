"""Adapters to services outside Blocks: SMTP email (`email`), the Slack Web API through slack-sdk
(`slack`), models through the openai SDK (`llm`), and the SSRF guard every URL an organization
configures is checked and called through (`outbound_http`, `outbound_addresses`), and signed
outbound webhooks, one attempt at a time (`webhooks`).

May use: `blocks.infra.settings`, `blocks.infra.crypto` and `blocks.core`.
"""
