"""Integration routes: how Blocks reaches people and systems outside it.

Slack (`slack`: the installation and linked users; `slack_interactions`: button clicks decided
like any decision) and email sent on behalf of a request (`outbound_mail`). Outbound webhooks and
audit streaming will land here.

May use: the shared modules at `blocks.api`'s top and `approvals.decisions` (a Slack click is a
decision).
"""
