"""An example agent with two invoice skills, served to Blocks with `blocks agent run`.

`extract-totals` adds up an invoice's line items; `check-vendor` approves a known vendor at once
and asks a person (an approval step in Blocks) about any other. See README.md beside this file.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from blocks.agent import Agent, Task, TaskFailed

agent = Agent(max_concurrent_tasks=4)

# A real agent would look vendors up in its own system, inside the network it runs in.
KNOWN_VENDORS = frozenset({"ACME Corp", "Globex"})
CENT = Decimal("0.01")


@agent.skill("extract-totals")
async def extract_totals(task: Task) -> dict[str, Any]:
    """Subtotal, tax and total of `line_items` ([{description, quantity, unit_price}]) at
    `tax_rate` (a fraction, e.g. "0.2"); amounts as decimal strings, to the cent."""
    items = task.input.get("line_items")
    if not isinstance(items, list) or not items:
        raise TaskFailed("line_items: a non-empty list of {description, quantity, unit_price}")
    subtotal = Decimal(0)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise TaskFailed(f"line_items[{index}]: an object")
        quantity = _decimal(item.get("quantity", 1), f"line_items[{index}].quantity")
        price = _decimal(item.get("unit_price"), f"line_items[{index}].unit_price")
        subtotal += quantity * price
    tax_rate = _decimal(task.input.get("tax_rate", "0"), "tax_rate")
    await task.progress(f"{len(items)} line items added up")
    tax = (subtotal * tax_rate).quantize(CENT)
    subtotal = subtotal.quantize(CENT)
    return {
        "currency": str(task.input.get("currency", "EUR")),
        "line_count": len(items),
        "subtotal": str(subtotal),
        "tax": str(tax),
        "total": str(subtotal + tax),
    }


@agent.skill("check-vendor")
async def check_vendor(task: Task) -> dict[str, Any]:
    """Whether to pay `vendor`: yes for a known one; otherwise a person decides."""
    vendor = task.input.get("vendor")
    if not isinstance(vendor, str) or not vendor.strip():
        raise TaskFailed("vendor: the vendor's name is required")
    if vendor in KNOWN_VENDORS:
        return {"vendor": vendor, "known": True, "approved": True}
    answer = await task.ask(
        f"Unknown vendor {vendor}: pay this invoice?",
        details={"vendor": vendor, "invoice": task.input.get("invoice_number")},
    )
    # Blocks answers with the approval step's decision: {"approved": bool, "comment": ...}.
    return {"vendor": vendor, "known": False, "approved": answer.get("approved") is True}


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TaskFailed(f"{field}: a number or a decimal string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise TaskFailed(f"{field}: not a number") from None
    if not number.is_finite():
        raise TaskFailed(f"{field}: not a finite number")
    return number
