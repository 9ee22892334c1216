"""Tables and the data-access functions over them; every tenant query takes an OrgContext first."""

from blocks.models.api_keys import ApiKey
from blocks.models.audit import AuditChainHead, AuditEvent
from blocks.models.checkpoints import AuditCheckpoint
from blocks.models.orgs import Membership, Organization, User
from blocks.models.runs import Run

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
