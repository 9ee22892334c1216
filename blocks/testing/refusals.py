"""What the kit refuses, as the API would: the reason a test asserts on, and the fields."""

from __future__ import annotations


class Refused(Exception):
    """What the API would refuse; `reason` is the code a test asserts on, `errors` the fields."""

    def __init__(
        self, reason: str, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(f"{message} ({reason})")
        self.reason = reason
        self.errors = errors or []


class StartRefused(Refused):
    """A start the API refuses: `missing_permission` (403), `validation_error` (the input breaks
    its schema) or `invalid_approver` (a named approver may not be one), both 422."""


class DecisionRefused(Refused):
    """A decision refused: a `RefusalReason` value (`self_approval`, `not_an_approver`,
    `already_voted`, `step_closed`, `form_invalid`, ...), `missing_permission` or
    `deactivated` (the API would not even accept the member's key)."""
