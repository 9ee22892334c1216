"""The settings of an identity provider, per protocol, as admins give them and sign-in reads them.

The API validates a provider's `config` with these models before it is stored
(`identity_providers.config`, JSON); sign-in reads it back through `oidc_config` /
`saml_config`. The OIDC client secret is not here: it is sealed apart and never shown.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# A lower-case DNS name such as example.com (no scheme, no port, no trailing dot).
Domain = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=253,
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
    ),
]
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# Common MFA markers: RFC 8176 `amr` values for OIDC; Entra's and Okta's AuthnContextClassRef.
DEFAULT_OIDC_MFA_VALUES = ("mfa", "otp", "hwk", "swk", "sc")
DEFAULT_SAML_MFA_VALUES = (
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:okta:saml:2.0:ac:classes:mfa",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountPolicy(_Strict):
    """What every protocol shares: who may come in, and on what terms."""

    allowed_domains: list[Domain] = Field(
        default_factory=list,
        max_length=50,
        description="Email domains this provider may sign in; empty: any",
    )
    jit_provisioning: bool = Field(
        default=False,
        description="Create the member on first sign-in (roles from the group mappings)",
    )
    require_mfa: bool = Field(
        default=False, description="Refuse a sign-in the provider does not say used MFA"
    )


class OidcConfig(AccountPolicy):
    issuer: str = Field(
        min_length=8,
        max_length=2048,
        description="The issuer; its discovery document is at {issuer}/.well-known/openid-configuration",
    )
    client_id: str = Field(min_length=1, max_length=255)
    scopes: list[
        Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,100}$")]
    ] = Field(default_factory=lambda: ["openid", "email", "profile"], max_length=20)
    groups_claim: str | None = Field(
        default="groups",
        max_length=200,
        pattern=r"^[A-Za-z0-9_:/.-]+$",
        description="Where the groups are in the id_token or userinfo: a claim name, or a "
        "dotted path such as realm_access.roles",
    )
    mfa_values: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=lambda: list(DEFAULT_OIDC_MFA_VALUES),
        max_length=20,
        description="An `amr` value or the `acr` among these means MFA was used",
    )

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("the scopes must include openid")
        return list(dict.fromkeys(scopes))

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, issuer: str) -> str:
        if not issuer.startswith(("https://", "http://")):
            raise ValueError("the issuer must be an https:// URL")
        return issuer.rstrip("/")


class SamlConfig(AccountPolicy):
    idp_metadata_xml: str | None = Field(
        default=None,
        max_length=500_000,
        description="The IdP's metadata XML (or give idp_metadata_url, or the three idp_* fields)",
    )
    idp_metadata_url: str | None = Field(
        default=None, max_length=2048, description="Fetched once when saved; save again to refresh"
    )
    idp_entity_id: str | None = Field(default=None, max_length=1024)
    idp_sso_url: str | None = Field(default=None, max_length=2048)
    idp_certificate: str | None = Field(
        default=None, max_length=20_000, description="The IdP's signing certificate (PEM)"
    )
    allow_idp_initiated: bool = Field(
        default=False, description="Accept responses no sign-in here asked for (IdP-initiated)"
    )
    email_attribute: str = Field(default="email", min_length=1, max_length=1024)
    name_attribute: str = Field(default="displayName", min_length=1, max_length=1024)
    groups_attribute: str = Field(default="groups", min_length=1, max_length=1024)
    mfa_values: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(
        default_factory=lambda: list(DEFAULT_SAML_MFA_VALUES),
        max_length=20,
        description="An AuthnContextClassRef among these means MFA was used",
    )


def oidc_config(stored: dict[str, Any]) -> OidcConfig:
    return OidcConfig.model_validate(stored)


def saml_config(stored: dict[str, Any]) -> SamlConfig:
    return SamlConfig.model_validate(stored)
