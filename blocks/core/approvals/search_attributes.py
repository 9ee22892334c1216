"""The custom search attributes on every run, so operators filter runs in the Temporal UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

ORG_ID = SearchAttributeKey.for_keyword("BlocksOrgId")
WORKFLOW_NAME = SearchAttributeKey.for_keyword("BlocksWorkflow")
STATUS = SearchAttributeKey.for_keyword("BlocksStatus")
PENDING_APPROVERS = SearchAttributeKey.for_keyword_list("BlocksPendingApprovers")
SLA_DEADLINE = SearchAttributeKey.for_datetime("BlocksSlaDeadline")
# Who started the run (a member id), set once at the start; runs started before it have none.
REQUESTED_BY = SearchAttributeKey.for_keyword("BlocksRequestedBy")

ALL_KEYS: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    ORG_ID,
    WORKFLOW_NAME,
    STATUS,
    PENDING_APPROVERS,
    SLA_DEADLINE,
    REQUESTED_BY,
)
