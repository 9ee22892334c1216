"""SAML 2.0 single sign-on, service-provider side, with pysaml2 and xmlsec1: our metadata, the
AuthnRequest (HTTP-Redirect) and the checks of the Response (HTTP-POST) that a sign-in rests on.

pysaml2 verifies the signature (xmlsec1, keys from the IdP's metadata only), the status, the
conditions and the subject confirmation; around it, checks of our own close what it leaves open:
defusedxml with no DTD first (saml_xml), the response's shape (one assertion, enveloped
signatures: no wrapping), SHA-1 refused, the audience required, Recipient and Destination equal
to our ACS, InResponseTo equal to the request the caller consumed, a NotOnOrAfter required (the
replay cache keeps the assertion id until then). pysaml2 is synchronous and forks xmlsec1: the
async functions run it on a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT
from saml2.saml import Assertion as SamlAssertionElement
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from blocks.infra.identity.provider_config import SamlConfig
from blocks.infra.identity.saml_xml import (
    ALLOWED_DIGEST_METHODS,
    ALLOWED_SIGNATURE_METHODS,
    IdpMetadata,
    SamlConfigError,
    SamlRefused,
    check_response_shape,
    idp_from_fields,
    in_response_to,
    parse_idp_metadata,
    parse_xml,
)
from blocks.infra.lazy_modules import lazy_module

if TYPE_CHECKING:
    from saml2.config import SPConfig
    from saml2.response import AuthnResponse

# pysaml2's client, config, metadata and response modules load XML schemas (about 30 MB and two
# seconds): loaded by the first SAML sign-in, not by every API process at start.
saml2_client = lazy_module("saml2.client")
saml2_config = lazy_module("saml2.config")
saml2_metadata = lazy_module("saml2.metadata")
saml2_response = lazy_module("saml2.response")

# Clock skew allowed either side of NotBefore / NotOnOrAfter (pysaml2's accepted_time_diff too).
CLOCK_SKEW = timedelta(seconds=60)
# A posted SAMLResponse larger than this (base64) is refused before it is decoded.
MAX_RESPONSE_CHARS = 1_000_000
# The account key (external_identities.subject) holds this much.
MAX_SUBJECT_CHARS = 255
_SCM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"


@dataclass(frozen=True)
class ServiceProvider:
    """Us, for one provider: the entity id (our metadata URL) and the ACS URL."""

    entity_id: str
    acs_url: str


@dataclass(frozen=True)
class AuthnRedirect:
    request_id: str  # the AuthnRequest ID: the handle of the sign-in in flight
    url: str  # the IdP's SSO URL with SAMLRequest (and RelayState, if any)


@dataclass(frozen=True)
class SamlIdentity:
    """What a verified assertion proved (the API turns it into an ExternalProfile)."""

    subject: str  # the NameID
    name_id_format: str | None
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    authn_contexts: tuple[str, ...]
    mfa: bool
    assertion_id: str
    not_on_or_after: datetime  # keep the assertion id (replay cache) until then
    in_response_to: str | None
    issuer: str


def idp_metadata(config: SamlConfig) -> IdpMetadata:
    """The IdP as configured: its metadata XML, else the three idp_* fields."""
    if config.idp_metadata_xml:
        return parse_idp_metadata(config.idp_metadata_xml)
    if config.idp_entity_id and config.idp_sso_url and config.idp_certificate:
        return idp_from_fields(config.idp_entity_id, config.idp_sso_url, config.idp_certificate)
    raise SamlConfigError(
        "the provider has no IdP metadata: give the metadata XML (or URL), or the IdP entity "
        "id, SSO URL and signing certificate"
    )


def _idp_metadata_xml(idp: IdpMetadata) -> str:
    """The IdP metadata pysaml2 loads: only what was checked (entity id, SSO URL, keys)."""
    keys = "".join(
        '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{certificate}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        for certificate in idp.certificates
    )
    return (
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID={quoteattr(idp.entity_id)}>'
        '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{keys}<md:SingleSignOnService "
        f"Binding={quoteattr(BINDING_HTTP_REDIRECT)} Location={quoteattr(idp.sso_url)}/>"
        "</md:IDPSSODescriptor></md:EntityDescriptor>"
    )


def _xmlsec_binary() -> str:
    found = shutil.which("xmlsec1") or shutil.which("xmlsec1", path="/usr/bin:/usr/local/bin")
    if found is None:
        raise SamlConfigError("xmlsec1 is not installed on this server (apt-get install xmlsec1)")
    return found


def sp_config(
    sp: ServiceProvider, idp: IdpMetadata | None = None, *, allow_unsolicited: bool = False
) -> SPConfig:
    """pysaml2's SP configuration for one provider: signed assertions required, keys from the
    IdP's metadata only, the AuthnRequest unsigned (we hold no SP key; see the docs)."""
    settings: dict[str, Any] = {
        "entityid": sp.entity_id,
        "xmlsec_binary": _xmlsec_binary(),
        "service": {
            "sp": {
                "endpoints": {"assertion_consumer_service": [(sp.acs_url, BINDING_HTTP_POST)]},
                "want_assertions_signed": True,
                "want_response_signed": False,
                "authn_requests_signed": False,
                "allow_unsolicited": allow_unsolicited,
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "name_id_policy_format": NAMEID_FORMAT_PERSISTENT,
                "name_id_format_allow_create": True,
            }
        },
        "only_use_keys_in_metadata": True,
        "accepted_time_diff": int(CLOCK_SKEW.total_seconds()),
        "allow_unknown_attributes": True,
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "delete_tmpfiles": True,
    }
    if idp is not None:
        settings["metadata"] = {"inline": [_idp_metadata_xml(idp)]}
    config = saml2_config.SPConfig()
    config.load(settings)
    return config


def sp_metadata_xml(sp: ServiceProvider) -> str:
    """Our published SP metadata (unsigned; no key: we neither sign requests nor decrypt)."""
    descriptor = saml2_metadata.entity_descriptor(sp_config(sp))
    # pysaml2 advertises every algorithm xmlsec1 knows, SHA-1 and MD5 among them: only ours.
    allowed = ALLOWED_SIGNATURE_METHODS | ALLOWED_DIGEST_METHODS
    if descriptor.extensions is not None:
        descriptor.extensions.extension_elements = [
            element
            for element in descriptor.extensions.extension_elements
            if element.attributes.get("Algorithm") in allowed
        ]
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{descriptor}'


def new_request_id() -> str:
    """An AuthnRequest ID: 160 random bits, an NCName (starts with a letter or underscore)."""
    return f"_{secrets.token_hex(20)}"


def authn_request(config: SamlConfig, sp: ServiceProvider) -> AuthnRedirect:
    """The HTTP-Redirect AuthnRequest to the IdP (unsigned; no RelayState: the request id is the
    handle of the sign-in, and the browser-binding cookie ties it to this browser)."""
    idp = idp_metadata(config)
    client = saml2_client.Saml2Client(config=sp_config(sp, idp))
    request_id = new_request_id()
    _, request = client.create_authn_request(
        idp.sso_url,
        binding=BINDING_HTTP_POST,
        message_id=request_id,
        nameid_format=NAMEID_FORMAT_PERSISTENT,
    )
    info = client.apply_binding(
        BINDING_HTTP_REDIRECT, str(request), destination=idp.sso_url, relay_state=""
    )
    location = dict(info["headers"])["Location"]
    return AuthnRedirect(request_id, location)


async def authn_request_async(config: SamlConfig, sp: ServiceProvider) -> AuthnRedirect:
    return await asyncio.to_thread(authn_request, config, sp)


def _decode(saml_response: str) -> bytes:
    if len(saml_response) > MAX_RESPONSE_CHARS:
        raise SamlRefused("the SAMLResponse is too large")
    try:
        return base64.b64decode("".join(saml_response.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SamlRefused("the SAMLResponse is not base64") from None


def peek_in_response_to(saml_response: str) -> str | None:
    """The request id a response claims to answer, before anything is verified (so the caller
    can consume that request first); the same safe parse and shape checks as the full read."""
    root = parse_xml(_decode(saml_response), what="SAML response", error=SamlRefused)
    check_response_shape(root)
    return in_response_to(root)


def _pysaml2_reason(error: Exception) -> str:
    """A short sentence for what pysaml2 raised (its messages can quote the whole document)."""
    name = type(error).__name__
    text = str(error)
    if isinstance(error, saml2_response.StatusError):
        return f"the IdP answered with an error status ({name})"
    if "AudienceRestrictions" in text:
        return "the assertion is for another audience (AudienceRestriction)"
    if "Condition not OK" in text or name in ("ToEarly", "ResponseLifetimeExceed"):
        return "the assertion's conditions do not hold now (expired or not yet valid)"
    if name in ("SignatureError", "MissingKey", "CertificateError"):
        return "the signature does not verify with the IdP's signing certificate"
    if name == "UnsolicitedResponse":
        return "the response answers no request of ours (unsolicited)"
    return f"pysaml2 refused the response ({name}: {text[:160]})"


def _values(assertion: SamlAssertionElement, name: str) -> list[str]:
    found: list[str] = []
    for statement in assertion.attribute_statement or []:
        for attribute in statement.attribute or []:
            if name in (attribute.name, attribute.friendly_name):
                found.extend(
                    value.text.strip() for value in attribute.attribute_value or [] if value.text
                )
    return [value for value in found if value]


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        raise SamlRefused(f"the time {value[:40]!r} in the assertion is not readable") from None


def _check_assertion(
    assertion: SamlAssertionElement,
    response: AuthnResponse,
    sp: ServiceProvider,
    idp: IdpMetadata,
    expected_request_id: str | None,
    now: datetime,
) -> datetime:
    """Our own checks of what pysaml2 verified; returns the assertion's NotOnOrAfter."""
    if assertion.signature is None:
        raise SamlRefused("the assertion is not signed (signed assertions are required)")
    method = assertion.signature.signed_info.signature_method.algorithm
    if method not in ALLOWED_SIGNATURE_METHODS:
        raise SamlRefused(f"the signature algorithm {method} is refused (SHA-256 or stronger)")
    if assertion.issuer is None or (assertion.issuer.text or "").strip() != idp.entity_id:
        raise SamlRefused("the assertion was issued by another entity than the configured IdP")
    issuer = response.response.issuer
    if issuer is not None and (issuer.text or "").strip() != idp.entity_id:
        raise SamlRefused("the response was issued by another entity than the configured IdP")
    destination = response.response.destination
    if destination is not None and destination != sp.acs_url:
        raise SamlRefused("the response's Destination is not our ACS URL")
    conditions = assertion.conditions
    if conditions is None or not conditions.audience_restriction:
        raise SamlRefused("the assertion has no AudienceRestriction")
    for restriction in conditions.audience_restriction:
        audiences = {(audience.text or "").strip() for audience in restriction.audience or []}
        if sp.entity_id not in audiences:
            raise SamlRefused("the assertion is for another audience (AudienceRestriction)")
    limits = [_instant(conditions.not_on_or_after)]
    starts = [_instant(conditions.not_before)]
    confirmations = assertion.subject.subject_confirmation if assertion.subject else []
    if not confirmations:
        raise SamlRefused("the assertion has no subject confirmation")
    for confirmation in confirmations:
        data = confirmation.subject_confirmation_data
        if confirmation.method != _SCM_BEARER or data is None:
            raise SamlRefused("only bearer subject confirmations are accepted")
        if data.recipient != sp.acs_url:
            raise SamlRefused("the assertion's Recipient is not our ACS URL")
        if (data.in_response_to or None) != expected_request_id:
            raise SamlRefused("the assertion answers another request than the one consumed")
        limits.append(_instant(data.not_on_or_after))
        starts.append(_instant(data.not_before))
    if (response.response.in_response_to or None) not in (None, expected_request_id):
        raise SamlRefused("the response answers another request than the one consumed")
    ends = [limit for limit in limits if limit is not None]
    if not ends:
        raise SamlRefused("the assertion has no NotOnOrAfter (it could be replayed forever)")
    if min(ends) <= now - CLOCK_SKEW:
        raise SamlRefused("the assertion has expired (NotOnOrAfter)")
    if any(start is not None and start > now + CLOCK_SKEW for start in starts):
        raise SamlRefused("the assertion is not valid yet (NotBefore)")
    return min(ends)


def read_response(
    config: SamlConfig,
    sp: ServiceProvider,
    saml_response: str,
    *,
    expected_request_id: str | None,
) -> SamlIdentity:
    """Verify a posted SAMLResponse (HTTP-POST); SamlRefused with the reason if anything is off.

    `expected_request_id` is the request the caller consumed (SP-initiated); None means an
    unsolicited (IdP-initiated) response, accepted only if the provider allows it."""
    if expected_request_id is None and not config.allow_idp_initiated:
        raise SamlRefused("the response answers no request of ours and IdP-initiated is off")
    document = _decode(saml_response)
    root = parse_xml(document, what="SAML response", error=SamlRefused)
    check_response_shape(root)
    if in_response_to(root) != expected_request_id:
        raise SamlRefused("the response answers another request than the one consumed")
    idp = idp_metadata(config)
    client = saml2_client.Saml2Client(
        config=sp_config(sp, idp, allow_unsolicited=expected_request_id is None)
    )
    outstanding = {expected_request_id: "/"} if expected_request_id else {}
    try:
        response = client.parse_authn_request_response(
            saml_response, BINDING_HTTP_POST, outstanding=outstanding
        )
    except Exception as error:  # pysaml2 raises a dozen unrelated types: each is a refusal
        raise SamlRefused(_pysaml2_reason(error)) from None
    if response is None or response.assertion is None:
        raise SamlRefused("the response is not addressed to our ACS URL or carries no assertion")
    assertion: SamlAssertionElement = response.assertion
    now = datetime.now(UTC)
    not_on_or_after = _check_assertion(assertion, response, sp, idp, expected_request_id, now)
    name_id = assertion.subject.name_id
    subject = (name_id.text or "").strip() if name_id is not None else ""
    if not subject:
        raise SamlRefused("the assertion has no NameID")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise SamlRefused(f"the NameID is longer than {MAX_SUBJECT_CHARS} characters")
    if name_id.format == NAMEID_FORMAT_TRANSIENT:
        raise SamlRefused("the NameID is transient, so it cannot identify an account")
    emails = _values(assertion, config.email_attribute)
    email = emails[0] if emails else None
    if email is None and name_id.format == NAMEID_FORMAT_EMAILADDRESS:
        email = subject
    names = _values(assertion, config.name_attribute)
    contexts = tuple(
        statement.authn_context.authn_context_class_ref.text.strip()
        for statement in assertion.authn_statement or []
        if statement.authn_context is not None
        and statement.authn_context.authn_context_class_ref is not None
        and statement.authn_context.authn_context_class_ref.text
    )
    return SamlIdentity(
        subject=subject,
        name_id_format=name_id.format,
        email=email,
        display_name=names[0] if names else None,
        groups=tuple(dict.fromkeys(_values(assertion, config.groups_attribute))),
        authn_contexts=contexts,
        mfa=any(context in config.mfa_values for context in contexts),
        assertion_id=assertion.id,
        not_on_or_after=not_on_or_after,
        in_response_to=expected_request_id,
        issuer=idp.entity_id,
    )


async def read_response_async(
    config: SamlConfig, sp: ServiceProvider, saml_response: str, *, expected_request_id: str | None
) -> SamlIdentity:
    return await asyncio.to_thread(
        lambda: read_response(config, sp, saml_response, expected_request_id=expected_request_id)
    )
