"""Adapters to services outside Blocks: SMTP email (`email`) and the Slack Web API through
slack-sdk (`slack`). PubNub, LLM clients and SSRF-safe HTTP for webhooks will land here.

May use: `blocks.infra.settings`, `blocks.infra.crypto` and `blocks.core`.
"""
