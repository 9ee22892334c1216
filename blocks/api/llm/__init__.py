"""LLM routes: an organization's model credentials (`credentials`: add, list, read, rotate the
key, change, delete; the key is write-only) and the usage report of its runs' model calls
(`usage`: JSON or CSV).

May use: the shared modules at `blocks.api`'s top, `blocks.models.llm`, and the SSRF guard
(`blocks.infra.integrations.outbound_http`) that every base URL passes when it is saved.
"""
