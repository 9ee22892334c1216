"""Blocks' example workflows, packaged the way an author packages theirs.

A worker serves them with `blocks worker --workflows blocks_examples` (what `blocks dev` does by
default): every `BlocksWorkflow` subclass defined in these modules is served.
"""

from blocks_examples.contract import ContractReview
from blocks_examples.expense import ExpenseApproval
from blocks_examples.purchase import PurchaseApproval

__all__ = ["ContractReview", "ExpenseApproval", "PurchaseApproval"]
