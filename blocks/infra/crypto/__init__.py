"""Cryptography adapters: sealing secrets and personal fields under the master keys
(`field_crypto`), key specs with rotation (`key_specs`), Ed25519 checkpoint signing (`signing`),
token hashing and constant-time comparison (`hashing`), argon2id passwords and their policy
(`passwords`), TOTP (`totp`), and the development key files (`dev_keys`). Per-organization data
keys will land here.

May use: `blocks.infra.settings` and `blocks.core`.
"""
