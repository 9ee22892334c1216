"""OpenID Connect sign-in, the protocol side: discovery, the authorization URL, the code exchange
and the id_token's checks (authlib and joserfc), what the provider proved as an `OidcProfile`.

Every URL of a provider is called through the SSRF guard (`guarded_client`), which the caller
opens with the deployment's `OutboundPolicy`. A provider's discovery document and keys are kept
a few minutes per issuer; an id_token signed with a key not among them fetches the keys once
more (the provider rotated them). Refusals raise `OidcError` (a sentence saying why, for the
audit log and the person); a provider that does not answer raises `OidcUnreachable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    MissingKeyError,
)
from joserfc.jwk import KeySet

from blocks.infra.identity.oidc_http import (
    OidcError,
    Recent,
    call,
    get_json,
    json_object,
)
from blocks.infra.identity.oidc_profile import (
    OidcProfile,
    claim_strings,
    merged_claims,
    profile_from_claims,
)
from blocks.infra.identity.provider_config import OidcConfig

# Clocks of two machines differ a little; a minute is what an id_token's times may be off by.
_LEEWAY_SECONDS = 60
# Only keys the provider publishes verify a token: never `none`, nor a secret shared with us.
_ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_TOKEN_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
}


@dataclass(frozen=True)
class ProviderMetadata:
    """What the discovery document says of a provider (the parts sign-in uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    signing_algs: tuple[str, ...]
    iss_parameter_supported: bool


_documents: Recent[ProviderMetadata] = Recent()
_key_sets: Recent[KeySet] = Recent()


def _url(document: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = document.get(name)
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    if value is None and not required:
        return None
    raise OidcError(f"the provider's discovery document has no valid {name}")


async def discover(http: httpx.AsyncClient, issuer: str) -> ProviderMetadata:
    """The provider's metadata from {issuer}/.well-known/openid-configuration (kept a while);
    its `issuer` must be the configured one (a trailing slash aside)."""
    cached = _documents.get(issuer)
    if cached is not None:
        return cached
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    document = await get_json(http, url, "discovery document")
    found = document.get("issuer")
    if not isinstance(found, str) or found.rstrip("/") != issuer.rstrip("/"):
        raise OidcError(f"the discovery document names issuer {str(found)[:200]!r}, not {issuer!r}")
    signing = [a for a in claim_strings(document.get("id_token_signing_alg_values_supported"))]
    metadata = ProviderMetadata(
        issuer=found,
        authorization_endpoint=str(_url(document, "authorization_endpoint")),
        token_endpoint=str(_url(document, "token_endpoint")),
        jwks_uri=str(_url(document, "jwks_uri")),
        userinfo_endpoint=_url(document, "userinfo_endpoint", required=False),
        # OpenID Connect Discovery's defaults when the document is silent.
        token_auth_methods=claim_strings(document.get("token_endpoint_auth_methods_supported"))
        or ("client_secret_basic",),
        signing_algs=tuple(a for a in signing if a in _ASYMMETRIC_ALGS) or ("RS256",),
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported")
        is True,
    )
    _documents.put(issuer, metadata)
    return metadata


def authorization_url(
    metadata: ProviderMetadata,
    config: OidcConfig,
    *,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
    login_hint: str | None = None,
) -> str:
    """Where to send the browser: the code flow with state, nonce and PKCE (S256)."""
    client = OAuth2Client(
        None,
        client_id=config.client_id,
        scope=" ".join(config.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    extra = {"login_hint": login_hint} if login_hint else {}
    url, _ = client.create_authorization_url(
        metadata.authorization_endpoint,
        state=state,
        code_verifier=code_verifier,
        nonce=nonce,
        response_type="code",
        **extra,
    )
    return str(url)


def _auth_method(metadata: ProviderMetadata, client_secret: str | None) -> str:
    if client_secret is None:
        return "none"
    for method in ("client_secret_basic", "client_secret_post"):
        if method in metadata.token_auth_methods:
            return method
    raise OidcError(
        "the provider accepts neither client_secret_basic nor client_secret_post at its "
        "token endpoint"
    )


async def exchange_code(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    config: OidcConfig,
    *,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> dict[str, Any]:
    """The token endpoint's answer for the code (with the PKCE verifier)."""
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
    )
    method = _auth_method(metadata, client_secret)
    # authlib's client authentication: Basic, in the body, or (a public client) the id alone.
    url, headers, content = ClientAuth(config.client_id, client_secret, method).prepare(
        "POST", metadata.token_endpoint, dict(_TOKEN_HEADERS), body
    )
    request = http.build_request("POST", url, content=content, headers=headers)
    response = await call(http, "token endpoint", request)
    answer = json_object(response, "token endpoint")
    if "error" in answer or response.status_code != 200:
        error = str(answer.get("error", "an error"))[:100]
        description = str(answer.get("error_description") or "")[:300]
        said = f" ({description})" if description else ""
        raise OidcError(f"the provider's token endpoint refused the code: {error}{said}")
    if not isinstance(answer.get("id_token"), str):
        raise OidcError("the provider's token endpoint returned no id_token")
    return answer


async def _key_set(http: httpx.AsyncClient, metadata: ProviderMetadata, *, fresh: bool) -> KeySet:
    cached = None if fresh else _key_sets.get(metadata.jwks_uri)
    if cached is not None:
        return cached
    document = await get_json(http, metadata.jwks_uri, "key set (jwks_uri)")
    try:
        key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise OidcError(f"the provider's key set does not load ({error})") from None
    _key_sets.put(metadata.jwks_uri, key_set)
    return key_set


def _claim_refusal(error: ClaimError) -> OidcError:
    if isinstance(error, ExpiredTokenError):
        return OidcError("the id_token has expired")
    if isinstance(error, MissingClaimError):
        return OidcError(f"the id_token has no {error.claim} claim")
    meaning = {
        "iss": "is not the provider's issuer",
        "aud": "does not name this client",
        "azp": "does not name this client",
        "nonce": "is not the nonce this sign-in sent",
        "iat": "is in the future",
        "nbf": "is in the future",
        "at_hash": "does not match the access token",
    }.get(error.claim, "is not valid")
    return OidcError(f"the id_token's {error.claim} {meaning}")


class _UnknownKey(Exception):
    """The token names (or needs) a key the key set does not hold."""


def _decode(id_token: str, key_set: KeySet, metadata: ProviderMetadata) -> jwt.Token:
    try:
        return jwt.decode(id_token, key_set, algorithms=list(metadata.signing_algs))
    except (InvalidKeyIdError, MissingKeyError):
        raise _UnknownKey from None
    except BadSignatureError:
        raise OidcError("the id_token's signature does not verify") from None
    except JoseError as error:
        raise OidcError(f"the id_token is not a valid signed JWT ({error.error})") from None


async def verify_id_token(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    config: OidcConfig,
    *,
    id_token: str,
    nonce: str,
    access_token: str | None,
) -> dict[str, Any]:
    """The id_token's claims once its signature (the provider's keys), issuer, audience (and
    azp), times and nonce are checked."""
    try:
        decoded = _decode(id_token, await _key_set(http, metadata, fresh=False), metadata)
    except _UnknownKey:
        # The provider may have rotated its keys since they were fetched: fetch them once more.
        try:
            decoded = _decode(id_token, await _key_set(http, metadata, fresh=True), metadata)
        except _UnknownKey:
            raise OidcError(
                "the id_token is signed with a key the provider does not publish"
            ) from None
    params: dict[str, Any] = {"nonce": nonce, "client_id": config.client_id}
    if access_token:
        params["access_token"] = access_token
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {
            "iss": {"essential": True, "value": metadata.issuer},
            "aud": {"essential": True, "values": [config.client_id]},
            "sub": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        },
        params,
    )
    try:
        claims.validate(leeway=_LEEWAY_SECONDS)
    except ClaimError as error:
        raise _claim_refusal(error) from None
    except JoseError as error:
        raise OidcError(f"the id_token is not valid ({error.error})") from None
    return dict(claims)


async def read_userinfo(
    http: httpx.AsyncClient, metadata: ProviderMetadata, *, access_token: str, subject: str
) -> dict[str, Any]:
    """The userinfo endpoint's claims (none if the provider has no such endpoint); its `sub`
    must be the id_token's."""
    if metadata.userinfo_endpoint is None:
        return {}
    request = http.build_request(
        "GET",
        metadata.userinfo_endpoint,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    response = await call(http, "userinfo endpoint", request)
    if response.status_code != 200:
        raise OidcError(f"the provider's userinfo endpoint answered HTTP {response.status_code}")
    info = json_object(response, "userinfo endpoint")
    if info.get("sub") != subject:
        raise OidcError("the provider's userinfo is about another subject than the id_token")
    return info


async def complete_sign_in(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    config: OidcConfig,
    *,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    nonce: str,
) -> OidcProfile:
    """From the callback's code to the person: exchange, id_token checks, userinfo, claims."""
    tokens = await exchange_code(
        http,
        metadata,
        config,
        client_secret=client_secret,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
    )
    access_token = tokens.get("access_token")
    access_token = access_token if isinstance(access_token, str) else None
    token_claims = await verify_id_token(
        http, metadata, config, id_token=tokens["id_token"], nonce=nonce, access_token=access_token
    )
    info = (
        await read_userinfo(http, metadata, access_token=access_token, subject=token_claims["sub"])
        if access_token
        else {}
    )
    return profile_from_claims(merged_claims(token_claims, info), config)
