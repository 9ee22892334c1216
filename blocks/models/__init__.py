"""Tables and the data-access functions over them; every tenant query takes an OrgContext first."""

from blocks.models.approvals.runs import Run
from blocks.models.audit.checkpoints import AuditCheckpoint
from blocks.models.audit.events import AuditChainHead, AuditEvent
from blocks.models.identity.api_keys import ApiKey
from blocks.models.identity.orgs import Membership, Organization, User

__all__ = [
    "ApiKey",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "Membership",
    "Organization",
    "Run",
    "User",
]
