"""Integration data: Slack installations (bot token sealed), Slack users linked to members, and
the single-use codes with which a member proves a link (`slack_link_codes`).

Outbound webhook destinations with their sealed signing secrets and delivery log (`webhooks`);
audit-stream cursors will land here.

May use: `blocks.models.base`, `blocks.models.identity`, `core` and `infra`.
"""
