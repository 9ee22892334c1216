"""Identity data: organizations, people, memberships and every credential they hold.

Tables and data access for organizations, users and memberships (`orgs`), API keys resolved in
one SQL call (`api_keys`), server-side sessions (`sessions`), emailed single-use tokens
(`auth_tokens`), TOTP secrets and backup codes (`two_factor`), invites and member administration
(`invites`, `members`), identity providers, SSO accounts, verified domains and SCIM
provisioning (`sso_*`, `idp_groups`, `domains`, `scim*`), and access reviews with what they list
and revoke (`access_reviews`, `access_review_items`).

May use: `blocks.models.base`, `core` and `infra`; the routes write the audit events of a change.
"""
