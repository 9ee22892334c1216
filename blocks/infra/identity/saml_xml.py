"""SAML XML read safely (no DTD, no entity, ever), IdP metadata, and the shape a response must
have before any signature in it is trusted: one assertion, enveloped signatures only, no SHA-1.

Everything here runs before pysaml2 and xmlsec1 see a byte: the `xmlsec1` command line parses
with entity substitution on, so a DOCTYPE must never reach it. The shape checks refuse the XML
signature wrapping permutations ("On Breaking SAML", USENIX Security 2012) by construction:
exactly one Assertion anywhere, a direct child of the Response, and every Signature enveloped in
(and referencing) the Response or that Assertion.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

from cryptography import x509
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"

# SHA-1 (and anything weaker) is refused: only these may sign or digest what we accept.
ALLOWED_SIGNATURE_METHODS = frozenset(
    {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    }
)
ALLOWED_DIGEST_METHODS = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)


class SamlError(Exception):
    """A SAML refusal; `reason` is one sentence fit for the audit log and the problem detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SamlConfigError(SamlError):
    """The provider's SAML settings (metadata, certificate, URLs) are unusable or unsafe."""


class SamlRefused(SamlError):
    """A SAML response (or what claims to be one) is refused."""


def parse_xml(text: str | bytes, *, what: str, error: type[SamlError]) -> Element:
    """Parse with defusedxml and no DTD at all (so no entity, internal or external)."""
    try:
        return fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)  # type: ignore[no-any-return]
    except DefusedXmlException as refused:
        raise error(
            f"the {what} has a DOCTYPE or entity declaration, which is refused "
            f"({type(refused).__name__})"
        ) from None
    except ParseError as err:
        raise error(f"the {what} is not well-formed XML ({err})") from None


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


@dataclass(frozen=True)
class IdpMetadata:
    """What we trust of an IdP: its entity id, where to send the browser, its signing keys."""

    entity_id: str
    sso_url: str
    certificates: tuple[str, ...]  # base64 DER, no PEM armour, no whitespace


def _url(value: str | None, what: str) -> str:
    value = (value or "").strip()
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise SamlConfigError(f"the {what} must be an https:// URL, not {value[:200]!r}")
    return value


def certificate_der_b64(text: str) -> str:
    """A certificate given as PEM or bare base64, checked, as base64 DER; SamlConfigError if not."""
    body = "".join(
        line
        for line in text.strip().splitlines()
        if not line.startswith("-----")  # the PEM armour lines
    )
    body = "".join(body.split())
    try:
        der = base64.b64decode(body, validate=True)
        x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise SamlConfigError(
            "the IdP signing certificate is not a readable X.509 certificate"
        ) from None
    return base64.b64encode(der).decode()


def parse_idp_metadata(xml: str) -> IdpMetadata:
    """An IdP's metadata (an EntityDescriptor, or an EntitiesDescriptor holding one IdP)."""
    root = parse_xml(xml, what="IdP metadata", error=SamlConfigError)
    if root.tag == q(MD, "EntityDescriptor"):
        entities = [root]
    elif root.tag == q(MD, "EntitiesDescriptor"):
        entities = [
            entity
            for entity in root.iter(q(MD, "EntityDescriptor"))
            if entity.find(q(MD, "IDPSSODescriptor")) is not None
        ]
    else:
        raise SamlConfigError("the IdP metadata is not a SAML 2.0 EntityDescriptor")
    if len(entities) != 1:
        raise SamlConfigError(
            f"the IdP metadata must describe exactly one identity provider, not {len(entities)}"
        )
    entity = entities[0]
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise SamlConfigError("the IdP metadata has no entityID")
    idp = entity.find(q(MD, "IDPSSODescriptor"))
    if idp is None or SAMLP not in (idp.get("protocolSupportEnumeration") or "").split():
        raise SamlConfigError("the IdP metadata has no SAML 2.0 IDPSSODescriptor")
    locations = [
        service.get("Location")
        for service in idp.findall(q(MD, "SingleSignOnService"))
        if service.get("Binding") == BINDING_HTTP_REDIRECT
    ]
    if not locations:
        raise SamlConfigError("the IdP metadata has no SingleSignOnService for HTTP-Redirect")
    certificates = tuple(
        dict.fromkeys(
            certificate_der_b64(element.text or "")
            for descriptor in idp.findall(q(MD, "KeyDescriptor"))
            if descriptor.get("use") in (None, "signing")
            for element in descriptor.iterfind(
                f"{q(DS, 'KeyInfo')}/{q(DS, 'X509Data')}/{q(DS, 'X509Certificate')}"
            )
        )
    )
    if not certificates:
        raise SamlConfigError("the IdP metadata has no signing certificate")
    return IdpMetadata(entity_id, _url(locations[0], "IdP single sign-on URL"), certificates)


def idp_from_fields(entity_id: str, sso_url: str, certificate: str) -> IdpMetadata:
    """The IdP as an admin typed it: entity id, HTTP-Redirect SSO URL, signing certificate."""
    if not entity_id.strip():
        raise SamlConfigError("the IdP entity id is empty")
    return IdpMetadata(
        entity_id.strip(),
        _url(sso_url, "IdP single sign-on URL"),
        (certificate_der_b64(certificate),),
    )


def _parents(root: Element) -> dict[Element, Element]:
    return {child: parent for parent in root.iter() for child in parent}


def _check_signature(signature: Element, parent: Element) -> None:
    """An enveloped signature of `parent`: one Reference to its ID, strong algorithms, no Object."""
    signed_info = signature.find(q(DS, "SignedInfo"))
    if signed_info is None:
        raise SamlRefused("a signature has no SignedInfo")
    references = signed_info.findall(q(DS, "Reference"))
    parent_id = parent.get("ID")
    if len(references) != 1 or not parent_id or references[0].get("URI") != f"#{parent_id}":
        raise SamlRefused(
            "a signature does not reference exactly the element it is in (signature wrapping)"
        )
    if signature.find(q(DS, "Object")) is not None:
        raise SamlRefused("a signature carries a ds:Object (signature wrapping)")
    method = signed_info.find(q(DS, "SignatureMethod"))
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm not in ALLOWED_SIGNATURE_METHODS:
        raise SamlRefused(f"the signature algorithm {algorithm} is refused (SHA-256 or stronger)")
    for digest in signed_info.iter(q(DS, "DigestMethod")):
        if digest.get("Algorithm") not in ALLOWED_DIGEST_METHODS:
            raise SamlRefused(
                f"the digest algorithm {digest.get('Algorithm')} is refused (SHA-256 or stronger)"
            )


def _unique_ids(elements: Iterable[Element]) -> None:
    seen: set[str] = set()
    for element in elements:
        value = element.get("ID")
        if value is None:
            continue
        if value in seen:
            raise SamlRefused("two elements share one ID (signature wrapping)")
        seen.add(value)


def check_response_shape(root: Element) -> Element:
    """The one Assertion of a Response whose shape allows no wrapping; SamlRefused otherwise."""
    if root.tag != q(SAMLP, "Response"):
        raise SamlRefused("the document is not a SAML 2.0 Response")
    _unique_ids(root.iter())
    if next(root.iter(q(SAML, "EncryptedAssertion")), None) is not None:
        raise SamlRefused("encrypted assertions are not accepted (no SP encryption key is set)")
    assertions = list(root.iter(q(SAML, "Assertion")))
    if len(assertions) != 1:
        raise SamlRefused(
            f"the response must carry exactly one assertion, anywhere in it; it has "
            f"{len(assertions)}"
        )
    assertion = assertions[0]
    if assertion not in list(root):
        raise SamlRefused("the assertion is not a direct child of the response (wrapping)")
    parents = _parents(root)
    for signature in root.iter(q(DS, "Signature")):
        parent = parents[signature]
        if parent is not root and parent is not assertion:
            raise SamlRefused("a signature is outside the response and assertion (wrapping)")
        _check_signature(signature, parent)
    if assertion.find(q(DS, "Signature")) is None:
        raise SamlRefused("the assertion is not signed (signed assertions are required)")
    return assertion


def in_response_to(root: Element) -> str | None:
    """The request a response says it answers (the Response's, else the assertion's), unverified:
    enough to find the request to consume; the verified assertion must then agree."""
    value = root.get("InResponseTo")
    if value:
        return value
    for data in root.iter(q(SAML, "SubjectConfirmationData")):
        if data.get("InResponseTo"):
            return data.get("InResponseTo")
    return None
