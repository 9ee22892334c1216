"""Integration data: Slack installations (bot token sealed), Slack users linked to members, and
the single-use codes with which a member proves a link (`slack_link_codes`).

Outbound destinations (webhooks, SIEM streams, witnesses) with their sealed signing secrets and
where each stream stands (`webhooks`), and the webhooks' delivery log (`webhook_deliveries`).

May use: `blocks.models.base`, `blocks.models.identity`, `core` and `infra`.
"""
