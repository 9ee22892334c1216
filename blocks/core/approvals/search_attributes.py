"""The custom search attributes on every run, so operators filter runs in the Temporal UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

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


def at_start(org_id: str, workflow_name: str, requested_by: str | None) -> TypedSearchAttributes:
    """What a run carries from its start (the API's and the authoring kit's alike)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(ORG_ID, org_id),
            SearchAttributePair(WORKFLOW_NAME, workflow_name),
            SearchAttributePair(STATUS, "running"),
            *([SearchAttributePair(REQUESTED_BY, requested_by)] if requested_by else []),
        ]
    )
