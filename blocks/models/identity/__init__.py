"""Identity data: organizations, people, memberships and every credential they hold.

Tables and data access for organizations, users and memberships (`orgs`), API keys resolved in
one SQL call (`api_keys`), server-side sessions (`sessions`), emailed single-use tokens
(`auth_tokens`), TOTP secrets and backup codes (`two_factor`), invites and member administration
(`invites`, `members`), single sign-on's providers, accounts, verified domains and group
mappings (`sso/`), SCIM provisioning (`scim/`), and access reviews with what they list and revoke
(`access_reviews/`).

May use: `blocks.models.base`, `core` and `infra`; the routes write the audit events of a change.
"""
