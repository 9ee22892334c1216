"""The save-time checks of an identity provider's `config`: its shape, the URLs Blocks will call,
and the SAML IdP's metadata or certificate, each refusal a 422 naming the field and why.

OIDC: the issuer passes the SSRF guard (`config.issuer`). SAML: exactly one IdP source, either
`idp_metadata_xml`, or `idp_metadata_url` (fetched once through the guarded client; its XML is
stored in `idp_metadata_xml`), or `idp_entity_id` + `idp_sso_url` + `idp_certificate` (PEM).
The IdP is then read as sign-in reads it (infra.identity.saml.idp_metadata: defusedxml without
a DTD, one IdP, an HTTP-Redirect SSO URL, a signing certificate), so what saves is what works.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from pydantic import ValidationError

from blocks.api.errors import Problem, invalid_field, validation_problem
from blocks.infra.identity.provider_config import OidcConfig, SamlConfig
from blocks.infra.identity.saml import idp_metadata
from blocks.infra.identity.saml_xml import SamlConfigError
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
    guarded_client,
    refuse_redirect,
)
from blocks.models.identity.sso.providers import Protocol

METADATA_MAX_BYTES = 500_000
_FETCH_SECONDS = 10.0
_SOURCES = ("idp_metadata_xml", "idp_metadata_url")
_MANUAL = ("idp_entity_id", "idp_sso_url", "idp_certificate")
SAML_SOURCE_KEYS = (*_SOURCES, *_MANUAL)
_ONE_SOURCE = (
    "give exactly one IdP source: idp_metadata_xml, idp_metadata_url, or idp_entity_id + "
    "idp_sso_url + idp_certificate"
)


def _config_problem(error: ValidationError) -> Problem:
    """A pydantic refusal of `config`, its fields named under `config.`."""
    return validation_problem(
        [{**e, "loc": ("config", *e.get("loc", ()))} for e in error.errors(include_input=False)]
    )


def parse_config(protocol: Protocol, given: dict[str, Any]) -> OidcConfig | SamlConfig:
    """The config's shape (422 naming `config.<field>` and why)."""
    model = OidcConfig if protocol is Protocol.OIDC else SamlConfig
    try:
        return model.model_validate(given)
    except ValidationError as error:
        raise _config_problem(error) from None


def _manual_field(reason: str) -> str:
    """Which of the three idp_* fields a refusal of them is about."""
    if "certificate" in reason:
        return "config.idp_certificate"
    if "URL" in reason:
        return "config.idp_sso_url"
    return "config.idp_entity_id"


async def _checked_outbound(field: str, url: str, policy: OutboundPolicy) -> None:
    try:
        await check_outbound_url(url, policy)
    except OutboundURLRefused as refused:
        raise invalid_field(field, refused.reason) from None


async def fetch_metadata(url: str, policy: OutboundPolicy) -> str:
    """The IdP metadata at `url`, fetched once through the guarded client (422 if it cannot be)."""
    field = "config.idp_metadata_url"
    await _checked_outbound(field, url, policy)
    body = bytearray()
    try:
        async with (
            guarded_client(policy, timeout=_FETCH_SECONDS) as client,
            client.stream("GET", url, headers={"Accept": "application/xml, text/xml"}) as answer,
        ):
            refuse_redirect(answer)
            if answer.status_code != 200:
                raise invalid_field(field, f"answered HTTP {answer.status_code}, not the metadata")
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > METADATA_MAX_BYTES:
                    raise invalid_field(field, f"answered more than {METADATA_MAX_BYTES} bytes")
    except OutboundURLRefused as refused:
        raise invalid_field(field, refused.reason) from None
    except httpx.HTTPError as error:
        raise invalid_field(
            field, f"could not be fetched ({type(error).__name__}: {error or 'no answer'})"
        ) from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_field(field, "answered something that is not UTF-8 XML") from None


def _present(config: SamlConfig, key: str) -> bool:
    value = getattr(config, key)
    return value is not None and value.strip() != ""


async def checked_saml(config: SamlConfig, policy: OutboundPolicy) -> dict[str, Any]:
    """The SAML config to store: one source, its metadata fetched and parsed or its
    certificate read."""
    given = [key for key in SAML_SOURCE_KEYS if _present(config, key)]
    manual = [key for key in _MANUAL if key in given]
    if len([k for k in _SOURCES if k in given]) + (1 if manual else 0) != 1:
        raise invalid_field("config", _ONE_SOURCE)
    if manual and len(manual) != len(_MANUAL):
        missing = next(key for key in _MANUAL if key not in manual)
        raise invalid_field(f"config.{missing}", "is required with " + " and ".join(manual))
    stored = config.model_dump(mode="json")
    field = "config.idp_metadata_xml"
    if config.idp_metadata_url is not None:
        field = "config.idp_metadata_url"
        stored["idp_metadata_xml"] = await fetch_metadata(config.idp_metadata_url, policy)
    try:
        # The sign-in's own reading of the IdP (saml.idp_metadata): what saves is what works.
        idp_metadata(SamlConfig.model_validate(stored))
    except SamlConfigError as error:
        raise invalid_field(
            _manual_field(error.reason) if manual else field, error.reason
        ) from None
    return stored


async def checked_config(
    protocol: Protocol, given: dict[str, Any], policy: OutboundPolicy
) -> dict[str, Any]:
    """The config as it will be stored, every save-time check passed."""
    config = parse_config(protocol, given)
    if isinstance(config, OidcConfig):
        await _checked_outbound("config.issuer", config.issuer, policy)
        return config.model_dump(mode="json")
    return await checked_saml(config, policy)


def shown_config(stored: dict[str, Any]) -> dict[str, Any]:
    """The config as the admin gave it: metadata fetched from a URL is the server's, not shown."""
    if stored.get("idp_metadata_url"):
        return {k: v for k, v in stored.items() if k != "idp_metadata_xml"}
    return dict(stored)


def audited_config(stored: dict[str, Any]) -> dict[str, Any]:
    """The config as an audit event says it: metadata by its SHA-256, not its whole text."""
    shown = {k: v for k, v in stored.items() if k != "idp_metadata_xml"}
    xml = stored.get("idp_metadata_xml")
    if xml:
        shown["idp_metadata_sha256"] = hashlib.sha256(xml.encode()).hexdigest()
    return shown


def merged_config(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A PATCH's config over the stored one, key by key; naming a key of one SAML IdP source
    (the XML, the URL, or the three idp_* fields) drops the other sources: there is one."""
    base = shown_config(stored)
    groups = [("idp_metadata_xml",), ("idp_metadata_url",), _MANUAL]
    named = [group for group in groups if any(key in patch for key in group)]
    if named:
        dropped = {key for group in groups if group not in named for key in group}
        base = {k: v for k, v in base.items() if k not in dropped}
    return {**base, **patch}
