"""Approval routes: runs, the steps waiting in them, and the decisions people make on them.

Starting, reading, listing and cancelling runs (`runs/`), the one decision path every channel
takes (`decisions`), emailed decision links (`decision_links`), delegations and member groups
(`delegations`, `groups`), the approver's inbox (`inbox`), attachments, the workflow catalogue,
the payload codec (`codec`) and the SLA compliance report (`sla/`).

May use: the shared modules at `blocks.api`'s top, `identity.sessions` (a link decided by a
signed-in approver), and `blocks.workflows` for workflow names, inputs and the decide Update.
"""
