"""Identity adapters: identity-provider settings, OIDC and SAML protocol work, DNS proofs."""
