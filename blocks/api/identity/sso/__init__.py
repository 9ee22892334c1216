"""Single sign-on and provisioning routes of an organization: starting a sign-in at its identity
provider (start.py), the OIDC callback (oidc.py) and SAML ACS (saml.py) with what they share
(flow.py), the admin routes for providers (providers.py + provider_checks.py), enforcement and
group mappings (enforcement.py), verified domains (domains.py) and SCIM tokens (scim_tokens.py)."""
