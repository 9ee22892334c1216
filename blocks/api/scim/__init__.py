"""SCIM 2.0 provisioning at /scim/v2: an organization's identity provider manages its members."""
