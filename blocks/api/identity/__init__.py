"""Identity routes: who a caller is and what they may do.

Sign-up, sign-in (password, emailed link, second factor), the organization picker, password
reset and the pages behind emailed links (`auth/`), the session cookie and origin check
(`sessions`), the person's own account and 2FA (`me`, `two_factor`), API keys (`api_keys`),
members, invites and the organization's own settings (`members`, `invites`,
`invite_acceptance`, `org_settings`, `orgs`), access reviews (`access_reviews/`); single sign-on
and provisioning tokens in `sso/`.

May use: the shared modules at `blocks.api`'s top, and `integrations.outbound_mail` for the
links it emails. Other domains use `sessions` (a decision link may decide with a session).
"""
