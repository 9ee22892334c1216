"""Approval data: runs, decision links, delegations, member groups, pending steps, SLA reads.

The `runs` table (`runs`), hashed single-use decision links (`decision_links`), delegations of
approvals for a period (`delegations`), member groups policies can require (`groups`), the
inbox's projection of open steps (`pending_steps`), and the read of approval events the SLA report
is computed from (`sla_reports`).

May use: `blocks.models.base`, `blocks.models.identity` (members a link or group names),
`blocks.models.audit`, `core` and `infra`.
"""
