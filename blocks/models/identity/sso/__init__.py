"""Single sign-on data: identity providers (providers.py), the accounts they vouch for and their
linking rules (accounts.py), in-flight sign-in requests (requests.py), verified email domains
(domains.py) and the provider's group mappings (idp_groups.py)."""
