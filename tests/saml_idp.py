"""A SAML identity provider for tests: pysaml2's own `saml2.server.Server`, with a key and
certificate made here, answering our AuthnRequests with real signed responses (RSA-SHA256 unless
a test asks for SHA-1), and the XML surgery the attack tests need."""

from __future__ import annotations

import base64
import copy
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from defusedxml import ElementTree as defused
from saml2 import BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

IDP_ENTITY_ID = "https://idp.example.test/saml/metadata"
IDP_SSO_URL = "https://idp.example.test/saml/sso"
MFA_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"
PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}


def make_key_pair(directory: Path, name: str = "idp") -> tuple[Path, Path]:
    """A 2048-bit RSA key and a self-signed certificate for it, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.example.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


@dataclass
class LocalIdp:
    """pysaml2's IdP, trusting one SP (by its published metadata)."""

    key_file: Path
    cert_file: Path
    sp_metadata: tuple[str, ...]

    def server(self, *, sha1: bool = False, lifetime: dict[str, int] | None = None) -> Server:
        config = IdPConfig()
        config.load(
            {
                "entityid": IDP_ENTITY_ID,
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [(IDP_SSO_URL, BINDING_HTTP_REDIRECT)]
                        },
                        "policy": {
                            "default": {
                                "lifetime": lifetime or {"minutes": 5},
                                "attribute_restrictions": None,
                            }
                        },
                        "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    }
                },
                "key_file": str(self.key_file),
                "cert_file": str(self.cert_file),
                "metadata": {"inline": list(self.sp_metadata)},
                "signing_algorithm": SIG_RSA_SHA1 if sha1 else SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA1 if sha1 else DIGEST_SHA256,
                "allow_unknown_attributes": True,
                "delete_tmpfiles": True,
            }
        )
        return Server(config=config)

    @property
    def certificate_pem(self) -> str:
        return self.cert_file.read_text()

    def metadata_xml(self) -> str:
        body = "".join(
            line for line in self.certificate_pem.splitlines() if not line.startswith("-----")
        )
        return (
            '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP_ENTITY_ID}">'
            '<md:IDPSSODescriptor WantAuthnRequestsSigned="false" '
            'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
            f"{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
            f'<md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}" Location="{IDP_SSO_URL}"/>'
            "</md:IDPSSODescriptor></md:EntityDescriptor>"
        )

    def answer(
        self,
        redirect_url: str | None,
        *,
        acs_url: str,
        sp_entity_id: str,
        subject: str = "user-0001",
        email: str = "ada@example.test",
        name: str = "Ada Lovelace",
        groups: tuple[str, ...] = ("engineering",),
        context: str = PASSWORD_CONTEXT,
        sign_response: bool = True,
        sign_assertion: bool = True,
        sha1: bool = False,
        lifetime: dict[str, int] | None = None,
        audience: str | None = None,
        destination: str | None = None,
    ) -> str:
        """The base64 SAMLResponse the IdP posts back: for the AuthnRequest in `redirect_url`
        (SP-initiated), or unsolicited (IdP-initiated) when `redirect_url` is None."""
        server = self.server(sha1=sha1, lifetime=lifetime)
        in_response_to = None
        if redirect_url is not None:
            query = parse_qs(urlsplit(redirect_url).query)
            request = server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)
            in_response_to = request.message.id
            assert request.message.assertion_consumer_service_url == acs_url
        identity = {"email": [email], "displayName": [name], "groups": list(groups)}
        extra: dict[str, Any] = {
            "sign_alg": SIG_RSA_SHA1 if sha1 else SIG_RSA_SHA256,
            "digest_alg": DIGEST_SHA1 if sha1 else DIGEST_SHA256,
        }
        response = server.create_authn_response(
            identity,
            in_response_to,
            destination or acs_url,
            audience or sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=subject),
            authn={"class_ref": context, "authn_auth": IDP_ENTITY_ID},
            sign_response=sign_response,
            sign_assertion=sign_assertion,
            **extra,
        )
        return base64.b64encode(str(response).encode()).decode()


# --- XML surgery for the attack tests -------------------------------------------------------


def _namespaces(xml: bytes) -> Iterator[tuple[str, str]]:
    for _, (prefix, uri) in defused.iterparse(io.BytesIO(xml), events=("start-ns",)):
        yield prefix, uri


def load(response_b64: str) -> ET.Element:
    """The response as an element tree, its namespace prefixes kept for serialization."""
    xml = base64.b64decode(response_b64)
    for prefix, uri in _namespaces(xml):
        # pysaml2 writes ns0, ns1, ... as ElementTree numbers them itself (in the same order of
        # first use), which it will not let anyone register; the others are kept by name.
        if not re.fullmatch(r"ns\d+", prefix):
            ET.register_namespace(prefix, uri)
    return defused.fromstring(xml)  # type: ignore[no-any-return]


def dump(root: ET.Element) -> str:
    return base64.b64encode(ET.tostring(root, encoding="utf-8")).decode()


def find(root: ET.Element, path: str) -> ET.Element:
    found = root.find(path, NS)
    assert found is not None, path
    return found


def the_assertion(root: ET.Element) -> ET.Element:
    return find(root, "saml:Assertion")


def signature_of(element: ET.Element) -> ET.Element:
    return find(element, "ds:Signature")


def forged_copy(assertion: ET.Element, subject: str = "admin") -> ET.Element:
    """A copy of the assertion with its own ID, no signature, and another subject."""
    forged = copy.deepcopy(assertion)
    forged.set("ID", f"_forged_{uuid.uuid4().hex}")
    forged.remove(signature_of(forged))
    find(forged, "saml:Subject/saml:NameID").text = subject
    return forged


def insert_after_issuer(parent: ET.Element, child: ET.Element) -> None:
    issuer = find(parent, "saml:Issuer")
    parent.insert(list(parent).index(issuer) + 1, child)
