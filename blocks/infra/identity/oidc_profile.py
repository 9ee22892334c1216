"""What an OpenID Connect sign-in's claims say of the person: id_token and userinfo merged, the
groups at the configured claim (a name or a dotted path), MFA from `amr` or `acr`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.infra.identity.provider_config import OidcConfig

# What only the signed id_token may say (userinfo adds profile claims, never these).
_TOKEN_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "auth_time", "acr", "amr"}
)


@dataclass(frozen=True)
class OidcProfile:
    """What a sign-in proved about the person (the protocol-neutral ExternalProfile's fields)."""

    subject: str
    email: str | None
    email_verified: bool
    display_name: str | None
    groups: tuple[str, ...]
    mfa: bool


def claim_strings(value: Any) -> tuple[str, ...]:
    """A claim read as strings: a string is one, a list keeps its strings, anything else none."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def merged_claims(token_claims: dict[str, Any], userinfo: dict[str, Any]) -> dict[str, Any]:
    """The id_token's (checked, signed) claims over userinfo's; userinfo adds what the token
    left out (oidc-provider and others put email and groups in userinfo only)."""
    return {k: v for k, v in userinfo.items() if k not in _TOKEN_CLAIMS} | token_claims


def _at_path(claims: dict[str, Any], path: str) -> Any:
    """A claim by name (`https://example.com/groups` is one name) or by dotted path."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def profile_from_claims(claims: dict[str, Any], config: OidcConfig) -> OidcProfile:
    """The person as the merged claims (id_token over userinfo) describe them."""
    groups = claim_strings(_at_path(claims, config.groups_claim)) if config.groups_claim else ()
    mfa_values = set(config.mfa_values)
    acr = claims.get("acr")
    mfa = bool(mfa_values.intersection(claim_strings(claims.get("amr")))) or (
        isinstance(acr, str) and acr in mfa_values
    )
    verified = claims.get("email_verified")
    email = claims.get("email")
    name = claims.get("name") or " ".join(
        part for part in (claims.get("given_name"), claims.get("family_name")) if part
    )
    return OidcProfile(
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) and email else None,
        # Some providers (Cognito) send the string "true".
        email_verified=verified is True or str(verified).lower() == "true",
        display_name=name if isinstance(name, str) and name else None,
        groups=tuple(dict.fromkeys(g for g in groups if 0 < len(g) <= 255)),
        mfa=mfa,
    )
