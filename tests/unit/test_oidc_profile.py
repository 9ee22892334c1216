"""What an OIDC sign-in's claims say of the person: groups at a name or a dotted path, MFA from
`amr` or `acr`, the id_token's claims over userinfo's, and the PKCE verifier derived per sign-in."""

from __future__ import annotations

import re
from typing import Any

import pytest

from blocks.api.identity.sso.oidc import pkce_verifier
from blocks.infra.identity.oidc_profile import merged_claims, profile_from_claims
from blocks.infra.identity.provider_config import OidcConfig


def _config(**changes: Any) -> OidcConfig:
    return OidcConfig(issuer="https://idp.example", client_id="blocks", **changes)


@pytest.mark.parametrize(
    ("claims", "groups_claim", "groups"),
    [
        ({"groups": ["eng", "ops", "eng"]}, "groups", ("eng", "ops")),
        ({"groups": "eng"}, "groups", ("eng",)),
        ({"realm_access": {"roles": ["admin"]}}, "realm_access.roles", ("admin",)),
        ({"https://acme.example/groups": ["a"]}, "https://acme.example/groups", ("a",)),
        ({"groups": [1, {"x": 2}, "", "ok"]}, "groups", ("ok",)),
        ({"realm_access": ["not", "a", "dict"]}, "realm_access.roles", ()),
        ({"groups": ["eng"]}, None, ()),
    ],
)
def test_groups_are_read_at_the_configured_claim(
    claims: dict[str, Any], groups_claim: str | None, groups: tuple[str, ...]
) -> None:
    profile = profile_from_claims({"sub": "s", **claims}, _config(groups_claim=groups_claim))
    assert profile.groups == groups


@pytest.mark.parametrize(
    ("claims", "mfa"),
    [
        ({"amr": ["pwd", "mfa"]}, True),
        ({"amr": ["pwd"]}, False),
        ({"amr": "otp"}, True),
        ({"acr": "http://schemas.openid.net/pape/policies/2007/06/multi-factor"}, True),
        ({"acr": "urn:basic"}, False),
        ({}, False),
    ],
)
def test_mfa_is_judged_from_amr_or_acr(claims: dict[str, Any], mfa: bool) -> None:
    config = _config(
        mfa_values=["mfa", "otp", "http://schemas.openid.net/pape/policies/2007/06/multi-factor"]
    )
    assert profile_from_claims({"sub": "s", **claims}, config).mfa is mfa


@pytest.mark.parametrize(
    ("value", "verified"),
    [(True, True), ("true", True), (False, False), ("yes", False), (None, False)],
)
def test_email_verified_must_say_true(value: object, verified: bool) -> None:
    profile = profile_from_claims(
        {"sub": "s", "email": "a@b.example", "email_verified": value}, _config()
    )
    assert profile.email_verified is verified


def test_the_id_token_wins_over_userinfo_and_userinfo_cannot_claim_mfa() -> None:
    token = {"sub": "s", "email": "token@b.example", "iss": "https://idp.example"}
    info = {"sub": "s", "email": "info@b.example", "name": "Ann", "amr": ["mfa"], "groups": ["g"]}
    merged = merged_claims(token, info)
    assert merged["email"] == "token@b.example"
    assert merged["name"] == "Ann"
    assert merged["groups"] == ["g"]
    assert "amr" not in merged
    assert profile_from_claims(merged, _config()).mfa is False


def test_the_display_name_falls_back_to_given_and_family_names() -> None:
    claims = {"sub": "s", "given_name": "Ada", "family_name": "Lovelace"}
    assert profile_from_claims(claims, _config()).display_name == "Ada Lovelace"
    assert profile_from_claims({"sub": "s"}, _config()).display_name is None


def test_the_pkce_verifier_is_per_browser_and_per_state() -> None:
    verifier = pkce_verifier("binding-1", "state-1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", verifier)  # RFC 7636: 43-128 unreserved chars
    assert verifier == pkce_verifier("binding-1", "state-1")
    assert verifier != pkce_verifier("binding-2", "state-1")
    assert verifier != pkce_verifier("binding-1", "state-2")
