"""The SAML protocol layer against real signed responses from pysaml2's own IdP: a valid one
accepted, and every known attack refused (tampering, unsigned, SHA-1, audience, expiry,
unsolicited, XXE, billion laughs, the eight signature wrapping permutations, wrong recipient)."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from blocks.infra.identity.provider_config import SamlConfig
from blocks.infra.identity.saml import (
    CLOCK_SKEW,
    ServiceProvider,
    authn_request,
    peek_in_response_to,
    read_response,
    sp_metadata_xml,
)
from blocks.infra.identity.saml_xml import (
    SamlConfigError,
    SamlRefused,
    parse_idp_metadata,
)
from tests.saml_idp import (
    IDP_ENTITY_ID,
    IDP_SSO_URL,
    MFA_CONTEXT,
    LocalIdp,
    dump,
    find,
    forged_copy,
    insert_after_issuer,
    load,
    make_key_pair,
    signature_of,
    the_assertion,
)

SP = ServiceProvider(
    "https://blocks.test/v1/sso/acme/0b5e/saml/metadata",
    "https://blocks.test/v1/sso/acme/0b5e/saml/acs",
)
OTHER_SP = ServiceProvider("https://other.test/saml/metadata", "https://other.test/saml/acs")


@dataclass
class Setup:
    idp: LocalIdp
    config: SamlConfig

    def request(self) -> tuple[str, str]:
        redirect = authn_request(self.config, SP)
        return redirect.request_id, redirect.url

    def answered(self, **kwargs: object) -> tuple[str, str]:
        """(request id, the IdP's signed answer to it)."""
        request_id, url = self.request()
        answer = self.idp.answer(url, acs_url=SP.acs_url, sp_entity_id=SP.entity_id, **kwargs)  # type: ignore[arg-type]
        return request_id, answer

    def read(self, response: str, request_id: str | None, **config: object) -> object:
        settings = self.config.model_copy(update=config) if config else self.config
        return read_response(settings, SP, response, expected_request_id=request_id)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    key_file, cert_file = make_key_pair(Path(tmp_path_factory.mktemp("saml-idp")))
    idp = LocalIdp(key_file, cert_file, (sp_metadata_xml(SP), sp_metadata_xml(OTHER_SP)))
    return Setup(idp, SamlConfig(idp_metadata_xml=idp.metadata_xml()))


def refused(call: Callable[[], object], *words: str) -> str:
    with pytest.raises(SamlRefused) as caught:
        call()
    for word in words:
        assert word in caught.value.reason, caught.value.reason
    return caught.value.reason


# --- accepted ----------------------------------------------------------------------------


def test_a_valid_response_is_accepted_with_its_identity(setup: Setup) -> None:
    request_id, response = setup.answered(context=MFA_CONTEXT, groups=("eng", "ops"))
    identity = setup.read(response, request_id)
    assert identity.subject == "user-0001"  # type: ignore[attr-defined]
    assert identity.email == "ada@example.test"  # type: ignore[attr-defined]
    assert identity.display_name == "Ada Lovelace"  # type: ignore[attr-defined]
    assert identity.groups == ("eng", "ops")  # type: ignore[attr-defined]
    assert identity.mfa is True  # type: ignore[attr-defined]
    assert identity.in_response_to == request_id  # type: ignore[attr-defined]
    assert identity.assertion_id.startswith("id-")  # type: ignore[attr-defined]
    assert peek_in_response_to(response) == request_id


def test_password_only_context_is_not_mfa(setup: Setup) -> None:
    request_id, response = setup.answered()
    assert setup.read(response, request_id).mfa is False  # type: ignore[attr-defined]


def test_an_assertion_only_signature_is_enough(setup: Setup) -> None:
    request_id, response = setup.answered(sign_response=False)
    assert setup.read(response, request_id).subject == "user-0001"  # type: ignore[attr-defined]


def test_the_idp_given_as_three_fields_works_too(setup: Setup) -> None:
    fields = SamlConfig(
        idp_entity_id=IDP_ENTITY_ID,
        idp_sso_url=IDP_SSO_URL,
        idp_certificate=setup.idp.certificate_pem,
    )
    redirect = authn_request(fields, SP)
    assert redirect.url.startswith(IDP_SSO_URL + "?SAMLRequest=")
    assert "RelayState" not in redirect.url
    response = setup.idp.answer(redirect.url, acs_url=SP.acs_url, sp_entity_id=SP.entity_id)
    identity = read_response(fields, SP, response, expected_request_id=redirect.request_id)
    assert identity.subject == "user-0001"
    assert authn_request(fields, SP).request_id != redirect.request_id


# --- refused -----------------------------------------------------------------------------


def test_an_attribute_tampered_after_signing_is_refused(setup: Setup) -> None:
    request_id, response = setup.answered(sign_response=False)
    root = load(response)
    for value in the_assertion(root).iter("{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue"):
        if value.text == "engineering":
            value.text = "owners"
    refused(lambda: setup.read(dump(root), request_id), "signature does not verify")


def test_an_unsigned_assertion_is_refused_even_in_a_signed_response(setup: Setup) -> None:
    request_id, response = setup.answered(sign_assertion=False, sign_response=True)
    refused(lambda: setup.read(response, request_id), "not signed")


def test_sha1_signatures_are_refused(setup: Setup) -> None:
    request_id, response = setup.answered(sha1=True)
    assert b"rsa-sha1" in base64.b64decode(response)
    refused(lambda: setup.read(response, request_id), "rsa-sha1", "refused")


def test_an_assertion_for_another_audience_is_refused(setup: Setup) -> None:
    request_id, response = setup.answered(audience=OTHER_SP.entity_id)
    refused(lambda: setup.read(response, request_id), "audience")


def test_an_expired_assertion_is_refused(setup: Setup) -> None:
    request_id, response = setup.answered(lifetime={"minutes": -5})
    assert CLOCK_SKEW.total_seconds() < 5 * 60
    refused(lambda: setup.read(response, request_id), "expired")


def test_a_response_for_another_recipient_and_destination_is_refused(setup: Setup) -> None:
    request_id, response = setup.answered(destination=OTHER_SP.acs_url)
    refused(lambda: setup.read(response, request_id), "ACS")


def test_a_wrong_recipient_is_refused_even_under_our_destination(setup: Setup) -> None:
    # The response is not signed, so its Destination can be set to ours: the signed
    # assertion's SubjectConfirmationData Recipient still names the other SP.
    request_id, response = setup.answered(destination=OTHER_SP.acs_url, sign_response=False)
    root = load(response)
    root.set("Destination", SP.acs_url)
    refused(lambda: setup.read(dump(root), request_id), "Recipient")


def test_a_signature_moved_off_the_element_it_signs_is_refused(setup: Setup) -> None:
    request_id, response = setup.answered(sign_response=False)
    root = load(response)
    assertion = the_assertion(root)
    signature = signature_of(assertion)
    assertion.remove(signature)
    insert_after_issuer(root, signature)  # now on the Response, still naming the assertion
    refused(lambda: setup.read(dump(root), request_id), "does not reference")


def test_a_response_to_another_request_is_refused(setup: Setup) -> None:
    _, response = setup.answered()
    other_request, _ = setup.request()
    refused(lambda: setup.read(response, other_request), "another request")


def test_an_unsolicited_response_is_refused_unless_idp_initiated_is_on(setup: Setup) -> None:
    response = setup.idp.answer(None, acs_url=SP.acs_url, sp_entity_id=SP.entity_id)
    assert peek_in_response_to(response) is None
    refused(lambda: setup.read(response, None), "IdP-initiated")
    identity = setup.read(response, None, allow_idp_initiated=True)
    assert identity.subject == "user-0001"  # type: ignore[attr-defined]
    assert identity.in_response_to is None  # type: ignore[attr-defined]


def test_a_solicited_response_cannot_pass_as_unsolicited(setup: Setup) -> None:
    _, response = setup.answered()
    refused(lambda: setup.read(response, None, allow_idp_initiated=True), "another request")


XXE = """<?xml version="1.0"?>
<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_1" Version="2.0"
 IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"
 >&xxe;</saml:Issuer></samlp:Response>"""

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n'
        for n in range(1, 10)
    )
    + ']>\n<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&lol9;'
    "</samlp:Response>"
)


def test_an_external_entity_is_refused(setup: Setup) -> None:
    response = base64.b64encode(XXE.encode()).decode()
    refused(lambda: setup.read(response, None, allow_idp_initiated=True), "DOCTYPE")
    refused(lambda: peek_in_response_to(response), "DOCTYPE")


def test_billion_laughs_is_refused_within_four_seconds(setup: Setup) -> None:
    assert "&lol8;&lol8;" in BILLION_LAUGHS  # ten to the ninth "lol" if expanded
    response = base64.b64encode(BILLION_LAUGHS.encode()).decode()
    started = time.monotonic()
    refused(lambda: setup.read(response, "_any"), "DOCTYPE")
    assert time.monotonic() - started < 4


def test_idp_metadata_with_a_doctype_is_refused(setup: Setup) -> None:
    metadata = setup.idp.metadata_xml()
    hostile = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + metadata
    with pytest.raises(SamlConfigError, match="DOCTYPE"):
        parse_idp_metadata(hostile)
    parsed = parse_idp_metadata(metadata)
    assert (parsed.entity_id, parsed.sso_url, len(parsed.certificates)) == (
        IDP_ENTITY_ID,
        IDP_SSO_URL,
        1,
    )


def test_idp_metadata_without_a_signing_key_is_refused(setup: Setup) -> None:
    metadata = setup.idp.metadata_xml()
    start, end = metadata.index("<md:KeyDescriptor"), metadata.index("</md:KeyDescriptor>")
    with pytest.raises(SamlConfigError, match="no signing certificate"):
        parse_idp_metadata(metadata[:start] + metadata[end + len("</md:KeyDescriptor>") :])


def test_our_metadata_advertises_no_sha1_and_wants_signed_assertions() -> None:
    metadata = sp_metadata_xml(SP)
    assert "sha1" not in metadata
    assert "md5" not in metadata
    assert 'WantAssertionsSigned="true"' in metadata
    assert SP.acs_url in metadata
    assert SP.entity_id in metadata


# --- XML signature wrapping: the eight permutations of "On Breaking SAML" (USENIX 2012), as
# Elasticsearch's SamlAuthenticatorTests lays them out. Each starts from a response that is
# accepted as it is (and after the same parse/serialize round trip), then forges a subject.

SAMLP_EXTENSIONS = "{urn:oasis:names:tc:SAML:2.0:protocol}Extensions"
DS_OBJECT = "{http://www.w3.org/2000/09/xmldsig#}Object"


def _legitimate(setup: Setup, *, sign_response: bool) -> tuple[str, ET.Element]:
    request_id, response = setup.answered(sign_response=sign_response)
    root = load(response)
    # The round trip itself keeps every signature valid: what is refused below is the wrapping.
    assert setup.read(dump(root), request_id).subject == "user-0001"  # type: ignore[attr-defined]
    return request_id, root


def _wrapped_response(root: ET.Element, *, inside_signature: bool) -> None:
    """XSW1/2: the signed response copied under a forged one that carries a forged assertion."""
    clone = copy.deepcopy(root)
    clone.remove(signature_of(clone))
    signature = signature_of(root)
    if inside_signature:
        signature.append(clone)
    else:
        root.insert(list(root).index(signature), clone)
    root.set("ID", "_forged_response")
    assertion = the_assertion(root)
    root.insert(list(root).index(assertion), forged_copy(assertion))
    root.remove(assertion)


def test_xsw1_signed_response_moved_inside_its_signature(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=True)
    _wrapped_response(root, inside_signature=True)
    refused(lambda: setup.read(dump(root), request_id))


def test_xsw2_signed_response_moved_before_its_signature(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=True)
    _wrapped_response(root, inside_signature=False)
    refused(lambda: setup.read(dump(root), request_id))


def test_xsw3_forged_assertion_before_the_signed_one(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    root.insert(list(root).index(assertion), forged_copy(assertion))
    refused(lambda: setup.read(dump(root), request_id), "exactly one assertion")


def test_xsw4_signed_assertion_wrapped_inside_the_forged_one(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    forged = forged_copy(assertion)
    root.remove(assertion)
    forged.append(assertion)
    root.append(forged)
    refused(lambda: setup.read(dump(root), request_id), "exactly one assertion")


def test_xsw5_signature_moved_into_the_forged_assertion(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    signature = signature_of(assertion)
    assertion.remove(signature)
    forged = forged_copy_without_signature(assertion)
    insert_after_issuer(forged, signature)
    root.insert(list(root).index(assertion), forged)
    refused(lambda: setup.read(dump(root), request_id))


def forged_copy_without_signature(assertion: ET.Element) -> ET.Element:
    forged = copy.deepcopy(assertion)
    forged.set("ID", "_forged_assertion")
    find(forged, "saml:Subject/saml:NameID").text = "admin"
    return forged


def test_xsw6_signed_assertion_inside_the_signature_of_the_forged_one(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    forged = forged_copy(assertion)
    signature = signature_of(assertion)
    assertion.remove(signature)
    insert_after_issuer(forged, signature)
    root.remove(assertion)
    signature.append(assertion)
    root.append(forged)
    refused(lambda: setup.read(dump(root), request_id))


def test_xsw7_forged_assertion_in_extensions(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    extensions = ET.Element(SAMLP_EXTENSIONS)
    extensions.append(forged_copy(assertion))
    root.insert(list(root).index(assertion), extensions)
    refused(lambda: setup.read(dump(root), request_id), "exactly one assertion")


def test_xsw8_signed_assertion_in_a_signature_object_of_the_forged_one(setup: Setup) -> None:
    request_id, root = _legitimate(setup, sign_response=False)
    assertion = the_assertion(root)
    forged = forged_copy(assertion)
    signature = signature_of(assertion)
    assertion.remove(signature)
    insert_after_issuer(forged, signature)
    root.remove(assertion)
    holder = ET.SubElement(signature, DS_OBJECT)
    holder.append(assertion)
    root.append(forged)
    refused(lambda: setup.read(dump(root), request_id))
