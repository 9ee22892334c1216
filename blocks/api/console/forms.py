"""Reading console forms and turning refusals into what a page shows: a form's fields as strings,
a pydantic ValidationError or an API Problem as messages per field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from blocks.api.errors import Problem, invalid_field

_MOMENT: TypeAdapter[datetime] = TypeAdapter(datetime)


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of a posted form (urlencoded or multipart); files are read separately."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def read_files(request: Request) -> list[UploadFile]:
    form = await request.form()
    return [value for _, value in form.multi_items() if isinstance(value, UploadFile)]


@dataclass
class FormErrors:
    """What a page shows above and beside its form: one message, and messages by field."""

    message: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.message is not None or bool(self.fields)


def from_validation(error: ValidationError) -> FormErrors:
    fields: dict[str, str] = {}
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "form"
        fields.setdefault(name, item["msg"])
    return FormErrors("check the fields marked below", fields)


def from_problem(problem: Problem) -> FormErrors:
    """The API's own words for a refusal: its detail, and its per-field errors when it has them."""
    fields: dict[str, str] = {}
    for item in problem.errors or []:
        fields.setdefault(item.get("field", "form"), item.get("reason", ""))
    return FormErrors(problem.detail, fields)


def text_field(value: str | None) -> str:
    """A filter's text as typed, trimmed; empty is no filter."""
    return (value or "").strip()


def moment_field(name: str, text: str) -> datetime | None:
    """A filter's time as a datetime-local input sends it (`2026-12-02T14:05`; the API takes a
    time without a zone as UTC); empty is no filter, anything else a 422 naming the field."""
    if not text:
        return None
    try:
        return _MOMENT.validate_python(text)
    except ValidationError:
        raise invalid_field(name, "not a date and time (YYYY-MM-DDTHH:MM)") from None
