"""Approval rules: who may decide a step, when a step is decided, and when it is late.

Policies with groups, N-of-M quorum and rejection rules (`policy`), the one eligibility rule
every channel uses (`eligibility`), working-time deadlines (`business_hours`), the SLA
compliance report computed from audit events (`sla`), what approvers are told (`notifications`)
and the run's search attributes (`search_attributes`).

May use: `blocks.core`'s top modules (roles, context) and `blocks.core.audit.records`.
"""
