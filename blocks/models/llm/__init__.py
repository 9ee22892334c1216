"""LLM: an organization's model credentials (the API key sealed under its data key) and the usage
of every model call its runs made.

Entry points: `credentials` (create, list, rotate, change, delete, `open_api_key` for the LLM
activity), `usage` (`record_usage`, idempotent per call; `usage_report`).

May use: `blocks.models.base`, `blocks.models.keys` (the organization's data keys), `core` and
`infra`.
"""
