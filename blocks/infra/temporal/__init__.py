"""Temporal adapters: the one client factory (`client`), the AES-256-GCM payload codec
(`payload_codec`), the checkpoint schedule (`schedules`) and search-attribute registration
(`search_attributes`). The codec endpoint's decoding will land here.

May use: `blocks.infra.settings`, `blocks.infra.crypto` and `blocks.core`.
"""
