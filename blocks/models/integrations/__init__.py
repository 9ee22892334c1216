"""Integration data: Slack installations (bot token sealed) and Slack users linked to members.

Outbound webhook destinations and audit-stream cursors will land here.

May use: `blocks.models.base`, `blocks.models.identity`, `core` and `infra`.
"""
