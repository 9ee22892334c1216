"""Keys: each organization's data keys (wrapped by the master keys) and the master keys' lifecycle.

Entry points: `org_keys` (the `org_data_keys` table, `DatabaseOrgKeys` for the payload codec,
`destroy_org_keys`).

May use: `blocks.models.base`, `core` and `infra`.
"""
