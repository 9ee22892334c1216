"""The email address type of request bodies: validated and normalized (lowercase) once, here."""

from __future__ import annotations

from typing import Annotated

import email_validator
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

# Self-hosted deployments mail internal domains (`.internal`, `.local`, `.test` in tests), which
# the library refuses by default as special-use names; syntax is still checked in full.
email_validator.SPECIAL_USE_DOMAIN_NAMES = []


def normalize_email(value: str) -> str:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as err:
        raise ValueError(str(err)) from None
    # One account per mailbox: the same address in another case is the same person.
    return checked.normalized.lower()


EmailAddress = Annotated[str, Field(max_length=320), AfterValidator(normalize_email)]
