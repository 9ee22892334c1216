"""Integration routes: how Blocks reaches people and systems outside it.

Slack (`slack`: the installation, unlinking users; `slack_links`: a member links their own Slack
account with a code; `slack_interactions`: signed clicks decided like any decision, and link
codes confirmed; `slack_replies`: what those share) and email sent on behalf of a request
(`outbound_mail`). Outbound webhooks and audit streaming will land here.

May use: the shared modules at `blocks.api`'s top, `approvals.decisions` (a Slack click is a
decision) and `identity.sessions` (a link is started by the member's session).
"""
